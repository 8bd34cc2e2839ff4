"""What the policy decides from: typed snapshots of the boards (plain, no I/O).

The host's memory comes from the host stats sample (``memTotal``, ``memFree``: MemAvailable,
MiB), each VM's from the VM board (the balloon's ``balloonInfo``, the guest's own
``memoryStats``, the rates of its CPU and disks) and its policy (vmParams'
``minGuaranteedMemoryMb``, VM.updateVmPolicy's values), KSM's from its board.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from actors.policy.state import VmPolicy
from actors.vm.board import VmView


@dataclass(frozen=True)
class HostInput:
    mem_total_mib: int
    mem_free_mib: int  # MemAvailable
    cpu_count: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.mem_free_mib / self.mem_total_mib if self.mem_total_mib else 100.0

    def to_wire(self) -> dict[str, Any]:
        return {"memTotal": self.mem_total_mib, "memFree": self.mem_free_mib,
                "freePercent": round(self.free_percent, 2), "cpuCount": self.cpu_count}


def host_input(stats: Mapping[str, Any], cpu_count: int) -> HostInput | None:
    """None before the first host sample."""
    if "memTotal" not in stats or "memFree" not in stats:
        return None
    return HostInput(int(stats["memTotal"]), int(stats["memFree"]), cpu_count)


@dataclass(frozen=True)
class VmInput:
    vm_id: str
    name: str
    status: str
    mem_mib: int  # memSize: the balloon's maximum
    guaranteed_mib: int  # the balloon's floor
    vcpus: int
    balloon_cur: int | None  # KiB the guest holds now (None: no balloon stats)
    balloon_target: int | None  # KiB last asked for
    guest_free: int | None  # KiB the guest can use (MemAvailable, else MemFree)
    cpu_percent: float  # of its vCPUs, user + system
    disk_read_rate: float  # bytes/s, all disks
    disk_write_rate: float
    policy: VmPolicy

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "memSize": self.mem_mib,
                "guaranteedMb": self.guaranteed_mib, "vcpus": self.vcpus,
                "balloonCur": self.balloon_cur, "balloonTarget": self.balloon_target,
                "guestFree": self.guest_free, "cpuPercent": self.cpu_percent,
                "diskReadRate": self.disk_read_rate, "diskWriteRate": self.disk_write_rate,
                "policy": self.policy.to_wire()}


def vm_inputs(views: Iterable[VmView], stats: Iterable[Mapping[str, Any]],
              policies: Mapping[str, VmPolicy]) -> list[VmInput]:
    by_id = {s["vmID"]: s for s in stats}
    inputs = []
    for view in views:
        s = by_id.get(view.vm_id, {})
        balloon = s.get("balloonInfo") or {}
        memory = s.get("memoryStats") or {}
        free = memory.get("mem_usable", memory.get("mem_unused"))
        disks = (s.get("disks") or {}).values()
        policy = policies.get(view.vm_id, VmPolicy())
        guaranteed = policy.min_guaranteed_mib if policy.min_guaranteed_mib is not None \
            else view.min_guaranteed_mib
        inputs.append(VmInput(
            vm_id=view.vm_id,
            name=view.name,
            status=str(view.status),
            mem_mib=int(view.mem_mib or 0),
            guaranteed_mib=min(int(guaranteed), int(view.mem_mib or 0)),
            vcpus=max(1, int(s.get("vcpuCount", 1))),
            balloon_cur=_int(balloon.get("balloon_cur")),
            balloon_target=_int(balloon.get("balloon_target")),
            guest_free=_int(free),
            cpu_percent=round(float(s.get("cpuUser", 0.0)) + float(s.get("cpuSys", 0.0)), 2),
            disk_read_rate=float(sum(d.get("readRate", 0.0) for d in disks)),
            disk_write_rate=float(sum(d.get("writeRate", 0.0) for d in disks)),
            policy=policy,
        ))
    return inputs


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
