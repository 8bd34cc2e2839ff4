"""Aligned O_DIRECT I/O: what the lease areas are read and written with.

The page cache would show a host its own stale writes and hide other hosts' writes (on NFS,
O_DIRECT is the only way to see them promptly), so every read and write of a lease area
bypasses it. O_DIRECT needs the buffer, the offset and the length aligned to the device's
logical sector size (512 or 4096): buffers here are anonymous mmaps, hence page-aligned, and
offsets and lengths are checked. Writes are also O_DSYNC: a write has reached stable storage
when it returns.

Everything here blocks in the kernel as long as the storage does: call it only from a
:class:`~actors.storage.lease.timedio.TimedIO` thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import stat
import struct
from pathlib import Path

SECTOR_SIZES = (512, 4096)
_BLKSSZGET = 0x1268


def open_direct(path: str | Path, *, write: bool) -> int:
    flags = (os.O_RDWR | os.O_DSYNC) if write else os.O_RDONLY
    return os.open(path, flags | os.O_DIRECT | os.O_CLOEXEC)


class AlignedBuffer:
    """A page-aligned buffer of ``size`` bytes (rounded up to a page), allocated once."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("an aligned buffer has a positive size")
        self.size = size
        self._map = mmap.mmap(-1, (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)
        self.view = memoryview(self._map)

    def close(self) -> None:
        self.view.release()
        self._map.close()


def check_aligned(offset: int, length: int, sector_size: int) -> None:
    if sector_size not in SECTOR_SIZES:
        raise ValueError(f"sector size {sector_size} is not one of {SECTOR_SIZES}")
    if offset < 0 or length <= 0 or offset % sector_size or length % sector_size:
        raise ValueError(f"offset {offset} and length {length} are not aligned to "
                         f"{sector_size}-byte sectors")


def read_at(fd: int, buf: AlignedBuffer, offset: int, length: int) -> bytes:
    """Read exactly ``length`` bytes at ``offset``; a short read (a short file) is EIO."""
    got = os.preadv(fd, [buf.view[:length]], offset)
    if got != length:
        raise OSError(errno.EIO, f"short read: {got} of {length} bytes at offset {offset}")
    return bytes(buf.view[:length])


def write_at(fd: int, buf: AlignedBuffer, offset: int, data: bytes) -> None:
    """Write ``data`` (whole sectors) at ``offset``; a short write is EIO."""
    buf.view[: len(data)] = data
    done = os.pwritev(fd, [buf.view[: len(data)]], offset)
    if done != len(data):
        raise OSError(errno.EIO, f"short write: {done} of {len(data)} bytes at offset {offset}")


def detect_sector_size(path: str | Path) -> int:
    """The smallest sector size O_DIRECT accepts for ``path`` (512 or 4096).

    A block device answers BLKSSZGET. For a regular file, an O_DIRECT read of 512 bytes at
    offset 0 fails with EINVAL when the filesystem's device has 4096-byte sectors (checked
    on a loop device with ``--sector-size 4096``); that needs a file of at least 4096 bytes
    (past the end the kernel returns 0 bytes without checking). A smaller file falls back
    to the device's ``logical_block_size`` in sysfs, and to 512 where there is no device
    (FUSE, NFS, tmpfs: they take any alignment). Blocks in the kernel while storage hangs.
    """
    st = Path(path).stat()
    if stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            raw = fcntl.ioctl(fd, _BLKSSZGET, b"\0\0\0\0")
        finally:
            os.close(fd)
        return 4096 if struct.unpack("<i", raw)[0] > 512 else 512
    if st.st_size >= 4096:
        buf = AlignedBuffer(512)
        fd = open_direct(path, write=False)
        try:
            os.preadv(fd, [buf.view[:512]], 0)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            return 4096
        finally:
            os.close(fd)
            buf.close()
        return 512
    return _sysfs_sector_size(st.st_dev)


def _sysfs_sector_size(dev: int) -> int:
    node = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    for queue in (node / "queue", node / ".." / "queue"):  # a disk, or a partition's disk
        with contextlib.suppress(OSError, ValueError):
            return 4096 if int((queue / "logical_block_size").read_text()) > 512 else 512
    return 512
