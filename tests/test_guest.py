"""Tests of the tiny real test guest (tests/guest.py): it builds, and boots under libvirt/TCG."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from tests import guest as g
from tests import guestfiles

BOOT_TIMEOUT = 90.0  # TCG on 2 shared cores, possibly next to other guests
SHUTOFF_TIMEOUT = 30.0
MIB = 1 << 20


# --------------------------------------------------------------------------------------------
# Helpers that need neither a network nor libvirt
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_kernel_cmdline_selects_mode_and_parameters() -> None:
    line = g.kernel_cmdline("write", mib=16, chunk=2)
    assert line == ("console=ttyS0 quiet panic=-1 no_timer_check vdsm.mode=write vdsm.mib=16 "
                    "vdsm.chunk=2")
    assert g.kernel_cmdline("idle").startswith("console=ttyS0 quiet panic=-1 ")
    with pytest.raises(ValueError, match="unknown guest mode"):
        g.kernel_cmdline("dance")
    with pytest.raises(ValueError, match="bad guest parameter"):
        g.kernel_cmdline("write", mib="16 init=/bin/sh")


@pytest.mark.timeout(10)
def test_wait_for_marker_times_out_with_the_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"noise\r\nVDSM-GUEST BOOTED mode=write\r\nVDSM-GUEST WRITE-DONE 160\r\n")
    started = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        g.wait_for_marker(log, "VDSM-GUEST WRITE-DONE 16", timeout=0.3)
    assert time.monotonic() - started < 5
    assert "WRITE-DONE 160" in str(err.value)  # the tail is in the message
    assert "VDSM-GUEST WRITE-DONE 16'" in str(err.value)


@pytest.mark.timeout(10)
def test_wait_for_marker_returns_line_and_stops_on_failure(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"[ 1.0] x\r\nVDSM-GUEST WRITE-DONE 16\r\n")
    assert g.wait_for_marker(log, g.MARKER_WRITE_DONE, 1) == "VDSM-GUEST WRITE-DONE 16"
    # offset skips an earlier boot's output in an appended log
    size = log.stat().st_size
    with pytest.raises(TimeoutError):
        g.wait_for_marker(log, g.MARKER_WRITE_DONE, 0.2, offset=size)
    with log.open("ab") as f:
        f.write(b"VDSM-GUEST WRITE-FAILED rc=1 at=4\r\n")
    with pytest.raises(g.GuestFailed, match="rc=1"):
        g.wait_for_marker(
            log, g.MARKER_WRITE_DONE, 5, offset=size, fail_markers=(g.MARKER_WRITE_FAILED,)
        )


@pytest.mark.timeout(10)
def test_wait_for_marker_tolerates_a_missing_log(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match="empty or absent"):
        g.wait_for_marker(tmp_path / "nope.log", g.MARKER_READY, 0.2)


@pytest.mark.timeout(10)
def test_ldd_output_names_the_agent_libraries_or_what_is_missing() -> None:
    listed = (
        "\tlinux-vdso.so.1 (0x00007ffc6b7e5000)\n"
        "\tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007f0e72736000)\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e7246c000)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e729bb000)\n"
    )
    assert guestfiles.parse_ldd(listed) == [
        Path("/lib/x86_64-linux-gnu/libglib-2.0.so.0"), Path("/lib/x86_64-linux-gnu/libc.so.6"),
        Path("/lib64/ld-linux-x86-64.so.2")]
    with pytest.raises(ValueError, match=r"liburing\.so\.2 not found"):
        guestfiles.parse_ldd(listed + "\tliburing.so.2 => not found\n")


@pytest.mark.timeout(10)
def test_the_login_record_is_a_glibc_utmp_entry() -> None:
    record = guestfiles.utmp_record("alice", "tty1", pid=7, login=1_700_000_000)
    assert len(record) == 384
    assert int.from_bytes(record[0:2], "little") == 7  # USER_PROCESS
    assert record[8:12] == b"tty1" and record[44:49] == b"alice"
    assert int.from_bytes(record[340:344], "little") == 1_700_000_000  # ut_tv.tv_sec


@pytest.mark.timeout(10)
def test_domain_xml_has_acpi_serial_and_disk(tmp_path: Path) -> None:
    image = g.GuestImage(kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img")
    xml = g.domain_xml(
        "t<&>",
        str(uuid.uuid4()),
        image,
        g.kernel_cmdline("idle"),
        tmp_path / "s.log",
        disk=Path("/dev/loop7"),
        disk_type="block",
        disk_format="qcow2",
    )
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "t<&>"
    assert root.find("features/acpi") is not None
    assert root.findtext("on_poweroff") == "destroy"
    assert root.find("devices/graphics") is None
    serial = root.find("devices/serial/source")
    assert serial is not None
    assert serial.get("append") == "on"
    disk = root.find("devices/disk")
    assert disk is not None
    assert disk.get("type") == "block"
    source = disk.find("source")
    assert source is not None
    assert source.get("dev") == "/dev/loop7"


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _fake_tool(bindir: Path, name: str, message: str, rc: int = 100) -> None:
    bindir.mkdir(exist_ok=True)
    tool = bindir / name
    tool.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit {rc}\n")
    tool.chmod(0o755)


@pytest.mark.timeout(60)
def test_build_failure_names_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    _fake_tool(bindir, "apt-get", "E: Failed to fetch (no network)")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(g.GuestBuildError, match="apt-get download") as err:
        g.build_guest(tmp_path / "cache")
    assert "Failed to fetch" in str(err.value)
    assert not list((tmp_path / "cache").glob(".build-*")), "a failed build left its temp dir"


@pytest.fixture(scope="module")
def guest_image() -> g.GuestImage:
    """The guest, built once per module into the shared cache."""
    return g.build_guest()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    results: list[g.GuestImage] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(g.build_guest(cache))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=500)
    assert not errors, errors
    assert len(results) == 2
    assert results[0] == results[1]
    entries = [p.name for p in cache.iterdir() if p.name != ".lock"]
    assert len(entries) == 1, entries
    image = results[0]
    assert image.kernel.stat().st_size > 1 * MIB
    assert image.initrd.read_bytes()[:2] == b"\x1f\x8b"  # gzip

    started = time.monotonic()
    assert g.build_guest(cache) == image
    assert time.monotonic() - started < 30  # cached: no download, no extraction


@pytest.mark.timeout(600)
def test_cached_build_is_used_when_apt_cannot_answer(
    guest_image: g.GuestImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    _fake_tool(bindir, "apt-cache", "E: No packages found")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert g.build_guest(guest_image.kernel.parent.parent) == guest_image
    with pytest.raises(g.GuestBuildError, match="apt-cache depends"):
        g.build_guest(tmp_path / "empty-cache")


# --------------------------------------------------------------------------------------------
# Booting under the real libvirtd (qemu:///system, TCG)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Booted:
    dom: libvirt.virDomain
    serial_log: Path
    started: float


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open("qemu:///system")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def boot(
    conn: libvirt.virConnect, guest_image: g.GuestImage, tmp_path: Path
) -> Iterator[Callable[..., Booted]]:
    """Define and start a guest; every domain defined here is destroyed and undefined."""
    domains: list[libvirt.virDomain] = []

    def _boot(cmdline: str, disk: Path | None = None) -> Booted:
        name = f"vdsm-test-guest-{uuid.uuid4().hex[:12]}"
        serial_log = tmp_path / f"{name}.serial.log"
        xml = g.domain_xml(name, str(uuid.uuid4()), guest_image, cmdline, serial_log, disk=disk)
        dom = conn.defineXML(xml)
        domains.append(dom)
        started = time.monotonic()
        dom.create()
        return Booted(dom, serial_log, started)

    try:
        yield _boot
    finally:
        for dom in domains:
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()


def _wait_shutoff(dom: libvirt.virDomain, timeout: float) -> int:
    """Wait (bounded) for the domain to be shut off; return the shut-off reason."""
    deadline = time.monotonic() + timeout
    while True:
        state, reason = dom.state()
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            return int(reason)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"domain {dom.name()} still in state {state} after {timeout} s")
        time.sleep(0.05)


@pytest.mark.libvirt
@pytest.mark.timeout(240)
def test_idle_guest_is_ready_and_obeys_acpi_shutdown(boot: Callable[..., Booted]) -> None:
    vm = boot(g.kernel_cmdline("idle"))
    g.wait_for_marker(vm.serial_log, g.MARKER_READY, BOOT_TIMEOUT)
    ready_after = time.monotonic() - vm.started
    assert vm.dom.isActive()
    vm.dom.shutdown()  # ACPI power button
    g.wait_for_marker(vm.serial_log, g.MARKER_ACPI_SHUTDOWN, SHUTOFF_TIMEOUT)
    assert _wait_shutoff(vm.dom, SHUTOFF_TIMEOUT) == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN
    print(f"boot to READY: {ready_after:.2f} s")


@pytest.mark.libvirt
@pytest.mark.timeout(240)
def test_poweroff_guest_ends_the_domain(boot: Callable[..., Booted]) -> None:
    vm = boot(g.kernel_cmdline("poweroff"))
    g.wait_for_marker(vm.serial_log, g.MARKER_POWERING_OFF, BOOT_TIMEOUT)
    assert _wait_shutoff(vm.dom, SHUTOFF_TIMEOUT) == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN
    assert g.MARKER_POWEROFF_FAILED not in vm.serial_log.read_text(errors="replace")


@pytest.mark.libvirt
@pytest.mark.timeout(240)
@pytest.mark.parametrize("fill", ["zero", "ones"])
def test_write_guest_fills_a_sparse_disk_and_powers_off(
    boot: Callable[..., Booted], tmp_path: Path, fill: str
) -> None:
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(16 * MIB)
    assert disk.stat().st_blocks * 512 < MIB  # sparse to begin with

    vm = boot(g.kernel_cmdline("write", mib=16, fill=fill), disk=disk)
    line = g.wait_for_marker(
        vm.serial_log,
        g.MARKER_WRITE_DONE,
        BOOT_TIMEOUT,
        fail_markers=(g.MARKER_WRITE_FAILED, g.MARKER_KERNEL_PANIC),
    )
    assert line == "VDSM-GUEST WRITE-DONE 16"
    assert _wait_shutoff(vm.dom, SHUTOFF_TIMEOUT) == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN

    log = vm.serial_log.read_text(errors="replace")
    assert "VDSM-GUEST WRITE-PROGRESS 16" in log
    assert disk.stat().st_size == 16 * MIB
    assert disk.stat().st_blocks * 512 >= 16 * MIB  # every block now allocated
    expected = b"\xff" if fill == "ones" else b"\0"
    assert disk.read_bytes() == expected * (16 * MIB)


@pytest.mark.libvirt
@pytest.mark.timeout(240)
def test_read_guest_reports_the_disk_checksum(boot: Callable[..., Booted], tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    content = hashlib.shake_256(b"vdsm test guest").digest(4 * MIB)
    disk.write_bytes(content)

    vm = boot(g.kernel_cmdline("read"), disk=disk)
    line = g.wait_for_marker(
        vm.serial_log,
        g.MARKER_READ_DONE,
        BOOT_TIMEOUT,
        fail_markers=(g.MARKER_READ_FAILED, g.MARKER_KERNEL_PANIC),
    )
    assert line.split()[2:] == [hashlib.sha256(content).hexdigest(), str(4 * MIB)]
    _wait_shutoff(vm.dom, SHUTOFF_TIMEOUT)
