from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.storage import loopdev
from messaging.errors import StorageError
from tests.storage.helpers import sparse_file

MiB = 1 << 20


@pytest.mark.timeout(30)
def test_attach_find_refresh_detach(tmp: Path) -> None:
    path = sparse_file(tmp / "vol", 8 * MiB)
    device = loopdev.attach(path)
    try:
        assert device.startswith("/dev/loop")
        info = loopdev.info(device)
        assert info.backing_file == str(path.resolve())
        assert info.size == 8 * MiB
        assert info.direct_io
        assert not info.read_only
        assert [d.device for d in loopdev.find(path)] == [device]
        assert device in [d.device for d in loopdev.list_devices()]
        with path.open("r+b") as f:
            f.truncate(24 * MiB)
        assert loopdev.info(device).size == 8 * MiB
        assert loopdev.refresh(device) == 24 * MiB
        fd = os.open(device, os.O_RDONLY)
        try:
            assert os.lseek(fd, 0, os.SEEK_END) == 24 * MiB
        finally:
            os.close(fd)
    finally:
        loopdev.detach(device)
    assert loopdev.find(path) == ()
    loopdev.detach(device)  # idempotent


@pytest.mark.timeout(30)
def test_read_only_and_buffered(tmp: Path) -> None:
    path = sparse_file(tmp / "ro", MiB)
    device = loopdev.attach(path, read_only=True, direct_io=False)
    try:
        info = loopdev.info(device)
        assert info.read_only
        assert not info.direct_io
    finally:
        assert loopdev.detach_file(path) == 1
    assert loopdev.detach_file(path) == 0


@pytest.mark.timeout(30)
def test_find_through_a_symlink_and_deleted_backing(tmp: Path) -> None:
    path = sparse_file(tmp / "vol", MiB)
    link = tmp / "link"
    link.symlink_to(path)
    device = loopdev.attach(link)
    try:
        assert [d.device for d in loopdev.find(link)] == [device]
        path.unlink()
        assert loopdev.info(device).deleted
        assert loopdev.find(path) == ()
    finally:
        loopdev.detach(device)


@pytest.mark.timeout(10)
def test_refuses_what_is_not_a_loop_device_or_file(tmp: Path) -> None:
    with pytest.raises(StorageError, match="not a loop device"):
        loopdev.info("/dev/sda")
    with pytest.raises(StorageError, match="not a loop device"):
        loopdev.detach("/dev/../etc/passwd")
    with pytest.raises(StorageError, match="not a regular file"):
        loopdev.attach(tmp)
    with pytest.raises(StorageError, match="not attached"):
        loopdev.info("/dev/loop999999")


@pytest.mark.timeout(10)
def test_list_from_a_fake_sysfs(tmp: Path) -> None:
    for name, backing, size in (("loop10", "/x/a (deleted)", "16"), ("loop2", "/x/b", "8")):
        (tmp / name / "loop").mkdir(parents=True)
        (tmp / name / "loop" / "backing_file").write_text(backing + "\n")
        (tmp / name / "loop" / "dio").write_text("0\n")
        (tmp / name / "size").write_text(size + "\n")
        (tmp / name / "ro").write_text("1\n")
    (tmp / "loop3").mkdir()  # not attached: no loop/ directory
    devices = loopdev.list_devices(tmp)
    assert [d.device for d in devices] == ["/dev/loop2", "/dev/loop10"]
    assert devices[1].deleted
    assert devices[1].backing_file == "/x/a"
    assert devices[0].size == 8 * 512
    assert loopdev.find("/x/b", tmp)[0].device == "/dev/loop2"
