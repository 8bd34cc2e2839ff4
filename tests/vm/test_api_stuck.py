"""A live-locked qemu (SIGSTOPped) is reported and contained; everything else keeps going."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Vdsmd, wait_for
from tests.vm import agent as a

pytestmark = pytest.mark.libvirt
CALL_TIMEOUT = 3.0


@pytest.fixture
def vm_settings() -> dict[str, Any]:
    return {"call_timeout": CALL_TIMEOUT}


def monitor(agent: Vdsmd, vm_id: str) -> int:
    return int(a.status(agent, vm_id)["monitorResponse"])


def sampled(agent: Vdsmd, vm_id: str) -> bool:
    stats = a.status(agent, vm_id)
    return stats.get("statsAge") is not None and stats["monitorResponse"] == 0


@pytest.mark.timeout(180)
def test_a_stopped_qemu_is_reported_and_hurts_nobody(agent: Vdsmd) -> None:
    stuck_id, stuck = a.new_id(), a.bare_params()
    other_id = a.new_id()
    agent.call("VM.create", vmID=stuck_id, vmParams=stuck)
    agent.call("VM.create", vmID=other_id, vmParams=a.bare_params())
    wait_for(lambda: sampled(agent, stuck_id) and sampled(agent, other_id), 30)
    pid = a.qemu_pid(stuck["vmName"])

    with a.stopped(pid):
        wait_for(lambda: monitor(agent, stuck_id) == -1, 30, what="monitorResponse -1")
        # Host-wide reads, the other VM and the API itself answer (within the client's
        # short timeout: a hang would be a CallTimeout, not a slow pass).
        with agent.client(timeout=5) as client:
            assert client.call("Host.ping") is True
            everything = {s["vmID"]: s for s in client.call("Host.getAllVmStats")}
            assert everything[stuck_id]["monitorResponse"] == -1
            assert everything[stuck_id]["status"] == "Up"
            # (libvirt answers for the other VM too; a sample taken while another libvirt
            # client briefly held its job may lag: wait for one, boundedly)
            wait_for(lambda: {s["vmID"]: s["monitorResponse"]
                              for s in client.call("Host.getAllVmStats")}[other_id] == 0, 30)
            assert client.call("VM.pause", {"vmID": other_id}) is True
            assert client.call("VM.cont", {"vmID": other_id}) is True
            assert "cpuIdle" in client.call("Host.getStats")
        # The other VM's stats stay fresh: a new sample shows up while this one is stuck.
        age = a.status(agent, other_id)["statsAge"]
        wait_for(lambda: a.status(agent, other_id)["statsAge"] < age, 30)
        wait_for(lambda: monitor(agent, other_id) == 0, 30)

        # A call into the stuck qemu times out with a clear error instead of hanging...
        with agent.client(timeout=CALL_TIMEOUT + 20) as client:
            e = a.error(lambda: client.call("VM.pause", {"vmID": stuck_id}))
            assert e.code == 5 and "not responding" in e.message and "VM.pause" in e.message
            # ... and the next one is refused at once while the first is still stuck.
            e = a.error(lambda: client.call("VM.reset", {"vmID": stuck_id}))
            assert e.code == 5 and "still running" in e.message
        inspect = agent.call("Actors.inspect", path=f"/vms/{stuck_id}")
        assert inspect["answering"] is True
        assert inspect["detail"]["calls"]["abandonedTotal"] == 1

    # SIGCONT: back to normal. The abandoned pause did happen, late.
    wait_for(lambda: monitor(agent, stuck_id) == 0, 30, what="monitorResponse 0")
    a.wait_status(agent, stuck_id, "Paused")
    wait_for(lambda: not agent.call("Actors.inspect", path=f"/vms/{stuck_id}")["detail"][
        "calls"]["inFlight"], 30)
    assert agent.call("VM.cont", vmID=stuck_id) is True
    assert a.status(agent, stuck_id)["status"] == "Up"
    for vm_id in (stuck_id, other_id):
        assert agent.call("VM.destroy", vmID=vm_id) is True


@pytest.mark.timeout(120)
def test_a_stopped_qemu_can_still_be_destroyed(agent: Vdsmd) -> None:
    vm_id, params = a.new_id(), a.bare_params()
    agent.call("VM.create", vmID=vm_id, vmParams=params)
    with a.stopped(a.qemu_pid(params["vmName"])):
        assert agent.call("VM.destroy", vmID=vm_id, timeout=90) is True
    assert agent.call("Host.getVMList") == []
