"""The libvirt connection, owned by one actor.

:class:`LibvirtActor` opens the connection, runs libvirt's default event loop on a thread it
owns, registers one small callback per domain event id, and reconnects by itself (with
backoff) when libvirtd goes away. Other actors reach the connection through the thread-safe
:class:`LibvirtHandle` (libvirt connections may be used from several threads); while it is
down, ``handle.get()`` raises ``LibvirtUnavailable`` so that verbs needing libvirt fail
clearly while everything else keeps working.

Event callbacks run on libvirt's event thread: each one only wraps its arguments into a
:class:`DomainEvent` and hands it to the injected ``on_event`` router (which ``tell``s the
VM actor), so nothing blocks that thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import libvirt

from actors.base import ActorContext, SupervisedActor
from messaging.errors import LibvirtUnavailable

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 15.0
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3

_impl_lock = threading.Lock()
_impl_registered = False


def register_event_impl() -> None:
    """Register libvirt's default event implementation: process-wide, once, before any
    connection is opened (a libvirt rule, hence the one module-level flag)."""
    global _impl_registered  # noqa: PLW0603 - libvirt's event impl is process-global state
    with _impl_lock:
        if not _impl_registered:
            libvirt.virEventRegisterDefaultImpl()
            _impl_registered = True


@dataclass(frozen=True)
class DomainEvent:
    """One libvirt domain event. ``kind`` names the event id; ``args`` its payload."""

    kind: str
    uuid: str
    name: str
    args: tuple[Any, ...]
    time: float


EventRouter = Callable[[DomainEvent], None]


class LibvirtHandle:
    """The current connection, readable from any thread."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._reason = "not connected yet"

    def get(self) -> libvirt.virConnect:
        conn = self._conn
        if conn is None:
            raise LibvirtUnavailable(reason=self._reason)
        return conn

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def _set(self, conn: libvirt.virConnect | None, reason: str = "") -> None:
        self._conn = conn
        self._reason = reason

    def translate(self, error: libvirt.libvirtError) -> BaseException:
        """A libvirtError raised because the connection broke becomes LibvirtUnavailable.

        libvirt reports local failures (a missing file) with VIR_ERR_SYSTEM_ERROR too, so
        the error code alone does not tell: the connection must also be dead."""
        conn = self._conn
        if conn is None:
            return LibvirtUnavailable(reason=str(error))
        if error.get_error_code() in (
            libvirt.VIR_ERR_SYSTEM_ERROR,
            libvirt.VIR_ERR_RPC,
            libvirt.VIR_ERR_NO_CONNECT,
            libvirt.VIR_ERR_INVALID_CONN,
        ):
            try:
                alive = conn.isAlive() == 1
            except libvirt.libvirtError:
                alive = False
            if not alive:
                return LibvirtUnavailable(reason=str(error))
        translated: BaseException = error
        return translated


@dataclass(frozen=True)
class _Disconnected:
    reason: str
    serial: int


@dataclass(frozen=True)
class _Reconnect:
    pass


_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "libvirtd closed the connection",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the client",
}


class _EventLoop:
    """libvirt's default event loop on a thread of its own."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="libvirt-events", daemon=True)

    def start(self) -> None:
        register_event_impl()
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if libvirt.virEventRunDefaultImpl() < 0:
                log.error("libvirt event loop iteration failed")
                time.sleep(0.1)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        # A zero timer fires on the next iteration and so wakes the blocked loop.
        timer = libvirt.virEventAddTimeout(0, lambda timer, opaque: None, None)
        self._thread.join(timeout)
        if timer >= 0:
            libvirt.virEventRemoveTimeout(timer)


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
    ) -> None:
        super().__init__(ctx)
        self._handle = handle
        self._on_event = on_event
        self._on_connect = list(on_connect)
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._loop: _EventLoop | None = None
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._serial = 0
        self._attempts = 0
        self._last_error = ""
        self._connected_since: float | None = None
        self._reconnect_pending = False
        self._events: Counter[str] = Counter()

    # --- lifecycle ---------------------------------------------------------------------

    def setup(self) -> None:
        self._loop = _EventLoop()
        self._loop.start()
        # Connect from a message, not here: setup stays quick even when libvirtd hangs.
        self._reconnect_pending = True
        self.actor_ref.tell(_Reconnect())

    def teardown(self) -> None:
        self._drop("the agent is stopping")
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "uri": self._handle.uri,
            "connected": self._conn is not None,
            "connectedFor": None if self._connected_since is None
            else round(now - self._connected_since, 3),
            "failedAttempts": self._attempts,
            "lastError": self._last_error,
            "events": dict(self._events),
        }

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Disconnected):
            if message.serial == self._serial and self._conn is not None:
                log.warning("libvirt connection lost: %s", message.reason)
                self._drop(message.reason)
                self._schedule_reconnect()
            return None
        if isinstance(message, _Reconnect):
            self._reconnect_pending = False
            if self._conn is None:
                self._connect()
            return None
        return super().on_receive(message)

    # --- connection ----------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            conn = _open_with_timeout(self._handle.uri, OPEN_TIMEOUT)
        except (libvirt.libvirtError, TimeoutError) as e:
            self._attempts += 1
            self._last_error = str(e)
            if self._attempts == 1 or self._attempts % 20 == 0:
                log.warning("cannot connect to %s (attempt %d): %s",
                            self._handle.uri, self._attempts, e)
            self._handle._set(None, f"cannot connect to {self._handle.uri}: {e}")
            self._schedule_reconnect()
            return
        self._serial += 1
        serial = self._serial
        me = self.actor_ref

        def on_close(_conn: Any, reason: int, _opaque: Any) -> None:
            me.tell(_Disconnected(_CLOSE_REASONS.get(reason, f"reason {reason}"), serial))

        try:
            conn.registerCloseCallback(on_close, None)
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
            self._register_events(conn)
        except libvirt.libvirtError as e:
            log.warning("connected to %s but cannot set it up: %s", self._handle.uri, e)
            _close_quietly(conn)
            self._last_error = str(e)
            self._schedule_reconnect()
            return
        self._conn = conn
        self._connected_since = time.monotonic()
        self._attempts = 0
        self._handle._set(conn)
        log.info("connected to %s", self._handle.uri)
        self.ctx.runtime.events.publish(
            "|host|libvirt|status", {"connected": True, "uri": self._handle.uri}
        )
        for listener in self._on_connect:
            try:
                listener()
            except Exception:
                log.exception("a libvirt on-connect listener failed")

    def _drop(self, reason: str) -> None:
        conn, self._conn = self._conn, None
        self._handle._set(None, reason)
        self._connected_since = None
        if conn is None:
            return
        self.ctx.runtime.events.publish(
            "|host|libvirt|status",
            {"connected": False, "uri": self._handle.uri, "reason": reason},
        )
        for callback_id in self._callback_ids:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass  # the connection is already gone
        self._callback_ids = []
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        _close_quietly(conn)

    def _schedule_reconnect(self) -> None:
        if self._reconnect_pending:
            return
        self._reconnect_pending = True
        delay = min(self._reconnect_max, self._reconnect_initial * 2 ** min(self._attempts, 8))
        me = self.actor_ref
        self.ctx.runtime.clock.call_later(delay, lambda: _tell(me, _Reconnect()))

    # --- events: one small callback per event id -----------------------------------------

    def _register_events(self, conn: libvirt.virConnect) -> None:
        callbacks: dict[int, Callable[..., None]] = {
            libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE: self._on_lifecycle,
            libvirt.VIR_DOMAIN_EVENT_ID_REBOOT: self._on_reboot,
            libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON: self._on_io_error,
            libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD: self._on_block_threshold,
            libvirt.VIR_DOMAIN_EVENT_ID_CONTROL_ERROR: self._on_control_error,
            libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED: self._on_job_completed,
            libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION: self._on_migration_iteration,
            libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE: self._on_agent_lifecycle,
            libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED: self._on_device_removed,
            libvirt.VIR_DOMAIN_EVENT_ID_TRAY_CHANGE: self._on_tray_change,
        }
        self._callback_ids = [
            conn.domainEventRegisterAny(None, event_id, callback, None)
            for event_id, callback in callbacks.items()
        ]

    def _emit(self, kind: str, dom: libvirt.virDomain, args: tuple[Any, ...]) -> None:
        self._events[kind] += 1
        try:
            event = DomainEvent(kind, dom.UUIDString(), dom.name(), args, time.monotonic())
            self._on_event(event)
        except Exception:
            log.exception("routing a libvirt %s event failed", kind)

    def _on_lifecycle(self, _c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
        self._emit("lifecycle", dom, (event, detail))

    def _on_reboot(self, _c: Any, dom: Any, _o: Any) -> None:
        self._emit("reboot", dom, ())

    def _on_io_error(self, _c: Any, dom: Any, src: str, alias: str, action: int,
                     reason: str, _o: Any) -> None:
        self._emit("io_error", dom, (src, alias, action, reason))

    def _on_block_threshold(self, _c: Any, dom: Any, dev: str, path: str, threshold: int,
                            excess: int, _o: Any) -> None:
        self._emit("block_threshold", dom, (dev, path, threshold, excess))

    def _on_control_error(self, _c: Any, dom: Any, _o: Any) -> None:
        self._emit("control_error", dom, ())

    def _on_job_completed(self, _c: Any, dom: Any, params: dict[str, Any], _o: Any) -> None:
        self._emit("job_completed", dom, (params,))

    def _on_migration_iteration(self, _c: Any, dom: Any, iteration: int, _o: Any) -> None:
        self._emit("migration_iteration", dom, (iteration,))

    def _on_agent_lifecycle(self, _c: Any, dom: Any, state: int, reason: int, _o: Any) -> None:
        self._emit("agent_lifecycle", dom, (state, reason))

    def _on_device_removed(self, _c: Any, dom: Any, dev: str, _o: Any) -> None:
        self._emit("device_removed", dom, (dev,))

    def _on_tray_change(self, _c: Any, dom: Any, alias: str, reason: int, _o: Any) -> None:
        self._emit("tray_change", dom, (alias, reason))


def _open_with_timeout(uri: str, timeout: float) -> libvirt.virConnect:
    """libvirt.open on a throwaway thread, so a hung libvirtd cannot hang the actor.

    A connection that opens only after the timeout is closed by that thread."""
    outcome: list[Any] = []
    lock = threading.Lock()
    gave_up = threading.Event()

    def run() -> None:
        try:
            result: Any = libvirt.open(uri)
        except libvirt.libvirtError as e:
            result = e
        with lock:
            if not gave_up.is_set():
                outcome.append(result)
                return
        if isinstance(result, libvirt.virConnect):
            _close_quietly(result)

    thread = threading.Thread(target=run, name="libvirt-open", daemon=True)
    thread.start()
    thread.join(timeout)
    with lock:
        if not outcome:
            gave_up.set()
            raise TimeoutError(f"libvirt.open({uri}) did not return within {timeout:g} s")
    result = outcome[0]
    if isinstance(result, libvirt.libvirtError):
        raise result
    if result is None:
        raise TimeoutError(f"libvirt.open({uri}) returned nothing")
    conn: libvirt.virConnect = result
    return conn


def _close_quietly(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


def _tell(ref: Any, message: Any) -> None:
    try:
        ref.tell(message)
    except Exception:  # noqa: BLE001 - the actor is gone; nothing to reconnect
        log.debug("libvirt actor gone; %r dropped", message)
