"""Every lifecycle verb of PROTOCOL.md on a real TCG guest, through vdsmd's API and events."""

from __future__ import annotations

import stat
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest

from actors.vm import domxml
from messaging.client import Subscriber
from tests import guest as g
from tests.harness import Vdsmd, next_event, wait_for
from tests.vm import agent as a

pytestmark = pytest.mark.libvirt
MIB = 1 << 20


def statuses(sub: Subscriber, vm_id: str, until: str, timeout: float = 60) -> list[str]:
    """The VM_status events of ``vm_id`` up to and including the first ``until``."""
    seen: list[str] = []
    while not seen or seen[-1] != until:
        _, payload = next_event(sub, lambda t, p: p.get("vmID") == vm_id, timeout)
        seen.append(payload["status"])
    return seen


def wait_job(agent: Vdsmd, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """The job once it ended (Host.getJobs)."""
    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] | None = agent.call("Host.getJobs", job_ids=[job_id]).get(job_id)
        assert job is not None, f"no job {job_id}"
        return job if job["status"] in ("done", "failed", "aborted") else None

    found: dict[str, Any] = wait_for(ended, timeout, interval=0.1, what=f"job {job_id}")
    return found


def live_xml(conn: libvirt.virConnect, vm_id: str, flags: int = 0) -> ET.Element:
    return ET.fromstring(conn.lookupByUUIDString(vm_id).XMLDesc(flags))


def stored_params(conn: libvirt.virConnect, vm_id: str) -> dict[str, Any]:
    text = conn.lookupByUUIDString(vm_id).metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                                                   domxml.METADATA_NS)
    params = domxml.parse_metadata(text)
    assert params is not None
    return params


def assert_locked(conn: libvirt.virConnect, vm_id: str) -> None:
    """The VM's VNC display has a password that expired long ago."""
    graphics = live_xml(conn, vm_id, libvirt.VIR_DOMAIN_XML_SECURE).find("devices/graphics")
    assert graphics is not None
    assert graphics.get("passwd"), "the display has no password"
    valid_to = graphics.get("passwdValidTo", "")
    assert valid_to and valid_to < time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), valid_to


def media(conn: libvirt.virConnect, vm_id: str, device: str) -> str | None:
    source = live_xml(conn, vm_id).find(f"devices/disk[@device='{device}']/source")
    return None if source is None else source.get("file")


@pytest.mark.timeout(240)
def test_lifecycle_verbs_hooks_and_events(
    agent: Vdsmd, guest_image: g.GuestImage, hooks_dir: Path, conn: libvirt.virConnect,
    tmp_path: Path,
) -> None:
    ran = tmp_path / "hooks.log"
    a.hook(hooks_dir, "before_vm_start", "10_describe",
           f'echo "before_vm_start $vmId $custom_team $team" >> {ran}\n'
           'sed -i "s|</domain>|<description>hooked</description></domain>|" '
           '"$_hook_domxml"\n')
    for name in ("after_vm_start", "before_vm_pause", "after_vm_cont", "before_vm_set_ticket",
                 "before_vm_shutdown", "after_vm_destroy"):
        a.hook(hooks_dir, name, "10_log", f'echo "{name} $vmId" >> {ran}\n')
    vm_id = a.new_id()
    params = a.guest_params(guest_image, display="vnc", custom={"team": "blue"},
                            drives=[{"device": "cdrom"}, {"device": "floppy"}])
    with agent.subscriber(f"|virt|VM_status|{vm_id}") as sub:
        wait_for(lambda: agent.call("Host.ping"), 5)
        created = agent.call("VM.create", vmID=vm_id, vmParams=params)
        assert created["vmID"] == vm_id
        assert created["status"] in ("Powering up", "Up")
        assert statuses(sub, vm_id, "Up") == ["WaitForLaunch", "Powering up", "Up"]
        g.wait_for_marker(a.serial_log(agent, vm_id), g.MARKER_READY, a.BOOT_TIMEOUT)

        # The hooks ran with the VM id and its custom properties; the rewrite took effect.
        assert f"before_vm_start {vm_id} blue \n" in ran.read_text()  # only as custom_team
        assert f"after_vm_start {vm_id}" in ran.read_text()
        assert live_xml(conn, vm_id).findtext("description") == "hooked"
        assert stored_params(conn, vm_id)["vmName"] == params["vmName"]

        # Reads: one VM, with the stats of PROTOCOL.md, under every name.
        stats = wait_for(lambda: (s := a.status(agent, vm_id)).get("statsAge") is not None
                         and s, 30)
        for key in ("vmID", "status", "cpuUser", "cpuSys", "memUsage", "disks", "network",
                    "monitorResponse", "elapsedTime"):
            assert key in stats, key
        assert stats["monitorResponse"] == 0 and stats["status"] == "Up"
        assert agent.call("getVmStats", vmID=vm_id)[0]["vmID"] == vm_id
        assert agent.call("Host.getVMList") == [
            {"vmID": vm_id, "vmName": params["vmName"], "status": "Up"}]
        assert agent.call("list", fullStatus=True)[0]["monitorResponse"] == 0
        assert [s["vmID"] for s in agent.call("getAllVmStats")] == [vm_id]
        host = agent.call("Host.getStats")
        assert (host["vmCount"], host["vmActive"]) == (1, 1)

        # Pause and continue (2011 names), each confirmed by an event.
        assert agent.call("pause", vmID=vm_id) is True
        _, paused = next_event(sub, lambda t, p: True, 30)
        assert (paused["status"], paused["pauseCode"]) == ("Paused", "NOERR")
        assert a.status(agent, vm_id)["pauseCode"] == "NOERR"
        assert agent.call("continue", vmID=vm_id) is True
        assert statuses(sub, vm_id, "Up") == ["Up"]
        assert "pauseCode" not in a.status(agent, vm_id)

        # A VNC ticket, CD-ROM and floppy media in and out, a reset.
        assert_locked(conn, vm_id)
        assert agent.call("setVmTicket", vmID=vm_id, password="s3cret", ttl=120) is True
        secure = live_xml(conn, vm_id, libvirt.VIR_DOMAIN_XML_SECURE)
        graphics = secure.find("devices/graphics")
        assert graphics is not None and graphics.get("passwd") == "s3cret"
        device = {"deviceType": "graphics", "graphicsType": "vnc", "password": "0ther",
                  "ttl": 60}
        assert agent.call("VM.updateDevice", vmID=vm_id, params=device) is True
        graphics = live_xml(conn, vm_id, libvirt.VIR_DOMAIN_XML_SECURE).find("devices/graphics")
        assert graphics is not None and graphics.get("passwd") == "0ther"
        for bad in ({**device, "deviceType": "disk"}, {**device, "password": "x\x01"},
                    {**device, "passwd": "x"}):
            assert a.error(lambda b=bad: agent.call("VM.updateDevice", vmID=vm_id,
                                                    params=b)).code == -32602
        iso, img = tmp_path / "cd.iso", tmp_path / "fd.img"
        iso.write_bytes(b"\0" * MIB)
        img.write_bytes(b"\0" * 1440 * 1024)
        assert agent.call("changeCD", vmID=vm_id, path=str(iso)) is True
        assert media(conn, vm_id, "cdrom") == str(iso)
        assert stored_params(conn, vm_id)["drives"][0]["path"] == str(iso)
        assert agent.call("VM.changeFloppy", vmID=vm_id, path=str(img)) is True
        assert media(conn, vm_id, "floppy") == str(img)
        assert agent.call("VM.changeCD", vmID=vm_id, path="") is True
        assert media(conn, vm_id, "cdrom") is None
        assert stored_params(conn, vm_id)["drives"][0]["path"] == ""
        assert agent.call("VM.changeFloppy", vmID=vm_id, path="") is True
        assert media(conn, vm_id, "floppy") is None
        serial = a.serial_log(agent, vm_id)
        before_reset = serial.stat().st_size
        assert agent.call("VM.reset", vmID=vm_id) is True
        assert a.status(agent, vm_id)["status"] == "Up"
        g.wait_for_marker(serial, g.MARKER_READY, a.BOOT_TIMEOUT, offset=before_reset)

        # This guest runs no guest agent: the stats say so, its verbs refuse at once, and a
        # shutdown falls back to the ACPI power button: the guest powers itself off.
        assert a.status(agent, vm_id)["guestAgent"] == "disconnected"
        lock = a.error(lambda: agent.call("VM.desktopLock", vmID=vm_id))
        assert lock.code == 5 and "is disconnected" in lock.message
        offset = serial.stat().st_size
        assert agent.call("shutdown", vmID=vm_id, delay=120, message="bye") is True
        assert statuses(sub, vm_id, "Down") == ["Powering down", "Down"]
        g.wait_for_marker(serial, g.MARKER_ACPI_SHUTDOWN, 10, offset=offset)
        down = a.status(agent, vm_id)
        assert (down["exitReason"], down["exitCode"]) == ("shutdown", 0)
        assert agent.call("Host.getStats")["vmActive"] == 0

        # Destroy removes the Down VM: its actor, its entry, and the id can be used again.
        assert agent.call("destroy", vmID=vm_id) is True
    assert agent.call("Host.getVMList") == []
    assert a.vm_actors(agent) == []
    assert a.error(lambda: agent.call("VM.getStats", vmID=vm_id)).code == 1
    log = ran.read_text()
    for name in ("before_vm_pause", "after_vm_cont", "before_vm_set_ticket",
                 "before_vm_shutdown"):
        assert f"{name} {vm_id}" in log, name
    assert f"after_vm_destroy {vm_id}" not in log  # the guest powered off: nothing destroyed


@pytest.mark.timeout(120)
def test_a_forced_shutdown_destroys_a_guest_that_ignores_it(agent: Vdsmd) -> None:
    vm_id = a.new_id()
    with agent.subscriber(f"|virt|VM_status|{vm_id}") as sub:
        wait_for(lambda: agent.call("Host.ping"), 5)
        agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params())  # no OS: no ACPI
        # Up first ([vm] powering_up = 1 s after the start): a shutdown whose call took
        # longer than that saw the boot's Up before its Powering down, one that took less
        # did not, and the first Up is what statuses() stops at.
        statuses(sub, vm_id, "Up")
        # Not forced: after the delay the guest is Up again, untouched.
        assert agent.call("VM.shutdown", vmID=vm_id, delay=1) is True
        assert statuses(sub, vm_id, "Up") == ["Powering down", "Up"]
        assert agent.call("VM.shutdown", vmID=vm_id, delay=1, force=True) is True
        assert statuses(sub, vm_id, "Down") == ["Powering down", "Down"]
    down = a.status(agent, vm_id)
    assert (down["status"], down["exitReason"]) == ("Down", "destroyed")
    assert agent.call("VM.destroy", vmID=vm_id) is True


@pytest.mark.timeout(120)
def test_a_forced_reboot_resets_a_guest_that_ignores_it(agent: Vdsmd) -> None:
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params())  # no OS: no ACPI
    a.wait_status(agent, vm_id, "Up")
    # Not forced: after the delay the guest is left as it is (no reset, so no reboot event).
    assert agent.call("VM.reboot", vmID=vm_id, delay=1) is True
    wait_for(lambda: f"VM {vm_id} did not reboot in time (not forced)" in agent.log(), 30,
             what="the reboot's deadline")
    assert f"VM {vm_id} rebooted" not in agent.log()
    # Forced: reset at the deadline; QEMU's reset comes back as libvirt's reboot event.
    assert agent.call("VM.reboot", vmID=vm_id, delay=1, force=True) is True
    wait_for(lambda: f"VM {vm_id} rebooted" in agent.log(), 30, what="the reset")
    assert f"VM {vm_id} did not reboot in time: resetting it" in agent.log()
    assert a.status(agent, vm_id)["status"] == "Up"
    assert agent.call("VM.destroy", vmID=vm_id) is True


@pytest.mark.timeout(240)
def test_hibernate_then_restore_the_same_guest(
    agent: Vdsmd, guest_image: g.GuestImage, hooks_dir: Path, tmp_path: Path,
    conn: libvirt.virConnect,
) -> None:
    ran = tmp_path / "hooks.log"
    for name in ("before_vm_hibernate", "after_vm_hibernate", "before_vm_dehibernate",
                 "after_vm_restore"):
        a.hook(hooks_dir, name, "10_log", f'echo "{name} $vmId" >> {ran}\n')
    vm_id, state = a.new_id(), a.hibernation_dir(agent) / "state.save"
    params = a.guest_params(guest_image, display="vnc")
    with agent.subscriber(f"|virt|VM_status|{vm_id}") as sub:
        wait_for(lambda: agent.call("Host.ping"), 5)
        agent.call("VM.create", vmID=vm_id, vmParams=params)
        serial = a.serial_log(agent, vm_id)
        g.wait_for_marker(serial, g.MARKER_READY, a.BOOT_TIMEOUT)
        statuses(sub, vm_id, "Up")

        saving = a.new_id()
        assert agent.call("hibernate", vmID=vm_id, hiberVolHandle=str(state),
                          jobID=saving) is True  # a job: it answers once the save started
        assert statuses(sub, vm_id, "Down") == ["Saving State", "Down"]
        job = wait_job(agent, saving)
        assert (job["job_type"], job["status"], job["vmID"]) == ("hibernate", "done", vm_id)
        assert a.status(agent, vm_id)["exitReason"] == "saved"
        assert state.stat().st_size > MIB
        assert stat.S_IMODE(state.stat().st_mode) == 0o600  # the guest's memory: root's only
        assert not a.domain_exists(conn, vm_id)
        assert agent.call("VM.destroy", vmID=vm_id) is True

        restoring = a.new_id()
        restored = agent.call("VM.create", vmID=vm_id, jobID=restoring,
                              vmParams={**params, "restoreState": str(state)})
        assert restored == {"vmID": vm_id, "status": "Restoring state"}  # a job too
        assert wait_job(agent, restoring)["status"] == "done"
        a.wait_status(agent, vm_id, "Up")
        # A restored VM reports its uptime (since the restore) and its display like any
        # other: the stats of a later sample carry them
        stats = wait_for(lambda: (s := a.status(agent, vm_id)).get("elapsedTime") is not None
                         and s, 30, 0.1, "elapsedTime after the restore")
        assert stats["elapsedTime"] >= 0
        [display] = stats["displayInfo"]
        assert display["type"] == "vnc" and display["port"] >= 5900
        assert display["ipAddress"] == "127.0.0.1"
        stored = conn.lookupByUUIDString(vm_id).metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                                                         domxml.METADATA_NS)
        assert "restoreState" not in (domxml.parse_metadata(stored) or {})
        assert not state.exists()  # consumed: restoring it again would fork the guest
        # The display is locked as after a fresh start (the image holds no password), and a
        # ticket opens it.
        assert_locked(conn, vm_id)
        assert agent.call("VM.setTicket", vmID=vm_id, password="again", ttl=60) is True
        graphics = live_xml(conn, vm_id, libvirt.VIR_DOMAIN_XML_SECURE).find("devices/graphics")
        assert graphics is not None and graphics.get("passwd") == "again"
        # The restored guest is the same one, still running: it obeys the power button
        # without booting again.
        agent.call("VM.shutdown", vmID=vm_id, delay=120)
        a.wait_status(agent, vm_id, "Down")
    assert g.MARKER_ACPI_SHUTDOWN in serial.read_text()
    assert serial.read_text().count(g.MARKER_BOOTED) == 1
    assert ran.read_text().split() == [
        "before_vm_hibernate", vm_id, "after_vm_hibernate", vm_id,
        "before_vm_dehibernate", vm_id, "after_vm_restore", vm_id,
    ]
    agent.call("VM.destroy", vmID=vm_id)
