"""Aligned O_DIRECT sector I/O on real files: sector sizes, errors, a frozen filesystem."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors.storage.lease import aligned
from actors.storage.lease.errors import IoBusy, IoFailed, IoTimeout
from actors.storage.lease.sectorfile import SectorFile
from tests.storage.helpers import ext4, frozen, loop_device, sparse_file
from tests.storage.lease.conftest import Store, ext4_4k


def test_detects_sector_size_of_files_and_devices(tmp: Path) -> None:
    small = tmp / "small"
    small.write_bytes(b"x" * 100)
    big = tmp / "big"
    big.write_bytes(bytes(8192))
    assert aligned.detect_sector_size(big) == 512
    assert aligned.detect_sector_size(small) == 512
    with ext4_4k(tmp) as mnt:
        (mnt / "big").write_bytes(bytes(8192))
        (mnt / "small").write_bytes(b"x" * 100)
        assert aligned.detect_sector_size(mnt / "big") == 4096  # O_DIRECT probe: EINVAL
        assert aligned.detect_sector_size(mnt / "small") == 4096  # sysfs of the loop device
    with loop_device(sparse_file(tmp / "dev.img", 1 << 20)) as device:
        assert aligned.detect_sector_size(device) == 512  # BLKSSZGET


def test_write_then_read_back_through_o_direct(store: Store) -> None:
    ss = store.sector_size
    assert aligned.detect_sector_size(store.ids) == ss
    f = SectorFile(store.ids, sector_size=ss, span=4 * ss, io_timeout=5, write=True)
    try:
        data = bytes(range(256)) * (ss // 256)
        done = f.write(2 * ss, data)
        assert done.issued <= done.completed
        got = f.read(0, 4 * ss)
        assert got.value == bytes(2 * ss) + data + bytes(ss)
        assert store.ids.read_bytes()[2 * ss:3 * ss] == data  # really on the file
        with pytest.raises(ValueError, match="not aligned"):
            f.read(1, ss)
        with pytest.raises(ValueError, match="not aligned"):
            f.write(0, b"short")
        with pytest.raises(ValueError, match="span"):
            f.read(0, 8 * ss)
    finally:
        f.close()
    reader = SectorFile(store.ids, sector_size=ss, span=ss, io_timeout=5)
    try:
        with pytest.raises(ValueError, match="not open for writes"):
            reader.write(0, bytes(ss))
    finally:
        reader.close()


def test_512_byte_io_on_4k_storage_fails_with_an_error(tmp: Path) -> None:
    with ext4_4k(tmp) as mnt:
        (mnt / "ids").write_bytes(bytes(1 << 16))
        f = SectorFile(mnt / "ids", sector_size=512, span=512, io_timeout=5)
        try:
            with pytest.raises(IoFailed, match="Invalid argument"):
                f.read(0, 512)
        finally:
            f.close()


def test_short_and_missing_files_are_io_errors_and_the_file_is_reopened(tmp: Path) -> None:
    path = tmp / "ids"
    path.write_bytes(bytes(1024))
    f = SectorFile(path, sector_size=512, span=4096, io_timeout=5, write=True)
    try:
        with pytest.raises(IoFailed, match="short read: 1024 of 4096"):
            f.read(0, 4096)
        path.unlink()
        with pytest.raises(IoFailed, match="No such file"):
            f.read(0, 512)
        path.write_bytes(b"\x01" * 4096)
        assert f.read(0, 4096).value == b"\x01" * 4096  # opened again
    finally:
        f.close()


@pytest.mark.timeout(60)
def test_write_to_frozen_filesystem_times_out_then_busy_then_recovers(tmp: Path) -> None:
    with ext4(tmp) as mnt:
        (mnt / "ids").write_bytes(bytes(1 << 16))
        f = SectorFile(mnt / "ids", sector_size=512, span=512, io_timeout=0.3, write=True)
        try:
            f.write(0, b"\x02" * 512)  # opened for writing before the freeze
            with frozen(mnt):
                assert f.read(0, 512).value == b"\x02" * 512  # reads still answer
                with pytest.raises(IoTimeout, match=r"no answer within 0\.3 s"):
                    f.write(0, b"\x03" * 512)
                with pytest.raises(IoBusy):
                    f.read(0, 512)
            deadline = time.monotonic() + 20
            while f.io.busy_since is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert f.read(0, 512).value == b"\x03" * 512  # the abandoned write landed late
            assert f.io.late == 1
        finally:
            f.close()
