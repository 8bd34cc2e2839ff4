"""The VM board: every VM's last status and last stats, readable from any thread.

Each VM actor writes its own :class:`VmView` when its status changes, and the parts of the
stats only it knows (:meth:`VmBoard.set_part`: the guest agent's info, the balloon target);
the stats sampler writes the stats of all VMs once per sampling interval. The API handlers
(``VM.getStats``, ``Host.getVMList``, ``Host.getAllVmStats``) and ``Host.getStats`` read it
without asking any actor, so a busy or stuck VM cannot slow a host-wide read (the same idea as the
:class:`~actors.directory.ActorDirectory`). Views are immutable; a stats map is never
mutated once set (the sampler builds new ones), so readers get shallow copies.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import Any

from actors.vm.status import ExitReason, PauseCode, VmStatus

#: What a VM's stats map holds before its first sample (or while it is not running).
EMPTY_STATS: dict[str, Any] = {
    "cpuUser": 0.0,
    "cpuSys": 0.0,
    "memUsage": 0,
    "disks": {},
    "network": {},
    "monitorResponse": 0,
}


@dataclass(frozen=True)
class VmView:
    """A VM as the API shows it; ``started`` is the POSIX time its qemu started."""

    vm_id: str
    name: str
    status: VmStatus
    pause_code: PauseCode | None = None
    exit_reason: ExitReason | None = None
    started: float | None = None
    display: tuple[dict[str, Any], ...] = ()  # displayInfo, as the live domain has it
    mem_mib: int | None = None
    guest_agent: str | None = None  # the guest agent's state (actors/vm/qga.py)
    min_guaranteed_mib: int = 0  # vmParams.minGuaranteedMemoryMb: the balloon's floor

    @property
    def active(self) -> bool:
        return self.status != VmStatus.DOWN

    def to_wire(self) -> dict[str, Any]:
        """``{vmID, vmName, status, pauseCode?, exitReason?, exitCode?, exitMessage?}``."""
        out: dict[str, Any] = {"vmID": self.vm_id, "vmName": self.name,
                               "status": str(self.status)}
        if self.guest_agent is not None and self.status != VmStatus.DOWN:
            out["guestAgent"] = self.guest_agent
        if self.status == VmStatus.PAUSED and self.pause_code is not None:
            out["pauseCode"] = str(self.pause_code)
        if self.status == VmStatus.DOWN and self.exit_reason is not None:
            out["exitReason"] = str(self.exit_reason)
            out["exitCode"] = self.exit_reason.exit_code
            out["exitMessage"] = self.exit_reason.message
        return out


class VmBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: dict[str, VmView] = {}
        self._stats: dict[str, dict[str, Any]] = {}
        self._parts: dict[str, dict[str, dict[str, Any]]] = {}
        self._sampled_at: float | None = None

    # --- writers -------------------------------------------------------------------------

    def put(self, view: VmView) -> None:
        with self._lock:
            self._views[view.vm_id] = view

    def remove(self, vm_id: str) -> None:
        with self._lock:
            self._views.pop(vm_id, None)
            self._stats.pop(vm_id, None)
            self._parts.pop(vm_id, None)

    def set_part(self, vm_id: str, part: str, values: dict[str, Any]) -> None:
        """Stats of ``vm_id`` that its actor knows (``part`` names who wrote them), shown
        over the sampler's while the VM is not Down; a map value is merged into the
        sampler's map of the same key. ``values`` is never mutated afterwards."""
        with self._lock:
            if vm_id in self._views:
                self._parts.setdefault(vm_id, {})[part] = values

    def set_stats(self, stats: dict[str, dict[str, Any]], sampled_at: float) -> None:
        """The stats of one sample (monotonic ``sampled_at``); VMs absent have none."""
        with self._lock:
            self._stats = {k: v for k, v in stats.items() if k in self._views}
            self._sampled_at = sampled_at

    # --- readers -------------------------------------------------------------------------

    def get(self, vm_id: str) -> VmView | None:
        with self._lock:
            return self._views.get(vm_id)

    def views(self) -> list[VmView]:
        with self._lock:
            return sorted(self._views.values(), key=lambda v: v.vm_id)

    def ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._views)

    def started(self) -> dict[str, float]:
        """POSIX start time by vmID, for the stats' ``elapsedTime``."""
        with self._lock:
            return {k: v.started for k, v in self._views.items() if v.started is not None}

    def counts(self) -> tuple[int, int]:
        """(VMs, VMs not Down)."""
        with self._lock:
            return len(self._views), sum(1 for v in self._views.values() if v.active)

    def full_stats(self, vm_id: str | None = None) -> list[dict[str, Any]]:
        """The stats maps of every VM (or of ``vm_id`` only: [] if unknown)."""
        now = time.monotonic()
        with self._lock:
            if vm_id is None:
                views = sorted(self._views.values(), key=lambda v: v.vm_id)
            else:
                views = [self._views[vm_id]] if vm_id in self._views else []
            rows = [(view, self._stats.get(view.vm_id), self._parts.get(view.vm_id, {}))
                    for view in views]
            age = None if self._sampled_at is None else round(now - self._sampled_at, 3)
        result = []
        for view, stats, parts in rows:
            if stats is not None and view.active:
                # A shallow copy is enough: nobody mutates a stats map once it is set.
                entry = dict(stats)
                if age is not None:
                    entry["statsAge"] = age
            else:
                entry = copy.deepcopy(EMPTY_STATS)
            entry["displayInfo"] = [dict(d) for d in view.display] if view.active else []
            if view.mem_mib is not None:
                entry["memSize"] = view.mem_mib
            if view.active:
                for values in parts.values():
                    _merge(entry, values)
                if view.min_guaranteed_mib and isinstance(entry.get("balloonInfo"), dict):
                    entry["balloonInfo"] = {**entry["balloonInfo"],
                                            "balloon_min": view.min_guaranteed_mib * 1024}
            entry.update(view.to_wire())
            result.append(entry)
        return result


def _merge(entry: dict[str, Any], values: dict[str, Any]) -> None:
    """Merge ``values`` into ``entry``, maps into maps at every depth (a part's
    ``{"disks": {"vda": {...}}}`` adds to the sampler's vda); neither input is mutated."""
    for key, value in values.items():
        old = entry.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merged = dict(old)
            _merge(merged, value)
            entry[key] = merged
        else:
            entry[key] = value
