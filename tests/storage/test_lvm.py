"""LVM command handling on a real PV (a loop device), as far as this kernel allows.

This kernel has no device-mapper: pvcreate/vgcreate/vgs/lvs work, and with
``--driverloaded n`` so do lvcreate/lvextend/lvremove and tag changes (metadata only);
activation cannot work, and the tests assert that it fails with a clear error.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.storage import lvm as lvm_mod
from actors.storage.lvm import Lvm
from messaging.errors import NoSpace, StorageCommandError, StorageError
from tests.storage.helpers import loop_device, sparse_file

MiB = 1 << 20
GiB = 1 << 30
NO_DM = not lvm_mod.device_mapper_available()


@contextlib.contextmanager
def volume_group(tmp: Path, size: int = 4 * GiB) -> Iterator[tuple[Lvm, str]]:
    """A VG on a PV on a loop device; everything removed at the end."""
    name = "vdsmtest-" + uuid.uuid4().hex[:12]
    with loop_device(sparse_file(tmp / "pv.img", size)) as device:
        lvm = Lvm(devices=[device])
        lvm.pvcreate([device], metadata_size=8 * MiB)
        try:
            lvm.vgcreate(name, [device], extent_size=4 * MiB)
            try:
                yield lvm, name
            finally:
                lvm.vgremove(name)
        finally:
            lvm.pvremove([device])


@pytest.mark.timeout(60)
def test_command_construction() -> None:
    lvm = Lvm(devices=["/dev/loop7"], activation=False, timeout=5)
    argv = lvm.command("lvs", "vg")
    assert argv[:3] == ["lvm", "lvs", "--config"]
    assert 'filter=["a|^/dev/loop7$|", "r|.*|"]' in argv[3]
    assert "use_devicesfile=0" in argv[3]
    assert "backup=0" in argv[3]
    assert argv[4:] == ["--driverloaded", "n", "vg"]
    assert "--driverloaded" not in Lvm(activation=True).command("lvs")
    assert lvm_mod.check_tag("MD_X=a&20b") == "MD_X=a&20b"
    for bad in ("-x", "a b", "", "x" * 1025):
        with pytest.raises(ValueError):
            lvm_mod.check_tag(bad)


@pytest.mark.timeout(10)
def test_device_mapper_detection(tmp: Path) -> None:
    misc = tmp / "misc"
    misc.write_text(" 236 device-mapper\n 237 loop-control\n")
    assert lvm_mod.device_mapper_available(misc)
    misc.write_text(" 237 loop-control\n")
    assert not lvm_mod.device_mapper_available(misc)
    assert not lvm_mod.device_mapper_available(tmp / "missing")


@pytest.mark.timeout(120)
def test_vg_and_lv_metadata_operations(tmp: Path) -> None:
    with volume_group(tmp) as (lvm, vg):
        info = lvm.vg(vg)
        assert info.extent_size == 4 * MiB
        assert info.pv_count == 1
        assert info.free == info.size
        assert len(lvm.pvs(vg)) == 1
        lvm.vg_tags(vg, add=["MDT_A=1", "MDT_B=2"])
        lvm.vg_tags(vg, add=["MDT_A=3"], delete=["MDT_A=1"])
        assert sorted(lvm.vg(vg).tags) == ["MDT_A=3", "MDT_B=2"]
        lv = lvm.lvcreate(vg, "vol1", 10 * MiB, tags=["IU_x", "MD_LEGALITY=ILLEGAL"])
        assert lv.size == 12 * MiB  # rounded up to whole extents
        assert lv.tags == ("IU_x", "MD_LEGALITY=ILLEGAL")
        assert not lv.active
        assert lv.path == f"/dev/{vg}/vol1"
        lvm.lv_tags(vg, "vol1", add=["MD_LEGALITY=LEGAL"], delete=["MD_LEGALITY=ILLEGAL"])
        assert lvm.lv(vg, "vol1").tags == ("IU_x", "MD_LEGALITY=LEGAL")  # type: ignore[union-attr]
        lvm.lvextend(vg, "vol1", 20 * MiB)
        assert lvm.lv(vg, "vol1").size == 20 * MiB  # type: ignore[union-attr]
        lvm.lvextend(vg, "vol1", 8 * MiB)  # never shrinks
        assert lvm.lv(vg, "vol1").size == 20 * MiB  # type: ignore[union-attr]
        assert lvm.lv(vg, "nothing") is None
        with pytest.raises(NoSpace) as nospace:
            lvm.lvcreate(vg, "huge", 100 * GiB)
        assert "insufficient free space" in nospace.value.message
        assert lvm.lv(vg, "huge") is None
        with pytest.raises(StorageCommandError, match="already exists"):
            lvm.lvcreate(vg, "vol1", MiB)
        lvm.deactivate(vg, ["vol1"])
        lvm.lvremove(vg, ["vol1"])
        assert lvm.lvs(vg) == ()
        with pytest.raises(StorageError, match="not found"):
            lvm.lvextend(vg, "vol1", MiB)


@pytest.mark.skipif(not NO_DM, reason="this kernel has device-mapper")
@pytest.mark.timeout(120)
def test_activation_fails_clearly_without_device_mapper(tmp: Path) -> None:
    with volume_group(tmp) as (lvm, vg):
        lvm.lvcreate(vg, "vol", 8 * MiB)
        with pytest.raises(StorageError, match="device-mapper is not available"):
            lvm.activate(vg, ["vol"])
        with pytest.raises(StorageError, match="device-mapper is not available"):
            lvm.lvcreate(vg, "active", 8 * MiB, activate=True)
        assert lvm.lv(vg, "active") is None
        real = Lvm(devices=lvm.devices, activation=True)  # no --driverloaded n
        with pytest.raises(StorageCommandError, match="device-mapper is not available"):
            real.lvcreate(vg, "plain", 8 * MiB)
        with pytest.raises(StorageCommandError, match="device-mapper is not available"):
            real.refresh(vg, "vol")
        assert [lv.name for lv in lvm.lvs(vg)] == ["vol"]
        lvm.lvremove(vg, ["vol"])
