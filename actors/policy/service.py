"""The policy subsystem as the daemon sees it (see actors/subsystem.py): the ``/policy``
supervisor with the KSM actor (``/policy/ksm``) and the policy actor (``/policy/engine``),
the verbs ``Host.setKsmTune``, ``Host.setMOMPolicyParameters`` and ``VM.updateVmPolicy``, and
KSM's fields of ``Host.getStats``.

It reads what the host and VM subsystems keep (the host stats sample, the VM board) and
acts through the VM actors: it sits above ``actors.vm``, which never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.host.libvirtconn import DomainEvent
from actors.host.stats import LastSample
from actors.policy.actor import PolicyActor
from actors.policy.api import PolicyApi
from actors.policy.ksmactor import KsmActor
from actors.policy.rules import RuleFile
from actors.policy.state import KsmBoard, Switches, VmPolicies
from actors.subsystem import Deps
from actors.supervisor import ChildSpec
from actors.vm.service import VMS, VmSubsystem
from messaging.server import Binding

POLICY = "/policy"
KSM = "ksm"
ENGINE = "engine"


class PolicySubsystem:
    name = "policy"

    def __init__(self, deps: Deps, *, vms: VmSubsystem, host_stats: LastSample) -> None:
        self.deps = deps
        self.vms = vms
        self.last_host_stats = host_stats
        self.ksm_board = KsmBoard()
        self.switches = Switches()
        self.policies = VmPolicies()
        self.api = PolicyApi(directory=deps.runtime.directory, switches=self.switches,
                             policies=self.policies, board=vms.board, vms_ready=vms.ready,
                             ksm_path=f"{POLICY}/{KSM}", engine_path=f"{POLICY}/{ENGINE}")

    def children(self) -> Sequence[ChildSpec]:
        cfg = self.deps.config
        rules_path = Path(cfg.policy.rules) if cfg.policy.rules else None

        def engine(ctx: Any) -> Any:
            return PolicyActor.start(
                ctx, interval=cfg.policy.interval, rules=RuleFile(rules_path),
                host_stats=self.last_host_stats, board=self.vms.board, ksm_board=self.ksm_board,
                switches=self.switches, policies=self.policies, ksm_path=f"{POLICY}/{KSM}",
                vms_path=VMS)

        return (
            ChildSpec(KSM, lambda ctx: KsmActor.start(ctx, board=self.ksm_board,
                                                      interval=cfg.host.stats_interval),
                      cls="KsmActor"),
            ChildSpec(ENGINE, engine, cls="PolicyActor"),
        )

    def bindings(self) -> dict[str, Binding]:
        return self.api.bindings()

    def host_stats(self) -> dict[str, Any]:
        return self.ksm_board.host_stats()

    def started(self) -> None:
        pass

    def domain_event(self, event: DomainEvent) -> None:
        pass

    def libvirt_connected(self) -> None:
        pass
