"""Blocking calls that may hang, each on a thread of its own, each with a deadline.

:class:`BoundedCaller` runs each call on a new thread and resolves the returned future by the
call's deadline: with its result, its exception, or the caller's timeout error. Deadlines sit
on the daemon's one :class:`~actors.clock.Clock` (no timer thread per call). A call still
running at its deadline is *abandoned*: counted, logged, and left to finish whenever it
returns. At most ``max_outstanding`` calls of a *kind* are in flight at once, abandoned ones
included; another call of that kind meanwhile is refused at once with the caller's busy
error, so whatever hangs costs a bounded number of threads and nobody queues behind it.

An optional ``lease`` (a context manager factory, e.g.
:meth:`~actors.host.libvirthandle.LibvirtHandle.lease`) is held by the call's thread for
the whole call: a libvirt connection is never closed under a call that still uses it, not
even an abandoned one.

Subclasses say which errors a timeout and a refusal are (:meth:`timeout_error`,
:meth:`busy_error`) and may translate a call's own failures (:meth:`translate`). The VM
layer's :class:`~actors.vm.guestcall.GuestCaller` is one; the host verbs' libvirt calls use
another (:class:`LibvirtCaller` in :mod:`actors.host.api`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from actors.clock import Clock, TimerHandle

log = logging.getLogger(__name__)

T = TypeVar("T")
Lease = Callable[[], AbstractContextManager[object]]


@dataclass
class Call:
    kind: str
    name: str
    started: float
    timeout: float
    future: Future[Any]
    abandoned: bool = False
    timer: TimerHandle | None = None

    @property
    def deadline(self) -> float:
        return self.started + self.timeout


class BoundedCaller:
    """Runs the calls of ``owner``, each on a thread, each with a deadline on ``clock``."""

    thread_prefix = "call"

    def __init__(
        self,
        owner: str,
        *,
        clock: Clock,
        max_outstanding: int = 1,
        lease: Lease | None = None,
    ) -> None:
        self.owner = owner
        self.max_outstanding = max_outstanding
        self._clock = clock
        self._lease = lease
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._abandoned_total = 0
        self._closed = False

    # --- what subclasses decide -------------------------------------------------------------

    def timeout_error(self, call: Call) -> Exception:
        return TimeoutError(f"{call.name} of {self.owner} did not return within "
                            f"{call.timeout:g} s")

    def busy_error(self, call: str, kind: str, pending: Call) -> Exception:
        return RuntimeError(f"{call} of {self.owner} refused: {pending.name} ({kind}) has "
                            f"been running for {time.monotonic() - pending.started:.1f} s")

    def translate(self, call: Call, error: Exception) -> Exception:
        """The error the call's future gets for the call's own failure ``error``."""
        return error

    # --- calls -----------------------------------------------------------------------------

    def submit(
        self, kind: str, fn: Callable[[], T], *, timeout: float, name: str | None = None
    ) -> Future[T]:
        """Start ``fn()`` now; its future resolves within ``timeout`` seconds.

        Raises the busy error when ``max_outstanding`` calls of ``kind`` are in flight,
        ``RuntimeError`` after :meth:`close`. The future's callbacks run on the call's
        thread or the clock's: they must only hand the result on (e.g. ``tell``).
        """
        label = name or str(getattr(fn, "__name__", "call"))
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the caller of {self.owner} is closed")
            pending = [c for c in self._calls if c.kind == kind]
            if len(pending) >= self.max_outstanding:
                raise self.busy_error(label, kind, pending[0])
            call = Call(kind, label, time.monotonic(), max(0.0, timeout), future)
            self._calls.append(call)
        future.set_running_or_notify_cancel()
        worker = threading.Thread(
            target=self._work, args=(call, fn),
            name=f"{self.thread_prefix}-{self.owner[:8]}-{kind}", daemon=True,
        )
        call.timer = self._clock.call_later(call.timeout, lambda: self._expire(call))
        try:
            worker.start()
        except RuntimeError as e:  # no thread could be started
            with self._lock:
                self._calls.remove(call)
            call.timer.cancel()
            future.set_exception(e)
        return future

    def call(
        self, kind: str, fn: Callable[[], T], *, timeout: float, name: str | None = None
    ) -> T:
        """``submit`` and wait: the result, or the call's exception, or the timeout error."""
        return self.submit(kind, fn, timeout=timeout, name=name).result()

    def _work(self, call: Call, fn: Callable[[], Any]) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            with self._lease() if self._lease is not None else nullcontext():
                result = fn()
        except Exception as e:  # noqa: BLE001 - any error of the call belongs to its future
            error = self.translate(call, e)
            if error is not e:
                error.__cause__ = e
        with self._lock:
            self._calls.remove(call)
            abandoned = call.abandoned
        if call.timer is not None:
            call.timer.cancel()
        if abandoned:
            log.warning("abandoned %s call %s of %s returned after %.1f s", call.kind,
                        call.name, self.owner, time.monotonic() - call.started)
            return
        if error is not None:
            call.future.set_exception(error)
        else:
            call.future.set_result(result)

    def _expire(self, call: Call) -> None:
        """On the clock's thread, at the call's deadline."""
        with self._lock:
            if call not in self._calls:
                return  # it returned meanwhile
            call.abandoned = True
            self._abandoned_total += 1
        log.warning("%s call %s of %s did not return within %g s: abandoned", call.kind,
                    call.name, self.owner, call.timeout)
        call.future.set_exception(self.timeout_error(call))

    # --- state -----------------------------------------------------------------------------

    def busy(self, kind: str) -> bool:
        """Whether a call of ``kind`` is in flight (so the next one would be refused)."""
        with self._lock:
            pending = sum(1 for c in self._calls if c.kind == kind)
        return pending >= self.max_outstanding

    @property
    def stuck(self) -> int:
        """Abandoned calls that have not returned yet."""
        with self._lock:
            return sum(1 for c in self._calls if c.abandoned)

    @property
    def abandoned_total(self) -> int:
        """Calls abandoned since this caller was made."""
        with self._lock:
            return self._abandoned_total

    def describe(self) -> dict[str, Any]:
        """For ``Actors.inspect``: the calls in flight and the counters."""
        now = time.monotonic()
        with self._lock:
            calls = [
                {"kind": c.kind, "call": c.name, "age": round(now - c.started, 3),
                 "abandoned": c.abandoned}
                for c in self._calls
            ]
            return {"inFlight": calls, "abandonedTotal": self._abandoned_total}

    def close(self) -> None:
        """Refuse new calls. Calls in flight finish (or stay stuck) on their own threads."""
        with self._lock:
            self._closed = True
