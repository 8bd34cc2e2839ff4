"""PolicyActor (``/policy/engine``): reads the boards on its own interval, decides, and has
its decisions applied by the actors that own what they change.

Every ``interval`` seconds (a clock tick; also at once when a client changed a switch or a
VM's policy) it reloads the rule file if it changed (:class:`~actors.policy.rules.RuleFile`),
takes its inputs from what the boards already hold (the host stats sample, the VM board,
KSM's board: no I/O, no libvirt, no actor asked), decides with :mod:`actors.policy.decide`
and applies:

- KSM's settings by ``tell``ing the KSM actor an :class:`~actors.policy.ksmactor.ApplyKsm`
  (its outcome is told back);
- balloon targets and vCPU quotas through each VM's actor, which runs them as operations
  on its own GuestCaller (``set_balloon_target``, ``tune``). Asking a VM actor is quick but
  is still an ask: it happens on a ``policy-apply`` thread of a
  :class:`~actors.calls.BoundedCaller`, which only registers a callback on the operation's
  future; each outcome comes back here as a message. The actor never waits.

A VM with a decision still in flight gets no new one; a VM busy with a verb (``VMBusy``)
gets the decision again at the next interval. Its inputs, the rules in force, the switches
and the last decisions with their outcomes are its ``Actors.inspect`` description (and the
console's ``policy`` command).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pykka

from actors.base import ActorContext, SupervisedActor, tell_or_drop
from actors.calls import BoundedCaller
from actors.clock import TimerHandle
from actors.directory import ActorDirectory, typed_proxy
from actors.host.stats import LastSample
from actors.policy import decide
from actors.policy.decide import Decision
from actors.policy.inputs import HostInput, VmInput, host_input, vm_inputs
from actors.policy.ksm import KsmSettings
from actors.policy.ksmactor import ApplyKsm
from actors.policy.rules import RuleFile
from actors.policy.state import KsmBoard, Switches, VmPolicies
from actors.vm import qos
from actors.vm.board import VmBoard
from actors.vm.proxies import VmProxy
from actors.vm.qos import CpuTune
from messaging.errors import VdsmError
from messaging.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

ASK_TIMEOUT = 5.0  # a VM actor answers a proxy call at once
APPLY_TIMEOUT = 30.0  # a batch of asks
HISTORY = 50  # decisions shown by Actors.inspect


@dataclass(frozen=True)
class Decide:
    """Decide now (a switch or a VM's policy changed), besides the interval's ticks."""

    why: str = "asked"


@dataclass(frozen=True)
class _Tick:
    pass


@dataclass(frozen=True)
class _Outcome:
    record: dict[str, Any]
    decision: Decision
    error: BaseException | None
    result: Any = None


class _ApplyCaller(BoundedCaller):
    thread_prefix = "policy"


class PolicyActor(SupervisedActor):
    def __init__(
        self,
        ctx: ActorContext,
        *,
        interval: float,
        rules: RuleFile,
        host_stats: LastSample,
        board: VmBoard,
        ksm_board: KsmBoard,
        switches: Switches,
        policies: VmPolicies,
        ksm_path: str,
        vms_path: str = "/vms",
    ) -> None:
        super().__init__(ctx)
        self._interval = interval
        self._rules = rules
        self._host_stats = host_stats
        self._board = board
        self._ksm_board = ksm_board
        self._switches = switches
        self._policies = policies
        self._ksm_path = ksm_path
        self._vms_path = vms_path
        self._caller: BoundedCaller | None = None
        self._timer: TimerHandle | None = None
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._pending: set[tuple[str, str | None]] = set()  # (kind, vmID) in flight
        self._cpu_applied: dict[str, tuple[int, int]] = {}
        self._ksm_controlled = False
        self._inputs: dict[str, Any] = {}
        self._decisions = 0
        self._last_at: float | None = None
        self._failures = RateLimitedLog(log, "policy decisions that failed", burst=5,
                                        window=60.0)

    def setup(self) -> None:
        self._caller = _ApplyCaller("apply", clock=self.ctx.runtime.clock)
        me = self.actor_ref
        self._timer = self.ctx.runtime.clock.call_every(self._interval,
                                                        lambda: _tell(me, _Tick()))
        self._rules.refresh()

    def teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._caller is not None:
            self._caller.close()

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "interval": self._interval,
            "decisions": self._decisions,
            "lastDecisionAgo": None if self._last_at is None else
            round(now - self._last_at, 3),
            "ruleFile": self._rules.describe(),
            "switches": self._switches.get().to_wire(),
            "ballooning": self._ballooning(),
            "ksmControl": self._ksm_control(),
            "inputs": self._inputs,
            "pending": sorted(f"{kind} {vm or 'host'}" for kind, vm in self._pending),
            "lastDecisions": [{**r, "ago": round(now - r["at"], 3)} for r in self._history],
        }

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Tick | Decide):
            self._decide()
        elif isinstance(message, _Outcome):
            self._outcome(message)
        else:
            return super().on_receive(message)
        return None

    # --- deciding ------------------------------------------------------------------------------

    def _ballooning(self) -> bool:
        switch = self._switches.get().ballooning
        return self._rules.rules.balloon.enabled if switch is None else switch

    def _ksm_control(self) -> bool:
        switch = self._switches.get().ksm
        return self._rules.rules.ksm.enabled if switch is None else switch

    def _decide(self) -> None:
        self._rules.refresh()
        rules = self._rules.rules
        host = host_input(self._host_stats.get(), os.cpu_count() or 1)
        vms = vm_inputs(self._board.views(), self._board.full_stats(), self._policies.all())
        ids = frozenset(vm.vm_id for vm in vms)
        self._policies.keep(ids)
        self._cpu_applied = {k: v for k, v in self._cpu_applied.items() if k in ids}
        under_pressure = host is not None and decide.pressure(
            host, rules.host.pressure_free_percent)
        self._inputs = {
            "host": None if host is None else {**host.to_wire(), "pressure": under_pressure},
            "ksm": self._ksm_board.host_stats(),
            "vms": {vm.vm_id: vm.to_wire() for vm in vms},
        }
        decisions = [*self._ksm_decision(host), *self._vm_decisions(vms, host, under_pressure)]
        self._decisions += 1
        self._last_at = time.monotonic()
        for decision in decisions:
            self._apply(decision)

    def _ksm_decision(self, host: HostInput | None) -> list[Decision]:
        state = self._ksm_board.state()
        if state is None or state.run is None or ("ksm", None) in self._pending:
            # a change of control meanwhile is seen once the write in flight is done
            return []
        controlled = self._ksm_control()
        was, self._ksm_controlled = self._ksm_controlled, controlled
        if not controlled:
            stop = decide.ksm_stop(state) if was else None
            return [stop] if stop is not None else []
        if host is None:
            return []
        found = decide.ksm(host, self._rules.rules.ksm, state,
                           self._switches.get().ksm_merge_across_nodes)
        return [found] if found is not None else []

    def _vm_decisions(self, vms: list[VmInput], host: HostInput | None,
                      under_pressure: bool) -> list[Decision]:
        rules = self._rules.rules
        found: list[Decision | None] = []
        ballooning = self._ballooning()
        for vm in vms:
            if ballooning and ("balloon", vm.vm_id) not in self._pending:
                found.append(decide.balloon(vm, under_pressure, rules.balloon))
            if host is not None and ("cpu", vm.vm_id) not in self._pending:
                found.append(decide.cpu(vm, host, rules.cpu, self._cpu_applied.get(vm.vm_id)))
        return [d for d in found if d is not None]

    # --- applying ------------------------------------------------------------------------------

    def _apply(self, decision: Decision) -> None:
        value = decision.value
        shown = dict(value.items()) if isinstance(value, KsmSettings) else \
            value.__dict__ if isinstance(value, CpuTune) else value
        record: dict[str, Any] = {"at": round(time.monotonic(), 3), "kind": decision.kind,
                                  "vmID": decision.vm_id, "value": shown,
                                  "reason": decision.reason, "outcome": "pending"}
        self._history.append(record)
        self._pending.add((decision.kind, decision.vm_id))
        log.info("policy: %s %s: %s", decision.kind, decision.vm_id or "host", decision.reason)
        me = self.actor_ref

        def report(error: BaseException | None, result: Any = None) -> None:
            _tell(me, _Outcome(record, decision, error, result))

        if decision.kind == "ksm":
            assert isinstance(value, KsmSettings)
            try:
                self.ctx.runtime.directory.ref(self._ksm_path).tell(
                    ApplyKsm(value, f"policy: {decision.reason}", report))
            except (VdsmError, pykka.ActorDeadError) as e:
                report(e)
            return
        assert self._caller is not None, "used before setup"
        try:
            self._caller.submit(
                f"{decision.kind}-{decision.vm_id}",
                lambda: _ask_vm(self.ctx.runtime.directory, self._vms_path, decision, report),
                timeout=APPLY_TIMEOUT, name=f"{decision.kind} of {decision.vm_id}")
        except Exception as e:  # noqa: BLE001 - refused (busy, closed): its outcome
            report(e)

    def _outcome(self, message: _Outcome) -> None:
        decision, record = message.decision, message.record
        self._pending.discard((decision.kind, decision.vm_id))
        if message.error is None:
            record["outcome"] = "applied"
            if decision.kind == "cpu" and isinstance(message.result, dict):
                self._cpu_applied[str(decision.vm_id)] = (message.result["quota"],
                                                          message.result["period"])
                record["result"] = message.result
            return
        record["outcome"] = f"failed: {message.error}"
        if decision.kind == "ksm" and not self._ksm_control():
            self._ksm_controlled = True  # the stop after control was turned off: again
        self._failures("policy: %s of %s failed: %s", decision.kind,
                       decision.vm_id or "the host", message.error)


def _ask_vm(directory: ActorDirectory, vms_path: str, decision: Decision,
            report: Callable[..., None]) -> None:
    """On a policy-apply thread: ask the VM's actor for the operation; its outcome is
    reported when the operation ends (the thread does not wait for it)."""
    try:
        proxy = typed_proxy(directory.ref(f"{vms_path}/{decision.vm_id}"), VmProxy)
        if decision.kind == "balloon":
            target = decision.value
            assert isinstance(target, int)
            asked = proxy.set_balloon_target(target)
        else:
            tune = decision.value
            assert isinstance(tune, CpuTune)
            asked = proxy.tune("policy: vcpuLimit", lambda ops: qos.set_cpu_tune(ops, tune))
        operation: Future[Any] = asked.get(timeout=ASK_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - VMBusy, VM gone, ...: the decision's outcome
        report(e)
        return

    def done(f: Future[Any]) -> None:
        error = f.exception()
        report(error, None if error is not None else f.result())

    operation.add_done_callback(done)


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    tell_or_drop(ref, message, log, "the policy actor")
