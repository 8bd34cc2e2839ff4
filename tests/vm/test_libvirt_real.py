"""The VM layer against the real libvirtd (qemu:///system, TCG): the generated XML defines and
boots, live device changes apply, real stats records convert, a stopped qemu is contained."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from actors.clock import Clock
from actors.vm import domxml
from actors.vm.guestcall import GuestCaller
from actors.vm.params import VmParams
from actors.vm.stats import BULK_FLAGS, STATS, StatsHistory, records_by_uuid
from actors.vm.status import PauseCode, VmStatus, from_state, pause_code_from_disk_errors
from messaging.errors import GuestCallBusy, GuestCallTimeout
from tests import guest as g
from tests.vm.helpers import gone, qemu_pid, raw_params, validated, wait_until

pytestmark = pytest.mark.libvirt
MIB = 1 << 20
BOOT_TIMEOUT = 90.0


def make_params(**overrides: Any) -> VmParams:
    return VmParams.from_dict(str(uuid.uuid4()), validated(raw_params(**overrides)))


def qcow2(path: Path, size: str = "64M") -> Path:
    qemu_img = shutil.which("qemu-img")
    assert qemu_img is not None
    subprocess.run([qemu_img, "create", "-f", "qcow2", str(path), size], check=True,
                   capture_output=True, timeout=30)
    return path


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    backing = tmp_path / "loop.img"
    with backing.open("wb") as f:
        f.truncate(16 * MIB)
    device = subprocess.run(["losetup", "-f", "--show", str(backing)], check=True,
                            capture_output=True, text=True, timeout=30).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False, timeout=30)


@pytest.fixture
def bridge() -> Iterator[str]:
    """A Linux bridge with no port and no address: only the test's tap devices join it."""
    name = f"vmtbr{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True,
                   timeout=30)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, timeout=30)


def target(disk: ET.Element) -> str:
    element = disk.find("target")
    assert element is not None
    return element.get("dev", "")


@pytest.fixture(scope="module")
def guest_image() -> g.GuestImage:
    return g.build_guest()


@pytest.mark.timeout(60)
def test_generated_xml_defines_with_every_device(
    conn: libvirt.virConnect,
    domains: list[libvirt.virDomain],
    tmp_path: Path,
    loop_device: str,
    bridge: str,
) -> None:
    p = make_params(
        emulator="kvm",
        smp=2,
        drives=[
            {"path": str(qcow2(tmp_path / "a.qcow2")), "format": "cow", "serial": "d1"},
            {"path": loop_device, "format": "raw"},
            {"path": str(qcow2(tmp_path / "s.qcow2")), "format": "cow", "iface": "scsi"},
            {"device": "cdrom"},
            {"device": "floppy"},
        ],
        nics=[{"bridge": bridge, "macAddr": "52:54:00:12:34:56"}],
        display="vnc",
        custom={"x": "1"},
    )
    xml = domxml.build_domain_xml(p, serial_log=str(tmp_path / "serial.log"))
    dom = conn.defineXML(xml)
    domains.append(dom)
    assert dom.UUIDString() == p.vm_id
    assert dom.name() == p.name
    back = ET.fromstring(dom.XMLDesc(0))
    assert back.get("type") == "kvm"
    assert back.find("features/acpi") is not None
    disks = {target(d): d for d in back.findall("devices/disk")}
    assert set(disks) == {"vda", "vdb", "sda", "hda", "fda"}
    block_driver = disks["vdb"].find("driver")
    assert block_driver is not None
    assert (block_driver.get("cache"), block_driver.get("io"),
            block_driver.get("error_policy")) == ("none", "native", "stop")
    assert disks["vdb"].get("type") == "block"
    source = back.find("devices/interface/source")
    assert source is not None and source.get("bridge") == bridge
    stored = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NS)
    assert domxml.parse_metadata(stored) == p.to_dict()
    assert domxml.parse_metadata(dom.XMLDesc(0)) == p.to_dict()


@pytest.mark.timeout(300)
def test_boot_real_guest_stats_media_ticket_status(
    conn: libvirt.virConnect,
    domains: list[libvirt.virDomain],
    tmp_path: Path,
    guest_image: g.GuestImage,
    bridge: str,
) -> None:
    serial = tmp_path / "serial.log"
    p = make_params(
        emulator="qemu",
        memSize=128,
        kernel=str(guest_image.kernel),
        initrd=str(guest_image.initrd),
        kernelArgs=g.kernel_cmdline("idle"),
        drives=[{"path": str(qcow2(tmp_path / "disk.qcow2")), "format": "cow"},
                {"device": "cdrom"}],
        nics=[{"bridge": bridge}],
        display="vnc",
    )
    dom = conn.createXML(domxml.build_domain_xml(p, serial_log=str(serial)), 0)
    domains.append(dom)
    g.wait_for_marker(serial, g.MARKER_READY, BOOT_TIMEOUT)
    assert from_state(*dom.state()).status == VmStatus.UP
    stored = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NS)
    assert domxml.parse_metadata(stored) == p.to_dict()

    # Stats from real bulk calls (at least two). With NOWAIT a record is partial whenever
    # another libvirt client holds the domain's job at that instant (the agents of tests
    # running in parallel sample every domain of this libvirtd): as the sampler does, a
    # partial record is only believed if it stays partial, so sample again (bounded).
    history = StatsHistory()
    costs = []
    stats: dict[str, Any] = {}
    full_in_a_row = 0
    for _ in range(20):
        started = time.monotonic()
        records = records_by_uuid(conn.getAllDomainStats(STATS, BULK_FLAGS))
        costs.append(time.monotonic() - started)
        stats = history.update({p.vm_id: records[p.vm_id]}, now=time.monotonic())[p.vm_id]
        full_in_a_row = full_in_a_row + 1 if stats["monitorResponse"] == 0 else 0
        if full_in_a_row == 2:
            break
        time.sleep(0.5)
    print(f"getAllDomainStats: {[f'{c * 1000:.1f} ms' for c in costs]}")
    assert stats["monitorResponse"] == 0
    assert 0.0 <= stats["cpuUser"] <= 100.0 and 0.0 <= stats["cpuSys"] <= 100.0
    assert stats["cpuUsage"] > 0
    assert 0 <= stats["memUsage"] <= 100
    assert stats["memRss"] > 0
    assert stats["disks"]["vda"]["capacity"] == 64 * MIB
    assert stats["disks"]["vda"]["path"] == str(tmp_path / "disk.qcow2")
    assert "hda" in stats["disks"]
    assert len(stats["network"]) == 1
    assert next(iter(stats["network"])).startswith("vnet")

    # Insert a CD, then eject it.
    iso = tmp_path / "cd.iso"
    iso.write_bytes(b"\0" * 2 * MIB)
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE
    dom.updateDeviceFlags(domxml.change_media_xml(dom.XMLDesc(0), "cdrom", str(iso)), flags)
    assert f"file='{iso}'" in dom.XMLDesc(0)
    dom.updateDeviceFlags(domxml.change_media_xml(dom.XMLDesc(0), "cdrom", ""), flags)
    assert str(iso) not in dom.XMLDesc(0)
    changed = p.with_media("cdrom", "")
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.metadata_xml(changed),
                    domxml.METADATA_PREFIX, domxml.METADATA_NS, flags)
    stored = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NS)
    assert domxml.parse_metadata(stored) == changed.to_dict()

    # Set a VNC ticket valid for a minute.
    secure = libvirt.VIR_DOMAIN_XML_SECURE
    ticket = domxml.graphics_ticket_xml(dom.XMLDesc(secure), "s3cret", time.time() + 60)
    dom.updateDeviceFlags(ticket, flags)
    assert "passwd='s3cret'" in dom.XMLDesc(secure)

    # Pause and resume.
    dom.suspend()
    assert from_state(*dom.state()).status == VmStatus.PAUSED
    assert from_state(*dom.state()).pause_code == PauseCode.NOERR
    dom.resume()
    assert from_state(*dom.state()).status == VmStatus.UP

    # ACPI shutdown: the transient domain goes away.
    dom.shutdown()
    wait_until(lambda: gone(dom), 60, "ACPI shutdown")


@pytest.mark.timeout(120)
def test_stopped_qemu_is_contained(
    conn: libvirt.virConnect, domains: list[libvirt.virDomain], tmp_path: Path,
    clock: Clock,
) -> None:
    # No kernel and no disk: SeaBIOS finds nothing to boot and qemu just runs.
    p = make_params(emulator="qemu", memSize=96)
    dom = conn.createXML(domxml.build_domain_xml(p, serial_log=str(tmp_path / "s.log")), 0)
    domains.append(dom)
    pid = qemu_pid(dom)
    control = GuestCaller(p.vm_id, clock=clock)
    sampler = GuestCaller("host", max_outstanding=2, clock=clock)
    reads = GuestCaller("reads", max_outstanding=2, clock=clock)
    history = StatsHistory()

    def read(fn: Callable[[], Any]) -> Any:
        """A libvirt call that should need no job, on a thread with a deadline: if it does
        wait (``virDomainGetInfo`` waits for the job the stuck suspend holds), only that
        thread waits and the test fails by the timeout; this thread must stay free to
        SIGCONT the stopped qemu (a C call blocking here is not interrupted by
        pytest-timeout, and the test process would be killed with the qemu left stopped)."""
        return reads.call("read", fn, timeout=10, name=getattr(fn, "__name__", "read"))

    def sample() -> dict[str, Any]:
        records = sampler.call(
            "bulk-stats",
            lambda: conn.domainListGetStats([dom], STATS, BULK_FLAGS),
            timeout=10,
        )
        return history.update(records_by_uuid(records), now=time.monotonic())[p.vm_id]

    assert sample()["monitorResponse"] == 0
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(GuestCallTimeout):
            control.call("control", dom.suspend, timeout=1.0, name="suspend")
        assert time.monotonic() - started < 3
        assert control.stuck == 1
        with pytest.raises(GuestCallBusy):
            control.call("control", dom.resume, timeout=1.0, name="resume")
        # The abandoned suspend reached qemu's monitor (and holds the domain's job) only
        # once libvirt says the monitor is occupied: under load libvirtd can take longer than
        # the call's 1 s to get that far, and a stats call that came first would take the
        # job itself and then wait on the stopped qemu.
        wait_until(lambda: read(dom.controlInfo)[0] == libvirt.VIR_DOMAIN_CONTROL_OCCUPIED,
                   30, "the suspend to occupy the monitor")
        # Calls that need no job still answer (read's deadline: 10 s; libvirt waits 30 s
        # for a job).
        assert read(dom.state)[0] == libvirt.VIR_DOMAIN_RUNNING
        # The bulk call skips the stuck domain's monitor: a partial record.
        started = time.monotonic()
        stuck = sample()
        assert time.monotonic() - started < 2
        assert stuck["monitorResponse"] == -1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: control.stuck == 0, 30, "the abandoned suspend to return")
    assert control.abandoned_total == 1
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED  # the suspend did happen, late
    control.call("control", dom.resume, timeout=10)
    assert sample()["monitorResponse"] == 0


@pytest.mark.timeout(300)
def test_generated_block_disk_pauses_on_enospc(
    conn: libvirt.virConnect,
    domains: list[libvirt.virDomain],
    tmp_path: Path,
    guest_image: g.GuestImage,
    loop_device: str,
) -> None:
    qemu_img = shutil.which("qemu-img")
    assert qemu_img is not None
    # A 1 GiB qcow2 on a 16 MiB device: the guest's writes run out of space.
    subprocess.run([qemu_img, "create", "-f", "qcow2", loop_device, "1G"], check=True,
                   capture_output=True, timeout=30)
    serial = tmp_path / "serial.log"
    p = make_params(
        emulator="qemu",
        kernel=str(guest_image.kernel),
        initrd=str(guest_image.initrd),
        kernelArgs=g.kernel_cmdline("write", mib=64),
        drives=[{"path": loop_device, "format": "cow"}],
    )
    dom = conn.createXML(domxml.build_domain_xml(p, serial_log=str(serial)), 0)
    domains.append(dom)
    wait_until(lambda: dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED, BOOT_TIMEOUT, "ENOSPC pause")
    transition = from_state(*dom.state())
    assert transition.status == VmStatus.PAUSED
    assert pause_code_from_disk_errors(dom.diskErrors()) == PauseCode.ENOSPC
