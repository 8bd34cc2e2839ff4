"""One blocking I/O at a time on a thread that can be abandoned, with a deadline.

A read of frozen or vanished storage never returns, so a lease never waits on one without a
deadline. :class:`TimedIO` owns one daemon worker thread (started once, then reused: the
renewal path creates no threads) and runs each call on it. The caller waits at most
``timeout`` seconds: then the call is abandoned and :class:`IoTimeout` raised; the worker
stays stuck in the kernel, and until it returns every new call fails at once with
:class:`IoBusy`. A hung storage costs exactly one thread however long it hangs; when it
comes back, the worker finishes the abandoned call, drops its result and serves again.

For every call the worker records, on the clock it was given, when the call was *issued*
(just before it runs the call) and when it *completed*; a call whose completion came more
than ``timeout`` after its issue counts as timed out even if the caller saw it finish.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from actors.storage.lease.errors import IoBusy, IoTimeout

T = TypeVar("T")
Clock = Callable[[], float]
"""Seconds on a monotonic clock (CLOCK_MONOTONIC by default); injectable for tests."""


@dataclass(frozen=True)
class Timed(Generic[T]):
    value: T
    issued: float
    """The clock just before the call ran (before the syscall was issued)."""
    completed: float
    """The clock just after it returned."""


class _Call:
    __slots__ = ("abandoned", "completed", "done", "error", "fn", "issued", "submitted", "value")

    def __init__(self, fn: Callable[[], object], submitted: float) -> None:
        self.fn = fn
        self.submitted = submitted
        self.done = threading.Event()
        self.issued = self.completed = 0.0
        self.value: object = None
        self.error: BaseException | None = None
        self.abandoned = False


class TimedIO:
    """Runs blocking calls one at a time on its own worker thread, each with a deadline."""

    def __init__(self, name: str, *, timeout: float, clock: Clock = time.monotonic) -> None:
        if timeout <= 0:
            raise ValueError("the I/O timeout must be positive")
        self.name = name
        self.timeout = timeout
        self.clock = clock
        self._cond = threading.Condition()
        self._call: _Call | None = None
        self._queued = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self.calls = 0
        self.timeouts = 0
        self.late = 0
        """Abandoned calls that returned afterwards (their results were dropped)."""

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closing

    @property
    def busy_since(self) -> float | None:
        """When the call still running was submitted (None when idle)."""
        with self._cond:
            return None if self._call is None else self._call.submitted

    def run(self, fn: Callable[[], T]) -> Timed[T]:
        """Run ``fn`` on the worker; its result, or IoTimeout, IoBusy, or what ``fn`` raised."""
        call = _Call(fn, self.clock())
        with self._cond:
            if self._closing:
                raise RuntimeError(f"{self.name} is closed")
            if self._call is not None:
                age = call.submitted - self._call.submitted
                raise IoBusy(what=self.name, pending=1, age=age)
            self._call = call
            self._queued = True
            self.calls += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=f"io-{self.name}",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        if not call.done.wait(self.timeout):
            with self._cond:
                if not call.done.is_set():
                    call.abandoned = True
                    self.timeouts += 1
                    raise IoTimeout(what=self.name, timeout=self.timeout)
        if call.completed - call.issued > self.timeout:
            self.timeouts += 1
            raise IoTimeout(what=self.name, timeout=self.timeout)
        if call.error is not None:
            raise call.error
        return Timed(call.value, call.issued, call.completed)  # type: ignore[arg-type]

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queued and not self._closing:
                    self._cond.wait()
                if not self._queued:
                    return
                self._queued = False
                call = self._call
            assert call is not None
            call.issued = self.clock()
            try:
                call.value = call.fn()
            except Exception as e:  # noqa: BLE001 - handed to the caller, which raises it
                call.error = e
            call.completed = self.clock()
            with self._cond:
                self._call = None
                call.done.set()
                if call.abandoned:
                    self.late += 1

    def close(self, timeout: float = 0.0) -> bool:
        """Let the worker exit (after a stuck call returns); wait up to ``timeout`` for it.
        True if no worker is left."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()
