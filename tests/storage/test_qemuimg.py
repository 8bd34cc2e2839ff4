from __future__ import annotations

import threading
from pathlib import Path

import pytest

from actors.storage import qemuimg
from actors.storage.command import Aborter
from messaging.errors import NoSpace, StorageCommandError, TaskAborted
from tests.storage.helpers import ext4

MiB = 1 << 20
GiB = 1 << 30


@pytest.mark.timeout(30)
def test_create_qcow2_and_info(tmp: Path) -> None:
    path = tmp / "base"
    qemuimg.create(str(path), fmt="qcow2", size=GiB)
    info = qemuimg.info(str(path))
    assert info.format == "qcow2"
    assert info.virtual_size == GiB
    assert info.compat == "1.1"
    assert info.backing_filename is None
    assert not info.corrupt
    assert info.actual_size < MiB


@pytest.mark.timeout(30)
def test_snapshot_chain_with_relative_backing(tmp: Path) -> None:
    qemuimg.create(str(tmp / "base"), fmt="raw", size=64 * MiB)
    qemuimg.create(str(tmp / "mid"), fmt="qcow2", size=64 * MiB, backing="base",
                   backing_format="raw")
    qemuimg.create(str(tmp / "top"), fmt="qcow2", size=128 * MiB, backing="mid")
    chain = qemuimg.chain(str(tmp / "top"))
    assert [Path(i.filename).name for i in chain] == ["top", "mid", "base"]
    assert chain[0].backing_filename == "mid"
    assert chain[0].backing_format == "qcow2"
    assert chain[1].backing_format == "raw"
    assert chain[0].virtual_size == 128 * MiB
    assert chain[2].format == "raw"


@pytest.mark.timeout(30)
def test_preallocation_modes(tmp: Path) -> None:
    for mode in ("off", "falloc", "full"):
        path = tmp / mode
        qemuimg.create(str(path), fmt="raw", size=8 * MiB, preallocation=mode)
        allocated = path.stat().st_blocks * 512
        if mode == "off":
            assert allocated < MiB
        else:
            assert allocated >= 8 * MiB


@pytest.mark.timeout(30)
def test_resize_check_measure(tmp: Path) -> None:
    path = tmp / "img"
    qemuimg.create(str(path), fmt="qcow2", size=GiB)
    qemuimg.resize(str(path), 2 * GiB, fmt="qcow2")
    assert qemuimg.info(str(path), fmt="qcow2").virtual_size == 2 * GiB
    result = qemuimg.check(str(path))
    assert result.ok
    assert result.format == "qcow2"
    assert result.image_end_offset is not None
    new = qemuimg.measure(out_format="qcow2", size=GiB)
    assert 0 < new.required < MiB
    assert new.fully_allocated > GiB
    copy = qemuimg.measure(out_format="qcow2", source=str(path), source_format="qcow2")
    assert copy.required < MiB


@pytest.mark.timeout(30)
def test_check_reports_corruption(tmp: Path) -> None:
    path = tmp / "img"
    qemuimg.create(str(path), fmt="qcow2", size=GiB)
    with path.open("r+b") as f:  # break the refcount table offset (header bytes 48-55)
        f.seek(48)
        f.write((1 << 40).to_bytes(8, "big"))
    result = qemuimg.check(str(path))  # exit code 2: parsed, not raised
    assert result.corruptions > 0
    assert not result.ok


@pytest.mark.timeout(30)
def test_errors(tmp: Path) -> None:
    with pytest.raises(StorageCommandError) as info:
        qemuimg.info(str(tmp / "missing"))
    assert "No such file" in info.value.message
    with pytest.raises(ValueError, match="backing"):
        qemuimg.create(str(tmp / "x"), fmt="raw", size=MiB, backing="y")
    with pytest.raises(ValueError, match="exactly one"):
        qemuimg.measure(out_format="qcow2")


@pytest.mark.timeout(60)
def test_preallocation_out_of_space_is_nospace(tmp: Path) -> None:
    with ext4(tmp, size=32 * MiB) as mnt:
        target = mnt / "big"
        with pytest.raises(NoSpace) as info:
            qemuimg.create(str(target), fmt="raw", size=64 * MiB, preallocation="falloc")
        assert info.value.code == 211


@pytest.mark.timeout(60)
def test_full_preallocation_can_be_aborted(tmp: Path) -> None:
    aborter = Aborter("t")
    timer = threading.Timer(0.2, aborter.abort)
    timer.start()
    try:
        with pytest.raises(TaskAborted):
            qemuimg.create(str(tmp / "huge"), fmt="raw", size=2 * GiB, preallocation="full",
                           timeout=60, abort=aborter)
    finally:
        timer.cancel()
