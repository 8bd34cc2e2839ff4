"""Handlers of the policy's verbs: ``Host.setKsmTune``, ``Host.setMOMPolicyParameters`` and
``VM.updateVmPolicy``. They run on API worker threads and check every value before anything
changes.

``Host.setKsmTune`` asks the KSM actor for the write (answered at once with its future: the
server replies when the write is done). The switches and a VM's policy live in shared
objects (:mod:`actors.policy.state`) that the handlers update; then they ``tell`` the policy
actor to decide at once rather than at its next tick.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pykka

from actors.directory import ActorDirectory, ServiceRef
from actors.policy.actor import Decide, PolicyActor
from actors.policy.ksm import KsmSettings
from actors.policy.ksmactor import KsmActor
from actors.policy.proxies import KsmProxy
from actors.policy.state import Switches, VmPolicies
from actors.vm.board import VmBoard
from messaging.deadline import current as current_deadline
from messaging.errors import ActorUnavailable, InvalidParams, NoSuchVM, Recovering, VdsmError
from messaging.server import Binding

ASK_TIMEOUT = 5.0
T = TypeVar("T")


class PolicyApi:
    def __init__(
        self,
        *,
        directory: ActorDirectory,
        switches: Switches,
        policies: VmPolicies,
        board: VmBoard,
        vms_ready: threading.Event,
        ksm_path: str,
        engine_path: str,
    ) -> None:
        self._switches = switches
        self._policies = policies
        self._board = board
        self._vms_ready = vms_ready
        self._ksm: ServiceRef[KsmActor] = ServiceRef(directory, ksm_path)
        self._engine: ServiceRef[PolicyActor] = ServiceRef(directory, engine_path)
        self._ksm_path = ksm_path

    def bindings(self) -> dict[str, Binding]:
        return {
            "Host.setKsmTune": Binding(self.set_ksm_tune),
            "Host.setMOMPolicyParameters": Binding(self.set_mom_parameters),
            "VM.updateVmPolicy": Binding(self.update_vm_policy),
        }

    def set_ksm_tune(self, params: dict[str, Any]) -> Future[bool]:
        settings = KsmSettings(**params["tuningParams"])
        if not settings.items():
            raise InvalidParams("tuningParams", "give at least one of run, pages_to_scan, "
                                                "sleep_millisecs, merge_across_nodes")
        try:
            written: Future[Any] = self._ksm.proxy(KsmProxy).tune(settings).get(
                timeout=current_deadline().clamp(ASK_TIMEOUT))
        except (pykka.Timeout, pykka.ActorDeadError):
            raise ActorUnavailable(path=self._ksm_path, reason="it did not answer") from None
        return _then(written, lambda _state: True)

    def set_mom_parameters(self, params: dict[str, Any]) -> bool:
        store = params["key_value_store"]
        ballooning = store.get("ballooningEnabled", store.get("balloonEnabled"))
        if "ballooningEnabled" in store and "balloonEnabled" in store and \
                store["ballooningEnabled"] != store["balloonEnabled"]:
            raise InvalidParams("key_value_store.balloonEnabled",
                                "contradicts ballooningEnabled")
        changes = {name: value for name, value in (
            ("ballooning", ballooning), ("ksm", store.get("ksmEnabled")),
            ("ksm_merge_across_nodes", store.get("ksmMergeAcrossNodes"))) if value is not None}
        self._switches.update(**changes)
        self._decide("Host.setMOMPolicyParameters")
        return True

    def update_vm_policy(self, params: dict[str, Any]) -> bool:
        if not self._vms_ready.is_set():
            raise Recovering()
        vm_id, policy = params["vmID"], params["params"]
        view = self._board.get(vm_id)
        if view is None:
            raise NoSuchVM(vmID=vm_id)
        if policy.get("vmId", vm_id) != vm_id:
            raise InvalidParams("params.vmId", "is not vmID")
        changes = {}
        if "vcpuLimit" in policy:
            changes["vcpu_limit"] = policy["vcpuLimit"]
        if "minGuaranteedMemoryMb" in policy:
            guaranteed = policy["minGuaranteedMemoryMb"]
            if view.mem_mib is not None and guaranteed > view.mem_mib:
                raise InvalidParams("params.minGuaranteedMemoryMb",
                                    f"{guaranteed} MiB is more than the VM's memory "
                                    f"({view.mem_mib} MiB)")
            changes["min_guaranteed_mib"] = guaranteed
        if not changes:
            raise InvalidParams("params", "give vcpuLimit, minGuaranteedMemoryMb or both")
        self._policies.update(vm_id, **changes)
        self._decide("VM.updateVmPolicy")
        return True

    def _decide(self, why: str) -> None:
        try:
            self._engine.tell(Decide(why))
        except (VdsmError, pykka.ActorDeadError):
            pass  # restarting: its first decision reads the new values


def _then(future: Future[Any], fn: Callable[[Any], T]) -> Future[T]:
    """A future of ``fn(result)`` once ``future`` resolves (its exception otherwise)."""
    out: Future[T] = Future()

    def settle(done: Future[Any]) -> None:
        error = done.exception()
        if error is not None:
            out.set_exception(error)
        else:
            out.set_result(fn(done.result()))

    future.add_done_callback(settle)
    return out
