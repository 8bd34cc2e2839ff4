"""The policy actor in-process, with the real KSM actor writing a KSM directory served by
faultfs (so that a write can be held in flight), the rule file on disk and the boards as the
host and VM subsystems fill them. tests/policy/test_api_ksm.py and
tests/vm/test_api_balloon_policy.py run the same on the real sysfs and real guests; here the
order of events that is hard to hit there is made to happen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.base import ActorContext, Runtime
from actors.directory import RUNNING, ActorInfo
from actors.host.stats import LastSample
from actors.policy.actor import Decide, PolicyActor
from actors.policy.ksm import KsmSysfs
from actors.policy.ksmactor import KsmActor
from actors.policy.rules import RuleFile
from actors.policy.state import KsmBoard, Switches, VmPolicies
from actors.vm.board import VmBoard
from tests.faultfs.mounting import FaultFSMount
from tests.harness import wait_for
from tests.policy.test_ksm import fake_ksm

pytestmark = pytest.mark.timeout(60)
KSM_PATH = "/policy/ksm"


class Engine:
    """A KSM actor and a policy actor over a KSM directory, a rule file and the boards."""

    def __init__(self, runtime: Runtime, ksm_root: Path, rule_file: Path) -> None:
        self.runtime = runtime
        self.ksm_board = KsmBoard()
        self.host = LastSample()
        self.host.set({"memTotal": 1000, "memFree": 100})  # 10% free: memory is short
        self.switches = Switches()
        ksm: pykka.ActorRef[KsmActor] = KsmActor.start(
            ActorContext(path=KSM_PATH, runtime=runtime), board=self.ksm_board, interval=0.1,
            sysfs=KsmSysfs(ksm_root), write_timeout=20.0)
        runtime.directory.put(ActorInfo(KSM_PATH, "KsmActor", RUNNING, ksm, "/policy"))
        wait_for(self.ksm_board.state, 10, what="KSM's first sample")
        self.ref: pykka.ActorRef[PolicyActor] = PolicyActor.start(
            ActorContext(path="/policy/engine", runtime=runtime), interval=0.2,
            rules=RuleFile(rule_file), host_stats=self.host, board=VmBoard(),
            ksm_board=self.ksm_board, switches=self.switches, policies=VmPolicies(),
            ksm_path=KSM_PATH)

    def describe(self) -> dict[str, Any]:
        detail: dict[str, Any] = self.ref.proxy().describe().get(timeout=10)
        return detail


def test_ksm_control_turned_off_while_a_write_is_in_flight_still_stops_ksm(
    runtime: Runtime, faultfs: FaultFSMount, tmp_path: Path,
) -> None:
    mountpoint, control, source = faultfs
    source.rmdir()
    fake_ksm(source)  # run = 0
    rule_file = tmp_path / "policy.toml"
    rule_file.write_text("[ksm]\nenabled = true\nrun_below_free_percent = 20.0\n")
    control.hang("run", "write")  # the policy's first write (run = 1) stays in flight
    engine = Engine(runtime, mountpoint, rule_file)
    control.wait_blocked(1)
    wait_for(lambda: engine.describe()["pending"] == ["ksm host"], 10, what="write pending")
    # the management layer takes control away meanwhile
    engine.switches.update(ksm=False)
    engine.ref.tell(Decide("test"))
    decided = engine.describe()["decisions"]
    wait_for(lambda: engine.describe()["decisions"] >= decided + 3, 10, what="3 decisions")
    assert engine.describe()["ksmControl"] is False
    control.clear()  # the write lands: KSM runs, as the rules said before control went
    wait_for(lambda: (source / "run").read_text() == "1\n", 10, what="run = 1 written")
    # ... and the turned-off control stops it once that write is done
    wait_for(lambda: (source / "run").read_text() == "0\n", 10, what="KSM stopped")
    reasons = [d["reason"] for d in engine.describe()["lastDecisions"]]
    assert reasons[-1] == "KSM control turned off: stop", reasons
    # once: then KSM is the operator's
    (source / "run").write_text("1\n")
    decided = engine.describe()["decisions"]
    wait_for(lambda: engine.describe()["decisions"] >= decided + 3, 10, what="3 decisions")
    assert (source / "run").read_text() == "1\n"
    assert len(engine.describe()["lastDecisions"]) == 2


def test_a_stop_that_failed_is_tried_again(
    runtime: Runtime, faultfs: FaultFSMount, tmp_path: Path,
) -> None:
    mountpoint, control, source = faultfs
    source.rmdir()
    fake_ksm(source)
    rule_file = tmp_path / "policy.toml"
    rule_file.write_text("[ksm]\nenabled = true\nrun_below_free_percent = 20.0\n")
    engine = Engine(runtime, mountpoint, rule_file)
    wait_for(lambda: (source / "run").read_text() == "1\n", 10, what="KSM running")
    control.eio("run", "write", count=2)  # the kernel refuses the stop
    engine.switches.update(ksm=False)
    engine.ref.tell(Decide("test"))
    wait_for(lambda: (source / "run").read_text() == "0\n", 20, what="KSM stopped")

    def stops() -> list[dict[str, Any]]:
        return [d for d in engine.describe()["lastDecisions"]
                if d["reason"] == "KSM control turned off: stop"]

    wait_for(lambda: stops()[-1]["outcome"] == "applied", 10, what="the stop's outcome")
    outcomes = [d["outcome"].split(":")[0] for d in stops()]
    assert outcomes[0] == "failed" and outcomes[-1] == "applied", outcomes
    assert set(outcomes[:-1]) == {"failed"}
    assert "Input/output error" in stops()[0]["outcome"]
