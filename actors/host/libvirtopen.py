"""One attempt to connect to libvirtd, on a throwaway thread.

``libvirt.open`` (and the first RPCs on a new connection) hang for as long as libvirtd does
not answer, so the :class:`~actors.host.libvirtconn.LibvirtActor` never makes them itself:
an :class:`Attempt` opens the connection, registers the close callback and the domain event
callbacks, and reports a ready :class:`~actors.host.libvirthandle.Connection` (or the error)
through ``report``. The actor gives up on an attempt that takes too long
(:meth:`Attempt.abandon`); an abandoned attempt that succeeds later closes what it opened
itself, so no connection is leaked and none is used half set up.

The client-side keepalive of libvirt is deliberately left off: with it, libvirt 9.0's client
closes the connection on a keepalive timeout while other threads' calls are in flight on it,
never delivers the close callback, and crashes the process (SIGSEGV in the buck-holding
call's event loop) once libvirtd answers again (measured here, 4 of 4 runs, with two calls in
flight). The actor's own probe finds a libvirtd that stopped answering instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from actors.host.libvirthandle import Connection

log = logging.getLogger(__name__)

CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "libvirtd closed the connection",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the client",
}


@dataclass(frozen=True)
class Opened:
    """The outcome of attempt ``serial``: a ready connection, or why there is none."""

    serial: int
    entry: Connection | None
    error: str = ""


class Attempt:
    """Connect to ``uri`` as connection ``serial``, off the caller's thread."""

    def __init__(
        self,
        serial: int,
        uri: str,
        *,
        register: Callable[[libvirt.virConnect], list[int]],
        on_close: Callable[[int, str], None],
        report: Callable[[Opened], None],
    ) -> None:
        self.serial = serial
        self.uri = uri
        self._register = register
        self._on_close = on_close
        self._report = report
        self._lock = threading.Lock()
        self._abandoned = False
        self._reported = False
        self._thread = threading.Thread(target=self._run, name=f"libvirt-open-{serial}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def abandon(self) -> bool:
        """Give up on the attempt. False when it has reported already (its outcome is on
        its way to the actor, which then owns the connection)."""
        with self._lock:
            if self._reported:
                return False
            self._abandoned = True
            return True

    def _run(self) -> None:
        try:
            entry = self._open()
            outcome = Opened(self.serial, entry)
        except libvirt.libvirtError as e:
            entry, outcome = None, Opened(self.serial, None, str(e))
        with self._lock:
            deliver = not self._abandoned
            self._reported = deliver
        if deliver:
            self._report(outcome)
        elif entry is not None:
            log.info("connection %d to %s opened only after the agent gave up on it: "
                     "closing it", self.serial, self.uri)
            entry.finalize()

    def _open(self) -> Connection:
        conn = libvirt.open(self.uri)
        serial, on_close = self.serial, self._on_close

        def closed(_conn: Any, reason: int, _opaque: Any) -> None:
            on_close(serial, CLOSE_REASONS.get(reason, f"reason {reason}"))

        callback_ids: list[int] = []

        def finalize() -> None:
            for callback_id in callback_ids:
                try:
                    conn.domainEventDeregisterAny(callback_id)
                except libvirt.libvirtError:
                    pass  # the connection is gone already
            try:
                conn.unregisterCloseCallback()
            except libvirt.libvirtError:
                pass
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

        try:
            conn.registerCloseCallback(closed, None)
            callback_ids.extend(self._register(conn))
        except libvirt.libvirtError:
            finalize()
            raise
        return Connection(conn, serial, finalize)
