"""The monitors' last results, readable from any thread without asking an actor.

Each :class:`~actors.storage.monitor.DomainMonitor` publishes its state here after every
check; ``Host.getStorageRepoStats`` and ``Host.getStats`` read a snapshot under a lock held
only for a dict copy, so they answer at once even while a domain's storage is frozen and its
monitor's probe is stuck. Listeners (the VMs, which resume a VM paused on an I/O error once
its storage is back) hear of every change of a domain's validity.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

NEVER = -1.0
Listener = Callable[[str, bool], None]


@dataclass(frozen=True)
class DomainHealth:
    sd_uuid: str
    valid: bool
    code: int
    """0, or the storage error code of the last check (215 timeout, 208 I/O error, ...)."""
    delay: float
    """Seconds the last probe took (a stuck one: how long it has been running)."""
    checked_at: float
    """``time.monotonic()`` when the last check completed (:data:`NEVER` before the first)."""
    since: float
    """``time.monotonic()`` when monitoring began."""
    version: int = -1
    acquired: bool = False
    """Whether the host id lease on the domain is held (no leases yet: always False)."""
    error: str = ""

    @property
    def actual(self) -> bool:
        """Whether a check has completed (before that ``valid`` is only a placeholder)."""
        return self.checked_at != NEVER

    def last_check(self, now: float) -> float:
        """Seconds since the last completed check (since monitoring began before one)."""
        return round(now - (self.checked_at if self.actual else self.since), 3)

    def to_wire(self, now: float) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "code": self.code, "lastCheck": self.last_check(now), "delay": round(self.delay, 6),
            "valid": self.valid, "version": self.version, "acquired": self.acquired,
            "actual": self.actual,
        }
        if self.error:
            entry["error"] = self.error
        return entry

    def event(self, now: float) -> dict[str, Any]:
        """The ``|storage|domain_status|<sdUUID>`` payload."""
        return {"sdUUID": self.sd_uuid, "valid": self.valid, "delay": round(self.delay, 6),
                "lastCheck": self.last_check(now), "code": self.code, "error": self.error}


class MonitorBoard:
    """Entries exist from :meth:`watch` (a monitor starts) to :meth:`remove` (the domain is
    not monitored any more); a :meth:`put` outside that span is dropped, so a monitor still
    finishing its last check after its domain was deactivated cannot bring it back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, DomainHealth] = {}
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Call ``listener(sd_uuid, valid)`` whenever a checked domain turns valid or invalid
        (on the monitor's thread: it must only hand the news on, e.g. ``tell``)."""
        with self._lock:
            self._listeners.append(listener)

    def watch(self, health: DomainHealth) -> None:
        with self._lock:
            self._entries[health.sd_uuid] = health

    def put(self, health: DomainHealth) -> None:
        with self._lock:
            old = self._entries.get(health.sd_uuid)
            if old is None:
                return
            self._entries[health.sd_uuid] = health
            changed = health.actual and (not old.actual or old.valid != health.valid)
            listeners = list(self._listeners) if changed else []
        for listener in listeners:
            try:
                listener(health.sd_uuid, health.valid)
            except Exception:
                log.exception("a listener of domain %s failed", health.sd_uuid)

    def remove(self, sd_uuid: str) -> None:
        with self._lock:
            self._entries.pop(sd_uuid, None)

    def get(self, sd_uuid: str) -> DomainHealth | None:
        with self._lock:
            return self._entries.get(sd_uuid)

    def snapshot(self) -> dict[str, Any]:
        """``{sdUUID: {code, lastCheck, delay, valid, version, acquired, actual}}``."""
        with self._lock:
            entries = list(self._entries.values())
        now = time.monotonic()
        return {h.sd_uuid: h.to_wire(now) for h in entries}
