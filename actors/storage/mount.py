"""Storage connections: a local directory, a posix filesystem or an NFS export, under one root.

Every connection gets a path ``<root>/<escaped connection>``: a symlink to the directory for
``localfs``, a mount point for ``posixfs`` and ``nfs``. Domains are then found at
``<root>/*/<sdUUID>`` whatever their kind. Connecting and disconnecting are idempotent; what
is mounted is always read from ``/proc/self/mounts``.

NFS is mounted ``soft`` with ``timeo``/``retrans`` so that a dead server fails I/O in bounded
time (timeo deciseconds x retrans attempts) instead of hanging it forever, and with
``nosharecache`` so that two connections to one server keep their own options.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from actors.storage import loopdev
from actors.storage.command import run
from messaging.errors import InvalidParams, StorageConnectionError, StorageError
from messaging.schema.types import check_text

log = logging.getLogger(__name__)

ConnectionKind = Literal["localfs", "posixfs", "nfs"]
PROC_MOUNTS = Path("/proc/self/mounts")
TIMEOUT = 60.0
NFS_VERSIONS = ("", "3", "4", "4.0", "4.1", "4.2")
_REMOTE_RE = re.compile(r"[^\s/:][^\s:]*:/\S*")
_OCTAL_RE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Connection:
    kind: ConnectionKind
    spec: str
    """A directory (localfs), a device or ``host:/path`` (posixfs), ``host:/export`` (nfs)."""
    vfs_type: str = ""
    mnt_options: str = ""
    nfs_version: str = ""
    nfs_timeo: int = 600
    """Deciseconds before an NFS request is retried."""
    nfs_retrans: int = 6

    def __post_init__(self) -> None:
        spec = self.spec
        if not spec or len(spec) > 1024:
            raise InvalidParams("connection", f"{spec[:64]!r} is not a valid connection")
        check_text(spec, "connection")
        if self.kind == "localfs" and not spec.startswith("/"):
            raise InvalidParams("connection", f"{spec[:64]!r} is not an absolute path")
        path = spec.partition(":/")[2] if _REMOTE_RE.fullmatch(spec) else spec
        if any(part in (".", "..") for part in path.split("/")):
            raise InvalidParams("connection", f"{spec[:64]!r} has a '.' or '..' component")
        if self.kind == "nfs" and _REMOTE_RE.fullmatch(spec) is None:
            raise InvalidParams("connection", f"{spec[:64]!r} is not host:/export")
        if self.kind == "posixfs" and not (spec.startswith("/") or _REMOTE_RE.fullmatch(spec)):
            raise InvalidParams("connection", f"{spec[:64]!r} is neither a path nor host:/path")
        if re.fullmatch(r"[a-z0-9.]*", self.vfs_type) is None:
            raise InvalidParams("vfs_type", f"{self.vfs_type[:32]!r} is not a filesystem type")
        check_text(self.mnt_options, "mnt_options")
        if re.search(r"\s", self.mnt_options):
            raise InvalidParams("mnt_options", "mount options cannot contain whitespace")
        if self.nfs_version not in NFS_VERSIONS:
            raise InvalidParams("nfs_version", f"{self.nfs_version!r} is not one of "
                                f"{', '.join(v for v in NFS_VERSIONS if v)}")

    @classmethod
    def from_params(cls, kind: ConnectionKind, params: Mapping[str, Any]) -> Connection:
        """From one ``connectionParams`` map of ``StoragePool.connectStorageServer``."""
        return cls(
            kind=kind,
            spec=str(params["connection"]),
            vfs_type=str(params.get("vfs_type") or ("nfs" if kind == "nfs" else "")),
            mnt_options=str(params.get("mnt_options") or ""),
            nfs_version=str(params.get("nfs_version") or ""),
            nfs_timeo=int(params["nfs_timeo"]) if params.get("nfs_timeo") is not None else 600,
            nfs_retrans=(int(params["nfs_retrans"]) if params.get("nfs_retrans") is not None
                         else 6),
        )


@dataclass(frozen=True)
class MountEntry:
    source: str
    target: str
    fstype: str
    options: tuple[str, ...]


def _unescape(field: str) -> str:
    return _OCTAL_RE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> tuple[MountEntry, ...]:
    """Entries of a ``/proc/self/mounts`` text (octal escapes such as ``\\040`` decoded)."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        entries.append(MountEntry(_unescape(fields[0]), _unescape(fields[1]), fields[2],
                                  tuple(fields[3].split(","))))
    return tuple(entries)


def mounts(path: Path = PROC_MOUNTS) -> tuple[MountEntry, ...]:
    return parse_mounts(path.read_text())


def escape(spec: str) -> str:
    """A one-component name for ``spec``, injective: ``%`` -> ``%25``, ``_`` -> ``%5F``, then
    ``/`` -> ``_`` (so ``/srv/data`` is ``_srv_data``)."""
    name = spec.replace("%", "%25").replace("_", "%5F").replace("/", "_")
    if name in ("", ".", "..") or len(name.encode()) > 255:
        raise InvalidParams("connection", f"{spec[:64]!r} cannot name a mount point")
    return name


class Connector:
    """Connects and disconnects storage under ``root`` (created on demand)."""

    def __init__(self, root: Path, *, timeout: float = TIMEOUT,
                 mounts_file: Path = PROC_MOUNTS) -> None:
        self.root = Path(os.path.realpath(root))
        self.timeout = timeout
        self.mounts_file = mounts_file

    def path(self, conn: Connection) -> Path:
        return self.root / escape(conn.spec)

    def mount_options(self, conn: Connection) -> str:
        options: list[str] = []
        if conn.kind == "nfs":
            options += ["soft", "nosharecache", f"timeo={conn.nfs_timeo}",
                        f"retrans={conn.nfs_retrans}"]
            if conn.nfs_version:
                options.append(f"vers={conn.nfs_version}")
        if conn.mnt_options:
            options += [o for o in conn.mnt_options.split(",") if o]
        return ",".join(options)

    def mount_command(self, conn: Connection) -> list[str]:
        if conn.kind == "localfs":
            raise ValueError("a localfs connection is not mounted")
        args = ["mount"]
        vfs_type = conn.vfs_type or ("nfs" if conn.kind == "nfs" else "")
        if vfs_type:
            args += ["-t", vfs_type]
        options = self.mount_options(conn)
        if options:
            args += ["-o", options]
        return [*args, conn.spec, str(self.path(conn))]

    def mounted(self, conn: Connection) -> MountEntry | None:
        """The mount at this connection's mount point, if any (whatever its source)."""
        target = str(self.path(conn))
        found = [e for e in mounts(self.mounts_file) if e.target == target]
        return found[-1] if found else None

    def _same_source(self, conn: Connection, entry: MountEntry) -> bool:
        if entry.source == conn.spec:
            return True
        if not conn.spec.startswith("/"):
            return entry.source.rstrip("/") == conn.spec.rstrip("/")
        real = os.path.realpath(conn.spec)
        if entry.source == real:
            return True
        return Path(real).is_file() and any(d.device == entry.source for d in loopdev.find(real))

    def is_connected(self, conn: Connection) -> bool:
        path = self.path(conn)
        if conn.kind == "localfs":
            return path.is_symlink() and str(path.readlink()) == conn.spec
        entry = self.mounted(conn)
        return entry is not None and self._same_source(conn, entry)

    def connect(self, conn: Connection) -> Path:
        """Make the connection's path usable; return it. Nothing to do if already connected."""
        path = self.path(conn)
        self.root.mkdir(parents=True, exist_ok=True)
        if conn.kind == "localfs":
            return self._link(conn, path)
        entry = self.mounted(conn)
        if entry is not None:
            if self._same_source(conn, entry):
                log.debug("%s is already mounted at %s", conn.spec, path)
                return path
            raise StorageConnectionError(connection=conn.spec,
                                         reason=f"{path} is busy with {entry.source}")
        path.mkdir(exist_ok=True)
        try:
            run(self.mount_command(conn), timeout=self.timeout)
        except StorageError as e:
            self._rmdir(path)
            raise StorageConnectionError(connection=conn.spec, reason=e.message) from None
        if self.mounted(conn) is None:
            raise StorageConnectionError(connection=conn.spec,
                                         reason=f"mount succeeded but {path} is not a mount")
        log.info("mounted %s (%s) at %s", conn.spec, conn.kind, path)
        return path

    def _link(self, conn: Connection, path: Path) -> Path:
        target = Path(conn.spec)
        if not target.is_dir():
            raise StorageConnectionError(connection=conn.spec, reason="not a directory")
        if not os.access(target, os.R_OK | os.W_OK | os.X_OK):
            raise StorageConnectionError(connection=conn.spec, reason="permission denied")
        if path.is_symlink():
            if str(path.readlink()) == conn.spec:
                return path
            path.unlink()
        elif path.exists():
            raise StorageConnectionError(connection=conn.spec,
                                         reason=f"{path} exists and is not a symlink")
        path.symlink_to(conn.spec)
        log.info("linked local directory %s at %s", conn.spec, path)
        return path

    def disconnect(self, conn: Connection, *, force: bool = False) -> None:
        """Unmount (or unlink) the connection; nothing to do if it is not connected.

        ``force`` falls back to a forced lazy unmount when a plain one fails (a dead server).
        """
        path = self.path(conn)
        if conn.kind == "localfs":
            if path.is_symlink():
                path.unlink()
            return
        if self.mounted(conn) is not None:
            try:
                run(["umount", str(path)], timeout=self.timeout)
            except StorageError as e:
                if not force:
                    raise StorageConnectionError(connection=conn.spec, reason=e.message) from None
                log.warning("umount %s failed (%s): forcing a lazy unmount", path, e.message)
                run(["umount", "--force", "--lazy", str(path)], timeout=self.timeout)
            log.info("unmounted %s from %s", conn.spec, path)
        self._rmdir(path)

    def _rmdir(self, path: Path) -> None:
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove mount point %s: %s", path, e)
