"""What the policy's actors share with the API and with each other, readable from any thread.

These live in the :class:`~actors.policy.service.PolicySubsystem`, not in an actor: a
restarted actor finds them as they were (the management layer's switches and the VMs'
policies are not lost with a crash), and the inline ``Host.getStats`` reads KSM's last
sample without asking anyone. None of them survives an agent restart: as with vdsm, the
management layer sends its switches and VM policies again when it connects.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from actors.policy.ksm import KsmState


class KsmBoard:
    """KSM's last sample, written by the KSM actor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: KsmState | None = None
        self._stats: dict[str, Any] = {}

    def set(self, state: KsmState, stats: dict[str, Any]) -> None:
        with self._lock:
            self._state, self._stats = state, stats

    def state(self) -> KsmState | None:
        with self._lock:
            return self._state

    def host_stats(self) -> dict[str, Any]:
        """Host.getStats' KSM fields ({} on a host without KSM)."""
        with self._lock:
            return dict(self._stats)


@dataclass(frozen=True)
class SwitchValues:
    """Host.setMOMPolicyParameters' switches; None: the rule file decides."""

    ballooning: bool | None = None
    ksm: bool | None = None
    ksm_merge_across_nodes: bool | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"ballooningEnabled": self.ballooning, "ksmEnabled": self.ksm,
                "ksmMergeAcrossNodes": self.ksm_merge_across_nodes}


class Switches:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = SwitchValues()

    def update(self, **changes: bool) -> SwitchValues:
        with self._lock:
            self._values = replace(self._values, **changes)
            return self._values

    def get(self) -> SwitchValues:
        with self._lock:
            return self._values


@dataclass(frozen=True)
class VmPolicy:
    """VM.updateVmPolicy's values for one VM; None: not set."""

    vcpu_limit: int | None = None  # percent of the host's CPU
    min_guaranteed_mib: int | None = None  # overrides vmParams.minGuaranteedMemoryMb

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.vcpu_limit is not None:
            out["vcpuLimit"] = self.vcpu_limit
        if self.min_guaranteed_mib is not None:
            out["minGuaranteedMemoryMb"] = self.min_guaranteed_mib
        return out


class VmPolicies:
    """Every VM's policy by vmID; the policy actor forgets the VMs that are gone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._policies: dict[str, VmPolicy] = {}

    def update(self, vm_id: str, **changes: int) -> VmPolicy:
        with self._lock:
            policy = replace(self._policies.get(vm_id, VmPolicy()), **changes)
            self._policies[vm_id] = policy
            return policy

    def get(self, vm_id: str) -> VmPolicy:
        with self._lock:
            return self._policies.get(vm_id, VmPolicy())

    def all(self) -> dict[str, VmPolicy]:
        with self._lock:
            return dict(self._policies)

    def keep(self, vm_ids: frozenset[str]) -> None:
        with self._lock:
            for vm_id in set(self._policies) - vm_ids:
                del self._policies[vm_id]
