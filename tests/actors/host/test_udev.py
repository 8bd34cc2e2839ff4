"""Device discovery with real loop devices (and a real LVM label)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.host.blockdev import parse_lvm_label, read_lvm_label
from tests.harness import Vdsmd, blocked_without_timeout, next_event, syscall, wait_for

pytestmark = [pytest.mark.timeout(90), pytest.mark.root]


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture
def backing(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        f.truncate(64 << 20)
    return path


@pytest.fixture
def loop(backing: Path) -> Iterator[str]:
    dev = run("losetup", "--find", "--show", str(backing)).strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], timeout=30, check=False)


def test_lvm_label_is_read_like_blkid(loop: str) -> None:
    assert read_lvm_label(loop) is None
    run("pvcreate", "-qq", "--devices", loop, loop)
    try:
        pv = run("pvs", "--devices", loop, "--noheadings", "-o", "pv_uuid", loop).strip()
        assert read_lvm_label(loop) == pv
    finally:
        subprocess.run(["pvremove", "-qq", "--devices", loop, loop], timeout=30, check=False)


def test_garbage_is_not_a_label() -> None:
    assert parse_lvm_label(b"\0" * 2048) is None
    assert parse_lvm_label(b"LABELONE" + b"\0" * 2040) is None


def _device(vdsmd: Vdsmd, name: str) -> dict[str, object] | None:
    for entry in vdsmd.call("Host.getDeviceList"):
        if entry["devname"] == name:
            return dict(entry)
    return None


def test_attached_loop_device_appears_without_a_rescan(vdsmd: Vdsmd, backing: Path) -> None:
    with vdsmd.subscriber("|host|block_device|") as sub:
        dev = run("losetup", "--find", "--show", str(backing)).strip()
        name = dev.rsplit("/", 1)[-1]
        try:
            _, event = next_event(sub, lambda t, p: p["devname"] == name, 20)
            assert event["action"] in ("add", "change")
            entry = wait_for(lambda: _device(vdsmd, name), 10, what=f"{name} listed")
            assert entry["capacity"] == 64 << 20
            assert entry["backingFile"] == str(backing)
            assert entry["devpath"] == dev
        finally:
            subprocess.run(["losetup", "-d", dev], timeout=30, check=False)
        wait_for(lambda: _device(vdsmd, name) is None, 20, what=f"{name} gone")


def test_the_monitor_thread_sleeps_until_a_uevent_comes(backing: Path) -> None:
    """No timeout in its wait: an idle host's monitor thread never wakes for nothing, a
    uevent still reaches it, and stop() ends it at once (through its wake-up pipe)."""
    import pyudev

    from actors.host.udev import _MonitorThread

    seen: list[tuple[str, str]] = []
    monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
    monitor.filter_by("block")
    thread = _MonitorThread(monitor, lambda action, path: seen.append((action, path)))
    thread.start()
    try:
        tid = thread.native_id
        assert tid is not None
        wait_for(lambda: blocked_without_timeout(tid), 30.0,
                 what=f"the monitor thread blocked with no timeout ({syscall(tid)})")
        dev = run("losetup", "--find", "--show", str(backing)).strip()
        try:
            name = dev.rsplit("/", 1)[-1]
            wait_for(lambda: any(p.endswith("/" + name) for _, p in seen), 30.0,
                     what=f"a uevent of {dev}")
        finally:
            subprocess.run(["losetup", "-d", dev], timeout=30, check=False)
        wait_for(lambda: blocked_without_timeout(tid), 30.0,
                 what="the monitor thread blocked again after the uevents")
    finally:
        thread.stop()
    assert not thread._thread.is_alive()
