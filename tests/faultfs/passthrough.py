"""The passthrough filesystem: every operation consults the rules, then does it on SOURCE.

Files are opened on the backing filesystem *without* O_DIRECT (O_DIRECT needs aligned
buffers, and the mount is ``direct_io`` anyway: the kernel sends every read and write of every
caller here, uncached, whatever its flags). Open files are addressed by the backing file
descriptor (``fh``), so a file unlinked or renamed while open keeps working; its path at open
time is remembered for matching rules when libfuse has no path for it any more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import threading
from typing import Any

import mfusepy

from tests.faultfs.rules import RuleSet

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]

OPEN_FLAGS = os.O_ACCMODE | os.O_SYNC | os.O_DSYNC
"""Flags passed on to the backing file (O_DIRECT, O_APPEND and creation flags are not:
the kernel already turned those into the offsets and calls we get)."""

STAT_KEYS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
             "st_blksize", "st_rdev")


class FaultFS(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, source: str, rules: RuleSet) -> None:
        self.source = os.path.realpath(source)
        self.rules = rules
        self._paths: dict[int, str] = {}
        self._lock = threading.Lock()

    # --- helpers -----------------------------------------------------------------------

    def _full(self, path: str) -> str:
        return self.source + path if path != "/" else self.source

    def _fault(self, op: str, *paths: str | None, fh: int | None = None) -> None:
        rel = tuple(p.lstrip("/") for p in paths if p is not None)
        if not rel and fh is not None:
            with self._lock:
                known = self._paths.get(fh)
            rel = (known.lstrip("/"),) if known is not None else ()
        _uid, _gid, pid = mfusepy.fuse_get_context()
        self.rules.apply(op, rel, pid)

    def _owned(self, full: str) -> None:
        """Give what a caller created to the caller (the server runs as root)."""
        uid, gid, _pid = mfusepy.fuse_get_context()
        if uid != 0 or gid != 0:
            os.lchown(full, uid, gid)

    def _remember(self, fh: int, path: str) -> int:
        with self._lock:
            self._paths[fh] = path
        return fh

    # --- lifecycle and attributes --------------------------------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        if config is not None:
            config.direct_io = 1
            config.hard_remove = 1  # no .fuse_hidden files: unlink really unlinks
            config.use_ino = 1
            config.attr_timeout = 0.0  # every stat reaches the rules
            config.entry_timeout = 0.0
            config.negative_timeout = 0.0

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        self._fault("getattr", path, fh=fh)
        st = os.fstat(fh) if fh is not None else os.lstat(self._full(path or "/"))
        attrs = {k: getattr(st, k) for k in STAT_KEYS}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def access(self, path: str, amode: int) -> int:
        self._fault("access", path)
        if not os.access(self._full(path), amode):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        self._fault("statfs", path)
        st = os.statvfs(self._full(path))
        return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                            "f_bavail", "f_files", "f_ffree", "f_favail",
                                            "f_namemax")}

    def chmod(self, path: str | None, mode: int) -> int:
        self._fault("chmod", path)
        os.chmod(self._full(path or "/"), mode)
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        self._fault("chown", path)
        os.lchown(self._full(path or "/"), uid, gid)
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        self._fault("utimens", path)
        full = self._full(path or "/")
        if times is None:
            os.utime(full, follow_symlinks=False)
        else:
            os.utime(full, ns=times, follow_symlinks=False)
        return 0

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self._fault("truncate", path, fh=fh)
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._full(path or "/"), length)
        return 0

    # --- the namespace -----------------------------------------------------------------

    def readlink(self, path: str) -> str:
        self._fault("readlink", path)
        return os.readlink(self._full(path))

    def mknod(self, path: str, mode: int, dev: int) -> int:
        self._fault("mknod", path)
        os.mknod(self._full(path), mode, dev)
        self._owned(self._full(path))
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        self._fault("mkdir", path)
        os.mkdir(self._full(path), mode)
        self._owned(self._full(path))
        return 0

    def rmdir(self, path: str) -> int:
        self._fault("rmdir", path)
        os.rmdir(self._full(path))
        return 0

    def unlink(self, path: str) -> int:
        self._fault("unlink", path)
        os.unlink(self._full(path))
        return 0

    def symlink(self, target: str, source: str) -> int:
        """``target`` is the new link's path, ``source`` what it points to (mfusepy's names)."""
        self._fault("symlink", target)
        os.symlink(source, self._full(target))
        self._owned(self._full(target))
        return 0

    def link(self, target: str, source: str) -> int:
        self._fault("link", target, source)
        os.link(self._full(source), self._full(target))
        return 0

    def rename(self, old: str, new: str) -> int:
        self._fault("rename", old, new)
        os.rename(self._full(old), self._full(new))
        return 0

    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """Entries with their inode numbers (``use_ino``: an entry of inode 0 would be
        skipped by readdir(3)) and file types."""
        self._fault("readdir", path)
        full = self._full(path or "/")
        entries = []
        for name in (".", ".."):
            st = os.lstat(os.path.join(full, name))
            entries.append((name, {"st_ino": st.st_ino, "st_mode": st.st_mode}, 0))
        with os.scandir(full) as it:
            for entry in it:
                try:
                    mode = entry.stat(follow_symlinks=False).st_mode
                except FileNotFoundError:  # gone since the listing
                    continue
                entries.append((entry.name, {"st_ino": entry.inode(), "st_mode": mode}, 0))
        return entries

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        self._fault("fsyncdir", path)
        fd = os.open(self._full(path or "/"), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0

    # --- files -------------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        self._fault("open", path)
        fd = os.open(self._full(path), (flags & OPEN_FLAGS) | os.O_CLOEXEC)
        return self._remember(fd, path)

    def create(self, path: str, mode: int, flags: int) -> int:
        self._fault("create", path)
        full = self._full(path)
        wanted = (flags & (OPEN_FLAGS | os.O_EXCL | os.O_TRUNC)) | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(full, wanted, mode)
        self._owned(full)
        return self._remember(fd, path)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        self._fault("read", path, fh=fh)
        return os.pread(fh, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        self._fault("write", path, fh=fh)
        return os.pwrite(fh, data, offset)

    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fh: int) -> int:
        self._fault("fallocate", path, fh=fh)
        if _libc.fallocate(fh, mode, offset, size) != 0:
            raise mfusepy.FuseOSError(ctypes.get_errno())
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self._fault("fsync", path, fh=fh)
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        self._fault("flush", path, fh=fh)
        return 0

    def release(self, path: str | None, fh: int) -> int:
        """Never faulted: the kernel does not wait for it, and nothing could see the error."""
        with self._lock:
            self._paths.pop(fh, None)
        os.close(fh)
        return 0
