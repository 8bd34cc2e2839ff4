"""Small durable-file helpers: synced and atomic writes, directory fsync, idempotent removal."""

from __future__ import annotations

import errno
import logging
import os
import secrets
from pathlib import Path

from messaging.errors import NoSpace, StorageError

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (however many writes it takes), then fsync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync of the directory.

    A reader sees the old content or the new one, never a mix, even across a crash.
    Raises :class:`NoSpace` when the filesystem is full (the temp file is removed).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            write_synced(fd, data)
        finally:
            os.close(fd)
        tmp.replace(path)
    except OSError as e:
        try:
            remove(tmp)
        except OSError:
            pass  # the storage fails: the temp file stays, named as ours, for later
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(where=str(path.parent), reason=e.strerror or "no space") from None
        raise StorageError(reason=f"cannot write {path}: {e.strerror or e}") from None
    try:
        fsync_dir(path.parent)
    except OSError as e:
        raise StorageError(reason=f"cannot sync {path.parent}: {e.strerror or e}") from None


def remove(path: Path) -> bool:
    """Unlink ``path`` if it exists; whether it existed."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def rmdir(path: Path) -> bool:
    """Remove the empty directory ``path`` if it exists; whether it was removed."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.ENOTEMPTY:
            log.warning("directory %s is not empty: left in place", path)
            return False
        raise
    return True


def allocated(path: Path) -> int:
    """Bytes really allocated to ``path`` (st_blocks), 0 when it is gone."""
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def fallocate(path: Path, size: int) -> None:
    """Reserve the first ``size`` bytes of ``path`` (growing it); :class:`NoSpace` if full."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(where=str(path.parent), reason=f"cannot allocate {size} bytes for "
                          f"{path.name}: {e.strerror}") from None
        raise
    finally:
        os.close(fd)
