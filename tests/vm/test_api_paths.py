"""Paths and text a client names, attacked through vdsmd's API with real guests: every
attack is -32602 naming the param, the VM is untouched and no file anywhere changes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests import guest as g
from tests.harness import Vdsmd
from tests.vm import agent as a
from tests.vm.conftest import fill
from tests.vm.test_api_lifecycle import live_xml, stored_params

pytestmark = pytest.mark.libvirt


@pytest.fixture
def vm_settings(tmp_path: Path) -> dict[str, Any]:
    """Images only from the guest's cache and ``images/``: the rest of tmp_path is out."""
    return {"image_dirs": [str(g.default_cache_dir().absolute()), str(tmp_path / "images")]}


def snapshot(*roots: Path) -> dict[Path, tuple[int, int, int]]:
    """(mode, size, mtime) of everything under ``roots``."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            found[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture
def traps(agent: Vdsmd, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Real files an attacker would aim at, in and around the allowed directories."""
    hib = a.hibernation_dir(agent)
    images = tmp_path / "images"
    images.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    made = {
        "victim": victim,
        "existing image": hib / "earlier.save",
        "link to shadow": images / "shadow.img",
        "link out of hib": hib / "out",
        "directory": images / "a-dir",
        "fifo": images / "a-fifo",
        "char device": images / "a-null",
    }
    made["existing image"].write_text("an earlier VM's memory")
    made["link to shadow"].symlink_to("/etc/shadow")
    made["link out of hib"].symlink_to(victim)
    made["directory"].mkdir()
    os.mkfifo(made["fifo"])
    os.mknod(made["char device"], stat.S_IFCHR | 0o600, os.makedev(1, 3))
    yield made


def attack_paths(agent: Vdsmd, tmp_path: Path, traps: dict[str, Path]) -> list[str]:
    hib = a.hibernation_dir(agent)
    registry = sorted(agent.state_dir.glob("vms/*.vm.json"))
    return [
        *(str(p) for p in traps.values()),
        *(str(p) for p in registry),  # the agent's own state
        str(agent.state_dir / "vms"),
        "/etc/shadow", "/dev/sda", "/proc/self/environ",
        f"{tmp_path}/images/../../../../../etc/passwd",
        f"{hib}/../vms/x.save",
        f"{tmp_path}/{'x' * 300}",
        "/" + "d/" * 2040,
    ]


@pytest.mark.timeout(180)
def test_hibernate_refuses_every_path_attack(
    agent: Vdsmd, tmp_path: Path, traps: dict[str, Path],
) -> None:
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params(display="vnc"))
    a.wait_status(agent, vm_id, "Up")
    hib = a.hibernation_dir(agent)
    before = snapshot(tmp_path, agent.state_dir)
    for path in [*attack_paths(agent, tmp_path, traps), f"{hib}/a\0b", "relative.save",
                 f"{hib}/{'y' * 4100}"]:
        e = a.error(lambda p=path: agent.call("VM.hibernate", vmID=vm_id, hiberVolHandle=p))
        assert e.code == -32602, (path[:80], e.message)
        assert "hiberVolHandle" in e.message
    after = snapshot(tmp_path, agent.state_dir)
    changed = {p for p in before.keys() | after.keys()
               if before.get(p) != after.get(p) and "vm-logs" not in p.parts
               and p.suffix != ".log" and p.name != "vdsmd.log"}
    assert changed == set()
    assert traps["victim"].read_text() == "precious"
    assert stat.S_IMODE(hib.stat().st_mode) == 0o700
    assert a.status(agent, vm_id)["status"] == "Up"  # never even "Saving State"
    assert agent.call("VM.pause", vmID=vm_id) is True
    assert agent.call("VM.destroy", vmID=vm_id) is True


@pytest.mark.timeout(180)
def test_create_and_media_changes_refuse_every_path_attack(
    agent: Vdsmd, tmp_path: Path, traps: dict[str, Path], guest_image: g.GuestImage,
    conn: libvirt.virConnect,
) -> None:
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id,
               vmParams=a.bare_params(drives=[{"device": "cdrom"}, {"device": "floppy"}]))
    a.wait_status(agent, vm_id, "Up")
    paths = attack_paths(agent, tmp_path, traps)
    before = snapshot(tmp_path, agent.state_dir)
    for path in paths:
        cases: list[tuple[dict[str, Any], str]] = [
            (a.bare_params(drives=[{"path": path}]), "vmParams.drives[0].path"),
            (a.bare_params(drives=[{"path": path, "device": "cdrom"}]),
             "vmParams.drives[0].path"),
            (a.guest_params(guest_image, kernel=path), "vmParams.kernel"),
            (a.guest_params(guest_image, initrd=path), "vmParams.initrd"),
        ]
        if path != str(traps["existing image"]):  # a memory image: for libvirt to judge
            cases.append((a.bare_params(restoreState=path), "vmParams.restoreState"))
        for params, field in cases:
            new = a.new_id()
            e = a.error(lambda n=new, p=params: agent.call("VM.create", vmID=n, vmParams=p))
            assert (e.code, field in e.message) == (-32602, True), (path[:80], e.message)
            assert not a.serial_log(agent, new).exists()
        for verb in ("VM.changeCD", "VM.changeFloppy"):
            e = a.error(lambda v=verb, p=path: agent.call(v, vmID=vm_id, path=p))
            assert (e.code, "'path'" in e.message) == (-32602, True), (path[:80], e.message)
    # restoreState must be a memory image of the hibernation directory, not any file.
    iso = tmp_path / "images" / "cd.iso"
    iso.write_bytes(b"\0" * 4096)
    e = a.error(lambda: agent.call("VM.create", vmID=a.new_id(),
                                   vmParams=a.bare_params(restoreState=str(iso))))
    assert e.code == -32602 and "hibernation_dir" in e.message
    after = snapshot(tmp_path, agent.state_dir)
    changed = {p for p in before.keys() | after.keys()
               if before.get(p) != after.get(p) and "vm-logs" not in p.parts
               and p.name != "vdsmd.log"}
    assert changed <= {iso, iso.parent}
    assert [v["vmID"] for v in agent.call("Host.getVMList")] == [vm_id]
    assert a.vm_actors(agent) == [f"/vms/{vm_id}"]
    assert live_xml(conn, vm_id).find("devices/disk[@device='cdrom']/source") is None
    assert stored_params(conn, vm_id)["drives"][0]["path"] == ""
    # A link inside an image directory is fine: libvirt gets the file it points to.
    (iso.parent / "current.iso").symlink_to(iso)
    assert agent.call("VM.changeCD", vmID=vm_id, path=str(iso.parent / "current.iso")) is True
    source = live_xml(conn, vm_id).find("devices/disk[@device='cdrom']/source")
    assert source is not None and source.get("file") == str(iso)
    assert agent.call("VM.destroy", vmID=vm_id) is True


@pytest.mark.timeout(120)
def test_text_libvirt_cannot_take_is_invalid_params(
    agent: Vdsmd, guest_image: g.GuestImage,
) -> None:
    for overrides, field in (
        ({"kernelArgs": "console=ttyS0\0init=/bin/sh"}, "vmParams.kernelArgs"),
        ({"kernelArgs": "console=ttyS0\ninit=/bin/sh"}, "vmParams.kernelArgs"),
        ({"kernelArgs": "quiet\x1b[2J"}, "vmParams.kernelArgs"),
        ({"custom": {"team": "red\0blue"}}, "vmParams.custom.team"),
        ({"custom": {"LD_PRELOAD x": "y"}}, "vmParams.custom"),
    ):
        params = a.guest_params(guest_image, **overrides)
        e = a.error(lambda p=params: agent.call("VM.create", vmID=a.new_id(), vmParams=p))
        assert (e.code, field in e.message) == (-32602, True), (overrides, e.message)
    assert agent.call("Host.getVMList") == []
    assert a.vm_actors(agent) == []
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params(display="vnc"))
    for password in ("a\0b", "a\x01b", "a\nb"):
        e = a.error(lambda p=password: agent.call("VM.setTicket", vmID=vm_id, password=p,
                                                  ttl=10))
        assert (e.code, "'password'" in e.message) == (-32602, True), e.message
    assert agent.call("VM.setTicket", vmID=vm_id, password="fine", ttl=10) is True
    assert agent.call("VM.destroy", vmID=vm_id) is True


@pytest.mark.root
@pytest.mark.timeout(180)
def test_a_full_state_filesystem_is_a_storage_error_that_leaves_nothing(
    small_state: Path, agent: Vdsmd, conn: libvirt.virConnect,
) -> None:
    assert agent.state_dir == small_state
    filler = small_state / "filler"
    fill(filler)
    vm_id, params = a.new_id(), a.bare_params()
    e = a.error(lambda: agent.call("VM.create", vmID=vm_id, vmParams=params))
    assert e.code == 211, e.message
    assert not [p.name for p in small_state.glob("vms/*")]  # no 0-byte .tmp left
    assert agent.call("Host.getVMList") == [] and a.vm_actors(agent) == []
    assert not a.domain_exists(conn, vm_id)
    filler.unlink()
    assert agent.call("VM.create", vmID=vm_id, vmParams=params)["vmID"] == vm_id
    assert agent.call("VM.destroy", vmID=vm_id) is True
