"""The libvirt connection, owned by one actor.

:class:`LibvirtActor` connects (each attempt on a throwaway thread, see
:mod:`actors.host.libvirtopen`), runs libvirt's event loop on a thread it owns, and keeps the
connection in the thread-safe :class:`~actors.host.libvirthandle.LibvirtHandle` through which
every other thread *leases* it. It notices that libvirtd is gone or does not answer in three
ways, and never closes a connection under a call in flight (the handle closes a retired one
once its last lease is back):

- libvirt's close callback (libvirtd closed the connection, or it broke): the connection is
  retired and the actor reconnects with backoff;
- a lease whose call failed on a connection that is no longer alive (``isAlive()``, local)
  reports it, in case libvirt never delivered the close callback;
- a **probe** (``getLibVersion``, on a ``libvirt-probe`` thread) every ``probe_interval``
  seconds. One that has not answered for ``stall_timeout`` seconds marks libvirtd *stalled*:
  verbs that need libvirt answer ``LibvirtUnavailable`` (101) at once, and the status is
  published; when the probe answers, libvirt is back (listeners resync). Past
  ``reconnect_after`` seconds the connection is retired and the actor reconnects.

While there is no usable connection, ``handle.lease()`` raises ``LibvirtUnavailable`` so that
verbs needing libvirt fail clearly while everything else keeps working. Every change is
published as ``|host|libvirt|status``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import libvirt

from actors.base import ActorContext, SupervisedActor
from actors.clock import TimerHandle
from actors.host.libvirtevents import DomainCallbacks, DomainEvent, EventLoop, EventRouter
from actors.host.libvirthandle import Connection, LibvirtHandle, is_alive
from actors.host.libvirtopen import Attempt, Opened
from messaging.errors import LibvirtUnavailable

__all__ = ["DomainEvent", "LibvirtActor", "LibvirtHandle"]

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 15.0


@dataclass(frozen=True)
class _Disconnected:
    reason: str
    serial: int


@dataclass(frozen=True)
class _Reconnect:
    pass


@dataclass(frozen=True)
class _OpenTimedOut:
    serial: int


@dataclass(frozen=True)
class _ProbeTick:
    pass


@dataclass(frozen=True)
class _ProbeDone:
    serial: int
    error: str  # empty: libvirtd answered
    alive: bool


class LibvirtActor(SupervisedActor):
    def __init__(
        self,
        ctx: ActorContext,
        *,
        handle: LibvirtHandle,
        on_event: EventRouter,
        on_connect: Sequence[Callable[[], None]] = (),
        reconnect_initial: float = 0.25,
        reconnect_max: float = 5.0,
        probe_interval: float = 5.0,
        stall_timeout: float = 5.0,
        reconnect_after: float = 15.0,
    ) -> None:
        super().__init__(ctx)
        self._handle = handle
        self._callbacks = DomainCallbacks(on_event)
        self._on_connect = list(on_connect)
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._probe_interval = probe_interval
        self._stall_timeout = stall_timeout
        self._reconnect_after = reconnect_after
        self._loop: EventLoop | None = None
        self._ticker: TimerHandle | None = None
        self._entry: Connection | None = None
        self._attempt: Attempt | None = None
        self._hanging: list[Attempt] = []  # abandoned attempts whose open still hangs
        self._serial = 0
        self._attempts = 0
        self._last_error = ""
        self._reconnect_pending = False
        self._probe_started: float | None = None
        self._stalled = False
        self._published: bool | None = None  # what |host|libvirt|status said last

    # --- lifecycle ---------------------------------------------------------------------

    def setup(self) -> None:
        me = self.actor_ref
        self._handle.watch(lambda serial, reason: _tell(me, _Disconnected(reason, serial)))
        self._loop = EventLoop()
        self._loop.start()
        self._ticker = self.ctx.runtime.clock.call_every(
            self._probe_interval, lambda: _tell(me, _ProbeTick()))
        # Connect from a message, not here: setup stays quick even when libvirtd hangs.
        self._reconnect_pending = True
        self.actor_ref.tell(_Reconnect())

    def teardown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._attempt is not None:
            self._attempt.abandon()
        self._retire("the agent is stopping")
        self._handle.join_closers(5.0)
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        entry = self._entry
        return {
            "uri": self._handle.uri,
            "connected": entry is not None and not self._stalled,
            "connectedFor": None if entry is None else round(now - entry.opened, 3),
            "stalledFor": None if not self._stalled or self._probe_started is None
            else round(now - self._probe_started, 3),
            "connecting": self._attempt is not None,
            "failedAttempts": self._attempts,
            "lastError": self._last_error,
            "events": dict(self._callbacks.seen),
            **self._handle.describe(),
        }

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Disconnected):
            if self._entry is not None and message.serial == self._entry.serial:
                log.warning("libvirt connection lost: %s", message.reason)
                self._retire(message.reason)
                self._schedule_reconnect()
        elif isinstance(message, _Reconnect):
            self._reconnect_pending = False
            self._connect()
        elif isinstance(message, Opened):
            self._on_opened(message)
        elif isinstance(message, _OpenTimedOut):
            self._on_open_timed_out(message)
        elif isinstance(message, _ProbeTick):
            self._on_probe_tick()
        elif isinstance(message, _ProbeDone):
            self._on_probe_done(message)
        else:
            return super().on_receive(message)
        return None

    # --- connecting ------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._entry is not None or self._attempt is not None:
            return
        self._hanging = [a for a in self._hanging if a.running]
        if self._hanging:  # one open hanging in libvirtd at a time: try again later
            self._schedule_reconnect()
            return
        self._serial += 1
        me, serial = self.actor_ref, self._serial
        self._attempt = Attempt(
            serial, self._handle.uri, register=self._callbacks.register,
            on_close=lambda s, reason: _tell(me, _Disconnected(reason, s)),
            report=lambda opened: _tell(me, opened),
        )
        self._attempt.start()
        self.ctx.runtime.clock.call_later(OPEN_TIMEOUT,
                                          lambda: _tell(me, _OpenTimedOut(serial)))

    def _on_opened(self, opened: Opened) -> None:
        if self._attempt is None or self._attempt.serial != opened.serial:
            if opened.entry is not None:  # not expected: a late attempt closes its own
                threading.Thread(target=opened.entry.finalize, name="libvirt-close-stray",
                                 daemon=True).start()
            return
        self._attempt = None
        if opened.entry is None:
            self._failed(opened.error)
            return
        self._entry = opened.entry
        self._attempts = 0
        self._stalled = False
        self._probe_started = None
        self._handle.install(opened.entry)
        log.info("connected to %s (connection %d)", self._handle.uri, opened.serial)
        self._set_published(True)

    def _on_open_timed_out(self, message: _OpenTimedOut) -> None:
        attempt = self._attempt
        if attempt is None or attempt.serial != message.serial or not attempt.abandon():
            return  # it finished meanwhile
        self._attempt = None
        self._hanging.append(attempt)
        self._failed(f"libvirt.open did not return within {OPEN_TIMEOUT:g} s")

    def _failed(self, error: str) -> None:
        self._attempts += 1
        self._last_error = error
        if self._attempts == 1 or self._attempts % 20 == 0:
            log.warning("cannot connect to %s (attempt %d): %s", self._handle.uri,
                        self._attempts, error)
        self._handle.unavailable(f"cannot connect to {self._handle.uri}: {error}")
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._reconnect_pending:
            return
        self._reconnect_pending = True
        delay = min(self._reconnect_max, self._reconnect_initial * 2 ** min(self._attempts, 8))
        me = self.actor_ref
        self.ctx.runtime.clock.call_later(delay, lambda: _tell(me, _Reconnect()))

    def _retire(self, reason: str) -> None:
        """Give the current connection up: no new calls get it; the handle closes it once
        the calls in flight on it have returned."""
        entry, self._entry = self._entry, None
        self._stalled = False
        self._probe_started = None
        self._handle.retire(reason)
        if entry is not None:
            self._set_published(False, reason)

    # --- is libvirtd answering? ------------------------------------------------------------

    def _on_probe_tick(self) -> None:
        entry = self._entry
        if entry is None:
            return
        if self._probe_started is None:
            self._start_probe(entry.serial)
            return
        silent = time.monotonic() - self._probe_started
        if silent >= self._reconnect_after:
            reason = f"libvirtd has not answered for {silent:.0f} s"
            log.warning("%s: giving connection %d up and reconnecting", reason, entry.serial)
            self._retire(reason)
            self._schedule_reconnect()
        elif silent >= self._stall_timeout and not self._stalled:
            reason = f"libvirtd has not answered for {silent:.0f} s"
            log.warning("%s: verbs needing libvirt are refused until it answers", reason)
            self._stalled = True
            self._handle.stall(reason)
            self._set_published(False, reason)

    def _start_probe(self, serial: int) -> None:
        self._probe_started = time.monotonic()
        me, handle = self.actor_ref, self._handle

        def probe() -> None:
            error, alive = "", True
            try:
                with handle.probe_lease(serial) as conn:
                    try:
                        conn.getLibVersion()
                    except libvirt.libvirtError as e:
                        error, alive = str(e), is_alive(conn)
            except LibvirtUnavailable as e:
                error, alive = e.message, False
            _tell(me, _ProbeDone(serial, error, alive))

        threading.Thread(target=probe, name=f"libvirt-probe-{serial}", daemon=True).start()

    def _on_probe_done(self, done: _ProbeDone) -> None:
        entry = self._entry
        if entry is None or entry.serial != done.serial:
            return  # a probe of a retired connection
        self._probe_started = None
        if not done.alive:
            log.warning("libvirt connection lost: %s", done.error)
            self._retire(done.error)
            self._schedule_reconnect()
            return
        if self._stalled:
            log.info("libvirtd answers again")
            self._stalled = False
            self._handle.unstall()
            self._set_published(True)

    # --- status ------------------------------------------------------------------------------

    def _set_published(self, connected: bool, reason: str = "") -> None:
        if self._published == connected:
            return
        self._published = connected
        payload: dict[str, Any] = {"connected": connected, "uri": self._handle.uri}
        if not connected:
            payload["reason"] = reason
        self.ctx.runtime.events.publish("|host|libvirt|status", payload)
        if not connected:
            return
        for listener in self._on_connect:
            try:
                listener()
            except Exception:
                log.exception("a libvirt on-connect listener failed")


def _tell(ref: Any, message: Any) -> None:
    try:
        ref.tell(message)
    except Exception:  # noqa: BLE001 - the actor is gone; nothing to reconnect
        log.debug("libvirt actor gone; %r dropped", message)
