"""VM actors that stop: a crashed ``/vms`` supervisor and a given-up VM actor. The agent
regains its VMs by itself; meanwhile verbs answer a retryable code, never "no such VM", and
a VM.create for such a VM's id is refused without touching it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from messaging.client import ClientError
from tests.harness import Vdsmd, next_event, wait_for
from tests.vm import agent as a

pytestmark = pytest.mark.libvirt

RETRYABLE = {100, 102}


def until_it_answers(call: Callable[[], Any], timeout: float = 60) -> tuple[Any, set[int]]:
    """Call until it succeeds; the result and every error code seen meanwhile."""
    codes: set[int] = set()

    def attempt() -> Any:
        try:
            return (call(),)
        except ClientError as e:
            codes.add(e.code)
            return None

    found = wait_for(attempt, timeout, interval=0.1, what="an answer")
    return found[0], codes


def untouched(agent: Vdsmd, conn: libvirt.virConnect, vm_id: str, pid: int, name: str) -> None:
    """The VM is still the agent's: listed, indexed, its domain and qemu the same."""
    assert vm_id in {v["vmID"] for v in agent.call("Host.getVMList")}
    assert (agent.state_dir / "vms" / f"{vm_id}.vm.json").exists()
    assert a.domain_exists(conn, vm_id) and a.qemu_pid(name) == pid


@pytest.mark.timeout(180)
def test_a_crashed_vms_supervisor_regains_its_vms(
    agent: Vdsmd, conn: libvirt.virConnect,
) -> None:
    vms = {a.new_id(): a.bare_params(display="vnc") for _ in range(2)}
    for vm_id, params in vms.items():
        agent.call("VM.create", vmID=vm_id, vmParams=params)
    for vm_id in vms:
        a.wait_status(agent, vm_id, "Up")
    pids = {vm_id: a.qemu_pid(p["vmName"]) for vm_id, p in vms.items()}
    first, second = list(vms)
    with agent.subscriber("|actors|status|/vms") as sub:
        wait_for(lambda: agent.call("Host.ping"), 5)
        agent.call("Actors.crash", path="/vms", reason="drill")
        next_event(sub, lambda t, p: p["path"] == "/vms" and p["event"] == "restarted", 60)
    # At once, while the VM actors may still be missing: a create for a known id is refused
    # and changes nothing of the running VM.
    e = a.error(lambda: agent.call("VM.create", vmID=first, vmParams=a.bare_params()))
    assert e.code == 4, e.message
    untouched(agent, conn, first, pids[first], vms[first]["vmName"])
    # Verbs answer a retryable code until the actors are back, then work.
    for vm_id in vms:
        result, codes = until_it_answers(
            lambda v=vm_id: agent.call("VM.setTicket", vmID=v, password="pw", ttl=0))
        assert result is True and codes <= RETRYABLE, codes
    assert sorted(a.vm_actors(agent)) == sorted(f"/vms/{v}" for v in vms)
    assert agent.call("VM.pause", vmID=second) is True
    a.wait_status(agent, second, "Paused")
    assert a.status(agent, first)["status"] == "Up"
    for vm_id, params in vms.items():
        untouched(agent, conn, vm_id, pids[vm_id], params["vmName"])
        assert agent.call("VM.destroy", vmID=vm_id) is True
    assert agent.call("Host.getVMList") == []


@pytest.fixture
def fragile_agent(tmp_path: Path, hooks_dir: Path, conn: libvirt.virConnect,
                  ) -> Iterator[Vdsmd]:
    """A vdsmd whose supervisors give a child up at its second failure within a minute."""
    config = a.config(hooks_dir) + "[supervision]\nmax_restarts = 1\nwithin = 600.0\n"
    daemon = Vdsmd(tmp_path / "vdsmd", config=config)
    with a.started(conn, daemon):
        yield daemon


@pytest.mark.timeout(180)
def test_a_given_up_vm_actor_is_started_again(
    fragile_agent: Vdsmd, conn: libvirt.virConnect,
) -> None:
    agent = fragile_agent
    vm_id, params = a.new_id(), a.bare_params(display="vnc")
    agent.call("VM.create", vmID=vm_id, vmParams=params)
    a.wait_status(agent, vm_id, "Up")
    pid = a.qemu_pid(params["vmName"])
    path = f"/vms/{vm_id}"
    with agent.subscriber(f"|actors|status|{path}") as sub:
        wait_for(lambda: agent.call("Host.ping"), 5)
        agent.call("Actors.crash", path=path, reason="first")
        next_event(sub, lambda t, p: p["event"] == "restarted", 30)
        agent.call("Actors.crash", path=path, reason="second")
        next_event(sub, lambda t, p: p["event"] == "gave-up", 30)
        # Behind the agent's back while nobody watches the VM: its status must not freeze.
        conn.lookupByUUIDString(vm_id).suspend()
        try:
            agent.call("VM.setTicket", vmID=vm_id, password="pw", ttl=0)
        except ClientError as e:  # unless it is back already
            assert e.code in RETRYABLE, e.message
        e = a.error(lambda: agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params()))
        assert e.code == 4
        untouched(agent, conn, vm_id, pid, params["vmName"])
        next_event(sub, lambda t, p: p["event"] == "started", 60)
    a.wait_status(agent, vm_id, "Paused")
    actor = next(x for x in agent.call("Actors.list") if x["path"] == path)
    assert actor["state"] == "running"
    result, codes = until_it_answers(lambda: agent.call("VM.cont", vmID=vm_id))
    assert result is True and codes <= RETRYABLE, codes
    a.wait_status(agent, vm_id, "Up")
    assert a.qemu_pid(params["vmName"]) == pid
    assert agent.call("VM.destroy", vmID=vm_id) is True
    assert a.vm_actors(agent) == []
