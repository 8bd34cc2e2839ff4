"""Bad input and faults through vdsmd's API: clear errors, and nothing left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests import guest as g
from tests.harness import Vdsmd, next_event, wait_for
from tests.vm import agent as a

pytestmark = pytest.mark.libvirt


@pytest.mark.timeout(60)
def test_unknown_vm_and_invalid_params(agent: Vdsmd) -> None:
    unknown = a.new_id()
    for method, extra in (
        ("VM.destroy", {}), ("VM.pause", {}), ("VM.cont", {}), ("VM.reset", {}),
        ("VM.shutdown", {}), ("VM.getStats", {}), ("VM.changeCD", {"path": ""}),
        ("VM.setTicket", {"password": "x", "ttl": 1}),
        ("VM.hibernate", {"hiberVolHandle": "/tmp/x"}),
    ):
        e = a.error(lambda m=method, x=extra: agent.call(m, vmID=unknown, **x))
        assert e.code == 1, method
        assert unknown in e.message
    cases: list[tuple[dict[str, Any], str]] = [
        ({"vmName": "x"}, "vmParams.memSize"),
        ({**a.bare_params(), "memSize": "lots"}, "vmParams.memSize"),
        ({**a.bare_params(), "emulator": "xen"}, "vmParams.emulator"),
        ({**a.bare_params(), "vmName": "a b"}, "vmParams.vmName"),
        ({**a.bare_params(), "drives": [{"path": "relative.img"}]}, "vmParams.drives[0].path"),
        ({**a.bare_params(), "drives": [{"device": "disk"}]}, "vmParams.drives[0].path"),
        ({**a.bare_params(), "initrd": "/boot/initrd"}, "vmParams.kernel"),
        ({**a.bare_params(), "colour": "red"}, "vmParams.colour"),
    ]
    for params, field in cases:
        e = a.error(lambda p=params: agent.call("VM.create", vmID=a.new_id(), vmParams=p))
        assert e.code == -32602, params
        assert field in e.message, (field, e.message)
    e = a.error(lambda: agent.call("VM.create", vmID="../etc", vmParams=a.bare_params()))
    assert (e.code, "vmID" in e.message) == (-32602, True)
    assert a.vm_actors(agent) == []


@pytest.mark.timeout(120)
def test_failed_starts_leave_no_actor_no_domain_and_no_log(
    agent: Vdsmd, guest_image: g.GuestImage, hooks_dir: Path, conn: libvirt.virConnect,
    tmp_path: Path,
) -> None:
    def refused(params: dict[str, Any]) -> tuple[int, str]:
        vm_id = a.new_id()
        e = a.error(lambda: agent.call("VM.create", vmID=vm_id, vmParams=params))
        assert a.vm_actors(agent) == []
        assert agent.call("Host.getVMList") == []
        assert not a.domain_exists(conn, vm_id)
        assert not a.domain_exists_by_name(conn, params["vmName"])
        assert not a.serial_log(agent, vm_id).exists()  # no empty log left behind
        assert not list(agent.state_dir.glob("vms/*"))  # nor a registry entry
        return e.code, e.message

    code, message = refused(a.guest_params(guest_image, kernel="/nonexistent/vmlinuz"))
    assert code == -32602 and "vmParams.kernel" in message and "/nonexistent/vmlinuz" in message
    code, message = refused(a.bare_params(drives=[{"path": "/nonexistent/disk.img"}]))
    assert code == -32602 and "/nonexistent/disk.img" in message
    # qemu itself refuses this one, after libvirt opened the serial log. libvirt passes on
    # qemu's own words about the kernel, or, when qemu was gone before libvirt reached its
    # monitor (a fresh-clone run here saw that), only that it could not connect to it.
    garbage = tmp_path / "garbage-kernel"
    garbage.write_bytes(os.urandom(4096))
    code, message = refused(a.guest_params(guest_image, kernel=str(garbage)))
    assert code == 5 and ("kernel" in message or "monitor socket" in message), message

    hook = a.hook(hooks_dir, "before_vm_start", "50_refuse", "echo 'no room' >&2; exit 3\n")
    code, message = refused(a.bare_params())
    assert code == 6
    assert "before_vm_start/50_refuse" in message and "no room" in message
    hook.write_text("#!/bin/sh\nsleep 60\n")
    code, message = refused(a.bare_params())
    assert code == 6 and "before_vm_start/50_refuse" in message and "timed out" in message
    hook.unlink()

    # A hook failing after the start: the VM it started is destroyed again.
    a.hook(hooks_dir, "after_vm_start", "50_refuse", "exit 1\n")
    code, message = refused(a.bare_params())
    assert code == 6 and "after_vm_start/50_refuse" in message


@pytest.mark.timeout(120)
def test_existing_vm_id_and_name_are_refused(agent: Vdsmd) -> None:
    vm_id, params = a.new_id(), a.bare_params()
    agent.call("VM.create", vmID=vm_id, vmParams=params)
    e = a.error(lambda: agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params()))
    assert e.code == 4 and vm_id in e.message
    other = a.new_id()
    e = a.error(lambda: agent.call("VM.create", vmID=other, vmParams=dict(params)))
    assert e.code == 5 and params["vmName"] in e.message
    assert [v["vmID"] for v in agent.call("Host.getVMList")] == [vm_id]
    assert a.vm_actors(agent) == [f"/vms/{vm_id}"]
    assert agent.call("VM.destroy", vmID=vm_id) is True


@pytest.mark.timeout(120)
def test_a_crashed_vm_actor_is_restarted_and_reattaches(agent: Vdsmd) -> None:
    vm_id, params = a.new_id(), a.bare_params()
    agent.call("VM.create", vmID=vm_id, vmParams=params)
    a.wait_status(agent, vm_id, "Up")
    pid = a.qemu_pid(params["vmName"])
    path = f"/vms/{vm_id}"
    with agent.subscriber(f"|actors|status|{path}") as sub:
        wait_for(lambda: agent.call("Host.ping"), 5)
        agent.call("Actors.crash", path=path, reason="drill")
        _, failed = next_event(sub, lambda t, p: p["event"] == "failed", 30)
        assert "drill" in failed["reason"]
        next_event(sub, lambda t, p: p["event"] == "restarted", 30)
    actor = next(x for x in agent.call("Actors.list") if x["path"] == path)
    assert actor["restarts"] == 1 and actor["state"] == "running"
    detail = wait_for(lambda: (d := agent.call("Actors.inspect", path=path)["detail"])
                      and not d["operations"] and d, 30)
    assert detail["status"] == "Up" and detail["vmName"] == params["vmName"]
    assert a.qemu_pid(params["vmName"]) == pid  # the guest was not touched
    # The new incarnation drives the same domain.
    assert agent.call("VM.pause", vmID=vm_id) is True
    assert a.status(agent, vm_id)["status"] == "Paused"
    assert agent.call("VM.cont", vmID=vm_id) is True
    assert agent.call("VM.destroy", vmID=vm_id) is True
    assert a.vm_actors(agent) == []


@pytest.mark.timeout(120)
def test_a_qemu_killed_under_its_vm_goes_down_with_a_reason(agent: Vdsmd) -> None:
    vm_id, params = a.new_id(), a.bare_params()
    with agent.subscriber(f"|virt|VM_status|{vm_id}") as sub:
        wait_for(lambda: agent.call("Host.ping"), 5)
        agent.call("VM.create", vmID=vm_id, vmParams=params)
        os.kill(a.qemu_pid(params["vmName"]), signal.SIGKILL)
        _, down = next_event(sub, lambda t, p: p["status"] == "Down", 60)
    assert (down["exitReason"], down["exitCode"]) == ("qemu-died", 1)
    assert down["exitMessage"]
    stats = a.status(agent, vm_id)
    assert (stats["status"], stats["exitReason"]) == ("Down", "qemu-died")
    assert a.error(lambda: agent.call("VM.pause", vmID=vm_id)).code == 5
    assert agent.call("VM.destroy", vmID=vm_id) is True
    assert agent.call("Host.getVMList") == []
