"""One timer thread for the whole daemon: delayed and periodic callbacks.

pykka has no timers. Rather than a thread per timer, the daemon owns one :class:`Clock` and
hands it to the actors that need ticks (monitors, samplers, supervisors' restart backoff).
Callbacks run on the clock's thread and must be tiny: typically ``actor_ref.tell(message)``.
An exception in a callback is logged and does not stop the clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

M = TypeVar("M")


@dataclass(eq=False)
class TimerHandle:
    """Returned by :meth:`Clock.call_later`/`call_every`; ``cancel()`` is idempotent."""

    callback: Callable[[], None]
    interval: float | None
    cancelled: bool = field(default=False)

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    def __init__(self, name: str = "clock") -> None:
        self._name = name
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(callback, None)
        self._schedule(time.monotonic() + max(0.0, delay), handle)
        return handle

    def call_every(
        self, interval: float, callback: Callable[[], None], *, first: float | None = None
    ) -> TimerHandle:
        """Run ``callback`` every ``interval`` seconds (first after ``first``, default interval).

        Ticks do not pile up: a late tick is followed by the next one an interval later.
        """
        if interval <= 0:
            raise ValueError("interval must be positive")
        handle = TimerHandle(callback, interval)
        self._schedule(time.monotonic() + (interval if first is None else first), handle)
        return handle

    def _schedule(self, when: float, handle: TimerHandle) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), handle))
            if self._heap[0][2] is handle:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap:
                        delay = self._heap[0][0] - time.monotonic()
                        if delay <= 0:
                            break
                        self._cond.wait(delay)
                    else:
                        self._cond.wait()
                if self._stopping:
                    return
                _, _, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            try:
                handle.callback()
            except Exception:
                log.exception("timer callback %r failed", handle.callback)
            if handle.interval is not None and not handle.cancelled:
                self._schedule(time.monotonic() + handle.interval, handle)


class NamedTimers(Generic[M]):
    """One actor's one-shot timers, by name: each tells the actor a message when it fires.

    Setting a name again replaces its timer. A timer's message can still arrive after the
    timer was cancelled or replaced (it was already on its way): :meth:`fired` tells the
    live one's message (the very object) from a stale one. Used only on the actor's thread.
    """

    def __init__(self, clock: Clock, tell: Callable[[M], None]) -> None:
        self._clock = clock
        self._tell = tell
        self._live: dict[str, tuple[TimerHandle, M]] = {}

    def set(self, name: str, delay: float, message: M) -> None:
        """Tell ``message`` after ``delay`` s, replacing the timer named ``name``."""
        self.cancel(name)
        tell = self._tell
        self._live[name] = (self._clock.call_later(delay, lambda: tell(message)), message)

    def cancel(self, name: str) -> None:
        live = self._live.pop(name, None)
        if live is not None:
            live[0].cancel()

    def cancel_all(self) -> None:
        for handle, _message in self._live.values():
            handle.cancel()
        self._live.clear()

    def fired(self, name: str, message: M) -> bool:
        """Whether ``message`` is the live timer ``name``'s (it then is no longer live)."""
        live = self._live.get(name)
        if live is None or live[1] is not message:
            return False
        del self._live[name]
        return True

    def __contains__(self, name: str) -> bool:
        return name in self._live

    def names(self) -> list[str]:
        return sorted(self._live)
