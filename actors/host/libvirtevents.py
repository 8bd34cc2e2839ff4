"""libvirt's event loop and domain events: the part of the connection that runs on libvirt's
own event thread.

:func:`register_event_impl` must run once per process before any connection is opened (a
libvirt rule); :class:`EventLoop` then runs ``virEventRunDefaultImpl`` on a thread of its
own. :class:`DomainCallbacks` registers one small callback per domain event id on a
connection; each callback only wraps its arguments into a :class:`DomainEvent` and hands it to
the injected router (which ``tell``s the VM actor), so nothing blocks libvirt's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

log = logging.getLogger(__name__)

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


class EventLoop:
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


class DomainCallbacks:
    """One small callback per domain event id; counts what it saw (thread-safe enough for a
    counter read by ``describe``)."""

    def __init__(self, route: EventRouter) -> None:
        self._route = route
        self.seen: Counter[str] = Counter()

    def register(self, conn: libvirt.virConnect) -> list[int]:
        """Register every callback on ``conn``; the callback ids (for deregistering)."""
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
        return [conn.domainEventRegisterAny(None, event_id, callback, None)
                for event_id, callback in callbacks.items()]

    def _emit(self, kind: str, dom: libvirt.virDomain, args: tuple[Any, ...]) -> None:
        self.seen[kind] += 1
        try:
            event = DomainEvent(kind, dom.UUIDString(), dom.name(), args, time.monotonic())
            self._route(event)
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
