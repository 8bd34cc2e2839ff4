"""Calls that may hang on a stuck qemu, run off the caller's thread with a deadline.

A libvirt call that needs qemu's monitor blocks for as long as qemu does not answer: a
SIGSTOPped (or live-locked) qemu keeps ``dom.suspend()``, ``dom.blockStats()``,
``qemuMonitorCommand`` or the first ``getAllDomainStats`` over it waiting *forever* (measured
here: still blocked after 300 s; it returns ~10 ms after SIGCONT). While that call holds the
domain's job, other job-taking calls on the domain fail after libvirt's own 30 s wait with
``VIR_ERR_OPERATION_TIMEOUT`` ("cannot acquire state change lock"; turned into
:class:`GuestCallTimeout` here), ``getAllDomainStats`` without ``NOWAIT`` waits those 30 s and
then returns the domain's partial record, with ``NOWAIT`` it returns the partial record at
once, and job-free calls (``dom.info()``, ``dom.state()``, ``dom.XMLDesc()``) still answer at
once. ``dom.destroy()`` works on a stopped qemu but takes ~11.5 s (SIGTERM, a 10 s grace,
SIGKILL), and the stuck call then fails with "Unable to read from monitor".

:class:`GuestCaller` runs each call on a thread of its own and resolves the returned future by
the deadline: with the call's result, its exception, or :class:`GuestCallTimeout`. A call
still running at its deadline is *abandoned*: counted, logged, and left to finish whenever qemu
answers. A caller has at most ``max_outstanding`` calls in flight per *kind* (default one), an
abandoned one included; another call of that kind meanwhile fails at once with
:class:`GuestCallBusy`, so a stuck VM costs a bounded number of threads and nobody queues
behind it. One caller per VM; a host-wide sampler uses one with a larger ``max_outstanding``
for the bulk stats call (each stuck domain can trap one bulk call; later ones, made with
``NOWAIT``, skip that domain).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt

from messaging.errors import GuestCallBusy, GuestCallTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Call:
    kind: str
    name: str
    started: float
    future: Future[Any]
    abandoned: bool = False
    timer: threading.Timer | None = None


class GuestCaller:
    """Runs the calls of one VM (``owner``), each on a thread, each with a deadline."""

    def __init__(self, owner: str, *, max_outstanding: int = 1) -> None:
        self.owner = owner
        self.max_outstanding = max_outstanding
        self._lock = threading.Lock()
        self._calls: list[_Call] = []
        self._abandoned_total = 0
        self._closed = False

    def submit(
        self, kind: str, fn: Callable[[], T], *, timeout: float, name: str | None = None
    ) -> Future[T]:
        """Start ``fn()`` now; its future resolves within ``timeout`` seconds.

        Raises :class:`GuestCallBusy` when ``max_outstanding`` calls of ``kind`` are in
        flight, ``RuntimeError`` after :meth:`close`. The future's callbacks run on the
        worker or deadline thread: they must only hand the result on (e.g. ``tell``).
        """
        label = name or str(getattr(fn, "__name__", "call"))
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the caller of {self.owner} is closed")
            pending = [c for c in self._calls if c.kind == kind]
            if len(pending) >= self.max_outstanding:
                oldest = pending[0]
                raise GuestCallBusy(
                    vmID=self.owner,
                    call=label,
                    kind=kind,
                    pending=oldest.name,
                    age=time.monotonic() - oldest.started,
                )
            call = _Call(kind, label, time.monotonic(), future)
            self._calls.append(call)
            call.timer = threading.Timer(timeout, self._expire, (call, timeout))
            call.timer.daemon = True
        future.set_running_or_notify_cancel()
        worker = threading.Thread(
            target=self._work,
            args=(call, fn),
            name=f"guestcall-{self.owner[:8]}-{kind}",
            daemon=True,
        )
        call.timer.start()
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
        """``submit`` and wait: the result, or the call's exception, or GuestCallTimeout."""
        return self.submit(kind, fn, timeout=timeout, name=name).result()

    def _work(self, call: _Call, fn: Callable[[], Any]) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except libvirt.libvirtError as e:
            error = e
            if e.get_error_code() == libvirt.VIR_ERR_OPERATION_TIMEOUT:
                # libvirt gave up waiting for the domain's job after its own 30 s.
                error = GuestCallTimeout(
                    vmID=self.owner, call=call.name, timeout=time.monotonic() - call.started
                )
                error.__cause__ = e
        except Exception as e:  # noqa: BLE001 - any error of the call belongs to its future
            error = e
        with self._lock:
            self._calls.remove(call)
            abandoned = call.abandoned
        if call.timer is not None:
            call.timer.cancel()
        if abandoned:
            log.warning(
                "abandoned %s call %s on VM %s returned after %.1f s",
                call.kind,
                call.name,
                self.owner,
                time.monotonic() - call.started,
            )
            return
        if error is not None:
            call.future.set_exception(error)
        else:
            call.future.set_result(result)

    def _expire(self, call: _Call, timeout: float) -> None:
        with self._lock:
            if call not in self._calls:
                return  # it returned meanwhile
            call.abandoned = True
            self._abandoned_total += 1
        log.warning(
            "%s call %s on VM %s did not return within %g s: abandoned",
            call.kind,
            call.name,
            self.owner,
            timeout,
        )
        call.future.set_exception(
            GuestCallTimeout(vmID=self.owner, call=call.name, timeout=timeout)
        )

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
                {
                    "kind": c.kind,
                    "call": c.name,
                    "age": round(now - c.started, 3),
                    "abandoned": c.abandoned,
                }
                for c in self._calls
            ]
            return {"inFlight": calls, "abandonedTotal": self._abandoned_total}

    def close(self) -> None:
        """Refuse new calls. Calls in flight finish (or stay stuck) on their own threads."""
        with self._lock:
            self._closed = True
