"""Recovery: a SIGKILLed vdsmd finds its running VMs again; verbs wait for it (code 100);
a libvirt reconnect resynchronises the VMs whose events were missed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests import guest as g
from tests.harness import Vdsmd, next_event, running_vdsmd, wait_for
from tests.vm import agent as a
from tests.vm.test_api_lifecycle import assert_locked, live_xml

pytestmark = pytest.mark.libvirt


@pytest.mark.timeout(240)
def test_a_killed_agent_recovers_its_vms_without_touching_them(
    agent: Vdsmd, guest_image: g.GuestImage, tmp_path: Path, conn: libvirt.virConnect,
) -> None:
    guest_id, guest = a.new_id(), a.guest_params(guest_image)
    bare_id, bare = a.new_id(), a.bare_params(custom={"role": "db"}, display="vnc")
    gone_id, gone = a.new_id(), a.bare_params()
    agent.call("VM.create", vmID=guest_id, vmParams=guest)
    agent.call("VM.create", vmID=bare_id, vmParams=bare)
    agent.call("VM.create", vmID=gone_id, vmParams=gone)
    serial = a.serial_log(agent, guest_id)
    g.wait_for_marker(serial, g.MARKER_READY, a.BOOT_TIMEOUT)
    a.wait_status(agent, guest_id, "Up")
    agent.call("VM.pause", vmID=bare_id)
    pids = {v: a.qemu_pid(p["vmName"]) for v, p in ((guest_id, guest), (bare_id, bare))}

    agent.kill()  # SIGKILL: no chance to clean anything up
    os.kill(a.qemu_pid(gone["vmName"]), signal.SIGKILL)  # a VM ends while nobody watches
    wait_for(lambda: not a.domain_exists_by_name(conn, gone["vmName"]), 30)
    agent.start()
    a.wait_ready(agent)
    listed = {v["vmID"]: v for v in agent.call("Host.getVMList")}
    assert set(listed) == {guest_id, bare_id, gone_id}
    ended = a.status(agent, gone_id)
    assert (ended["status"], ended["exitReason"]) == ("Down", "unknown")
    assert ended["vmName"] == gone["vmName"]
    assert listed[guest_id]["status"] == "Up" and listed[guest_id]["vmName"] == guest["vmName"]
    paused = a.status(agent, bare_id)
    assert (paused["status"], paused["pauseCode"]) == ("Paused", "NOERR")
    assert {v: a.qemu_pid(p["vmName"]) for v, p in ((guest_id, guest), (bare_id, bare))} == pids
    assert serial.read_text().count(g.MARKER_BOOTED) == 1  # never rebooted
    assert sorted(a.vm_actors(agent)) == sorted(f"/vms/{v}" for v in listed)
    stats = wait_for(lambda: (s := a.status(agent, guest_id)).get("statsAge") is not None
                     and s, 30)
    assert stats["monitorResponse"] == 0 and stats["elapsedTime"] > 0

    # A recovered VM's display is as locked as before (nothing redefined it), and a ticket
    # opens it.
    assert_locked(conn, bare_id)
    assert agent.call("VM.setTicket", vmID=bare_id, password="after", ttl=60) is True
    graphics = live_xml(conn, bare_id, libvirt.VIR_DOMAIN_XML_SECURE).find("devices/graphics")
    assert graphics is not None and graphics.get("passwd") == "after"

    # Monitoring resumed: events flow and verbs act on the recovered VMs.
    with agent.subscriber(f"|virt|VM_status|{bare_id}") as sub:
        wait_for(lambda: agent.call("Host.ping"), 5)
        assert agent.call("VM.cont", vmID=bare_id) is True
        _, event = next_event(sub, lambda t, p: True, 30)
        assert event["status"] == "Up"

    # Another agent on the same libvirtd does not take these VMs for its own.
    with running_vdsmd(tmp_path / "other") as other:
        a.wait_ready(other)
        assert other.call("Host.getVMList") == []

    for vm_id in (guest_id, bare_id, gone_id):
        assert agent.call("VM.destroy", vmID=vm_id) is True
    assert agent.call("Host.getVMList") == []
    assert not list(agent.state_dir.glob("vms/*.vm.json"))  # the registry is empty again


@pytest.fixture
def private_libvirtd(tmp_path: Path) -> Iterator[a.GuestLibvirtd]:
    libvirtd = a.GuestLibvirtd(tmp_path / "libvirt")
    try:
        yield libvirtd
    finally:
        libvirtd.close()


@pytest.mark.root
@pytest.mark.timeout(120)
def test_vm_verbs_answer_recovering_until_the_first_pass(
    tmp_path: Path, private_libvirtd: a.GuestLibvirtd,
) -> None:
    config = "[libvirt]\nreconnect_max = 0.5\n"
    with running_vdsmd(tmp_path / "d", libvirt_uri=private_libvirtd.uri,
                       config=config) as vdsmd:
        # libvirtd is not there yet: the agent cannot know its VMs.
        for method, params in (("Host.getVMList", {}), ("Host.getAllVmStats", {}),
                               ("VM.getStats", {"vmID": a.new_id()}),
                               ("VM.create", {"vmID": a.new_id(),
                                              "vmParams": a.bare_params()})):
            e = a.error(lambda m=method, p=params: vdsmd.call(m, **p))
            assert e.code == 100, method
        assert vdsmd.call("Host.ping") is True
        assert vdsmd.call("Host.getStats")["vmCount"] == 0
        private_libvirtd.start()
        a.wait_ready(vdsmd)
        assert vdsmd.call("Host.getVMList") == []


@pytest.mark.root
@pytest.mark.timeout(180)
def test_a_libvirt_reconnect_resyncs_missed_changes(
    tmp_path: Path, private_libvirtd: a.GuestLibvirtd,
) -> None:
    private_libvirtd.start()
    config = ("[libvirt]\nreconnect_max = 0.5\n[vm]\npowering_up = 1.0\n"
              f'serial_log_dir = "{tmp_path / "vm-logs"}"\n')
    with running_vdsmd(tmp_path / "d", libvirt_uri=private_libvirtd.uri,
                       config=config) as vdsmd:
        a.wait_ready(vdsmd)
        dying, dying_params = a.new_id(), a.bare_params()
        living = a.new_id()
        vdsmd.call("VM.create", vmID=dying, vmParams=dying_params)
        vdsmd.call("VM.create", vmID=living, vmParams=a.bare_params())
        pid = a.qemu_pid(dying_params["vmName"], private_libvirtd.qemu_run_dir)
        private_libvirtd.kill()
        # While libvirtd is away its guests run on; one dies, and no event can tell.
        os.kill(pid, signal.SIGKILL)
        private_libvirtd.start()
        down = a.wait_status(vdsmd, dying, "Down")
        assert down["exitCode"] == 1
        assert a.status(vdsmd, living)["status"] == "Up"
        assert vdsmd.call("VM.pause", vmID=living) is True  # driven again after reconnect
        for vm_id in (dying, living):
            assert vdsmd.call("VM.destroy", vmID=vm_id) is True
