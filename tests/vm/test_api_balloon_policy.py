"""The policy's ballooning on real TCG guests: under host pressure (the threshold set so that
this host, with most of its memory free, counts as under pressure) an idle guest's balloon
is shrunk down to its guarantee while a guest that allocates memory gets memory back until
its allocation is done; neither goes below its ``minGuaranteedMemoryMb`` nor above its
``memSize``. ``Host.setMOMPolicyParameters`` turns ballooning on (the rule file has it off)
and off, ``VM.updateVmPolicy`` raises a guarantee, and the policy's inputs and decisions show
in ``Actors.inspect``.

What the balloons hold is read from libvirt (``balloon_cur``: what the guest has now), the
guest's own view from its serial console (the alloc mode prints what it allocated).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests import guest as g
from tests.harness import Vdsmd, wait_for
from tests.vm import agent as a

pytestmark = [pytest.mark.libvirt, pytest.mark.root]
log = logging.getLogger(__name__)
MIB = 1024  # KiB
MEM = 160  # MiB, each guest's memSize
IDLE_FLOOR = 112  # MiB: the idle guest's guarantee (above what it keeps free for itself)
BUSY_FLOOR = 128
# The busy guest allocates this much once the pressure shrank it to its guarantee (its
# MemTotal is then ~90 MiB, the balloon minus ~38 MiB: under SHRUNK_BELOW, which it is not
# at the step above, 144 MiB): more than it has there (~61 MiB available), less than at MEM
# (~93 MiB). Starting only at its floor, it cannot be shrunk
# while it allocates (a shrink decided on stats a second old would take what it just
# took: under load, that ran the guest out of memory).
ALLOC = 70
SHRUNK_BELOW = 95
# It allocates only while it keeps RESERVE MiB available: under the rule's 10% (of 128..160
# MiB), so that it asks for memory, and enough that its kernel never runs out meanwhile.
RESERVE = 10

RULES = """\
[host]
pressure_free_percent = 100.0  # under pressure while less than all of its memory is free
[balloon]
enabled = false  # Host.setMOMPolicyParameters turns it on
max_change_percent = 10.0
min_change_percent = 0.5
min_free_percent = 20.0
grow_below_free_percent = 10.0
"""


@pytest.fixture
def policy_agent(tmp_path: Path, hooks_dir: Path, conn: libvirt.virConnect) -> Iterator[Vdsmd]:
    rule_file = tmp_path / "policy.toml"
    rule_file.write_text(RULES)
    daemon = Vdsmd(tmp_path / "vdsmd", config=a.config(hooks_dir, stats_interval=1.0) +
                   f"[host]\nstats_interval = 1.0\n"
                   f"[policy]\ninterval = 1.0\nrules = \"{rule_file}\"\n")
    with a.started(conn, daemon):
        yield daemon


def engine(agent: Vdsmd) -> dict[str, Any]:
    return dict(agent.call("Actors.inspect", path="/policy/engine")["detail"])


def balloon_decisions(agent: Vdsmd, vm_id: str) -> list[dict[str, Any]]:
    return [d for d in engine(agent)["lastDecisions"]
            if d["kind"] == "balloon" and d["vmID"] == vm_id]


class Watch:
    """Each VM's balloon_cur as libvirt reports it, polled; the least and most seen."""

    def __init__(self, agent: Vdsmd, vm_ids: dict[str, str]) -> None:
        self.agent = agent
        self.vm_ids = vm_ids
        self.least: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.last: dict[str, int] = {}

    def poll(self) -> dict[str, int]:
        for stats in self.agent.call("Host.getAllVmStats"):
            name = self.vm_ids.get(stats["vmID"])
            cur = (stats.get("balloonInfo") or {}).get("balloon_cur")
            if name is None or cur is None:
                continue
            self.last[name] = int(cur)
            self.least[name] = min(self.least.get(name, cur), int(cur))
            self.most[name] = max(self.most.get(name, cur), int(cur))
        return self.last

    def until(self, what: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if check():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what}: balloons {self.last}, least {self.least}")
            time.sleep(0.25)


@pytest.mark.timeout(420)
def test_an_idle_guest_is_shrunk_a_busy_one_grown_back_within_their_bounds(
    policy_agent: Vdsmd, guest_image: g.GuestImage, conn: libvirt.virConnect,
) -> None:
    agent = policy_agent
    idle, busy = a.new_id(), a.new_id()
    agent.call("VM.create", vmID=idle, vmParams=a.guest_params(
        guest_image, memSize=MEM, minGuaranteedMemoryMb=IDLE_FLOOR))
    agent.call("VM.create", vmID=busy, vmParams=a.guest_params(
        guest_image, memSize=MEM, minGuaranteedMemoryMb=BUSY_FLOOR,
        kernelArgs=g.kernel_cmdline("alloc", mib=ALLOC, chunk=2, reserve=RESERVE,
                                    below=SHRUNK_BELOW)))
    busy_log = a.serial_log(agent, busy)
    for vm_id in (idle, busy):
        g.wait_for_marker(a.serial_log(agent, vm_id), g.MARKER_READY, a.BOOT_TIMEOUT)
    watch = Watch(agent, {idle: "idle", busy: "busy"})

    # --- ballooning off (the rule file): under pressure, nothing moves --------------------
    watch.until("both guests report their memory", lambda: all(
        vm["guestFree"] for vm in engine(agent)["inputs"]["vms"].values()), 60)
    decided = engine(agent)["decisions"]
    wait_for(lambda: engine(agent)["decisions"] >= decided + 3, 30, what="3 decisions")
    detail = engine(agent)
    assert detail["ballooning"] is False and detail["inputs"]["host"]["pressure"] is True
    assert watch.poll() == {"idle": MEM * MIB, "busy": MEM * MIB}
    assert not balloon_decisions(agent, idle) and not balloon_decisions(agent, busy)
    inputs = detail["inputs"]["vms"]
    assert inputs[idle]["guaranteedMb"] == IDLE_FLOOR and inputs[busy]["memSize"] == MEM

    # --- on: the idle guest goes down to its guarantee, the busy one gets memory back -----
    assert agent.call("Host.setMOMPolicyParameters",
                      key_value_store={"ballooningEnabled": True}) is True
    assert engine(agent)["ballooning"] is True
    g.wait_for_marker(busy_log, "VDSM-GUEST ALLOC-SHRUNK", 120)
    watch.until("the idle guest at its guarantee",
                lambda: watch.last.get("idle") == IDLE_FLOOR * MIB, 120)
    # it allocates only once at its guarantee: the policy took it there. Its least balloon
    # is read from the decisions applied too: under load, the polled stats can miss the
    # moment it sat at its floor before the policy grew it back.
    applied = [d["value"] for d in balloon_decisions(agent, busy) if d["outcome"] == "applied"]
    shrunk = min([watch.least["busy"], *applied])
    assert shrunk == BUSY_FLOOR * MIB, (watch.least, applied)
    g.wait_for_marker(busy_log, f"VDSM-GUEST ALLOC-DONE {ALLOC}", 240)
    watch.poll()
    grown = balloon_decisions(agent, busy)
    log.warning("balloons: idle %d..%d MiB (now %d), busy %d..%d MiB (now %d); busy's "
                "decisions: %s", watch.least["idle"] // MIB, watch.most["idle"] // MIB,
                watch.last["idle"] // MIB, watch.least["busy"] // MIB,
                watch.most["busy"] // MIB, watch.last["busy"] // MIB,
                [d["reason"] for d in grown])
    assert any("needs memory" in d["reason"] and d["outcome"] == "applied" for d in grown)
    assert watch.last["busy"] > shrunk  # the busy guest got memory back ...
    assert any(d["value"] >= shrunk + 16 * MIB for d in grown  # a step of max_change_percent
               if "needs memory" in d["reason"] and d["outcome"] == "applied"), grown
    # ... and its balloon gets there (under load, the guest may finish allocating while its
    # balloon still deflates towards the target: seen at 131 of 144 MiB)
    watch.until("the busy guest's balloon a step above its guarantee",
                lambda: watch.last["busy"] >= shrunk + 16 * MIB, 60)
    assert "Out of memory" not in busy_log.read_text()  # ... before it ran out
    # the idle one was never grown: no guest needs its memory back
    assert not any("needs memory" in d["reason"] for d in balloon_decisions(agent, idle))

    # --- the bounds: every target and every balloon seen -----------------------------------
    for vm_id, name, floor in ((idle, "idle", IDLE_FLOOR), (busy, "busy", BUSY_FLOOR)):
        assert watch.least[name] >= floor * MIB, (name, watch.least)
        assert watch.most[name] <= MEM * MIB, (name, watch.most)
        for d in balloon_decisions(agent, vm_id):
            assert floor * MIB <= d["value"] <= MEM * MIB, d
        assert conn.lookupByUUIDString(vm_id).info()[2] >= floor * MIB  # libvirt's view

    # --- a guarantee raised: given at once; hostile values refused ----------------------
    for value in (MEM + 1, -1, "lots", 10**12):
        e = a.error(functools.partial(agent.call, "VM.updateVmPolicy", vmID=idle,
                                      params={"minGuaranteedMemoryMb": value}))
        assert e.code == -32602 and "'params.minGuaranteedMemoryMb'" in e.message, e.message
    assert engine(agent)["inputs"]["vms"][idle]["guaranteedMb"] == IDLE_FLOOR
    assert agent.call("VM.updateVmPolicy", vmID=idle,
                      params={"minGuaranteedMemoryMb": 128}) is True
    watch.until("the idle guest at its new guarantee",
                lambda: watch.last.get("idle") == 128 * MIB, 60)
    assert engine(agent)["inputs"]["vms"][idle]["guaranteedMb"] == 128
    assert any("below its guarantee 128 MiB" in d["reason"]
               for d in balloon_decisions(agent, idle))

    # --- off: the balloons stay where they are -------------------------------------------
    assert agent.call("Host.setMOMPolicyParameters",
                      key_value_store={"ballooningEnabled": False}) is True
    before = len([d for d in engine(agent)["lastDecisions"] if d["kind"] == "balloon"])
    decided = engine(agent)["decisions"]
    # a lower guarantee would let the idle guest shrink again, were ballooning on
    assert agent.call("VM.updateVmPolicy", vmID=idle,
                      params={"minGuaranteedMemoryMb": IDLE_FLOOR}) is True
    wait_for(lambda: engine(agent)["decisions"] >= decided + 3, 30, what="3 decisions")
    assert len([d for d in engine(agent)["lastDecisions"] if d["kind"] == "balloon"]) == before
    assert watch.poll()["idle"] == 128 * MIB
