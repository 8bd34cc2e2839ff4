"""Finding a storage domain by UUID and opening its backend, creating new domains.

A file or loop domain is ``<mnt_root>/<connection>/<sdUUID>`` (see
:mod:`actors.storage.sd.discover`); an LVM domain is the VG whose tags name it. Where a domain
was found is cached (a location is cheap to re-check, a search touches every connection), and
forgotten when the domain is not there any more. Every method here does storage I/O and may
hang on a dead mount: call it from a worker, never from an actor's thread. The cache is
thread-safe; the backends it returns are fresh objects, one per caller.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from actors.storage import mount
from actors.storage.lvm import Lvm
from actors.storage.sd import discover
from actors.storage.sd.backend import StorageDomainBackend
from actors.storage.sd.filecreate import FilePreallocation
from actors.storage.sd.filedomain import FileDomain
from actors.storage.sd.filelayout import Layout
from actors.storage.sd.loopdomain import LoopDomain
from actors.storage.sd.lvmdomain import LvmDomain, find_vg
from actors.storage.sd.records import check_uuid
from messaging.errors import (
    InvalidParams,
    NoSuchStorageDomain,
    StorageConnectionError,
    StorageDomainExists,
    StorageError,
)

log = logging.getLogger(__name__)

FILE_TYPES = ("localfs", "posixfs", "nfs", "loop")
LVM_TYPES = ("iscsi", "fcp")


@dataclass(frozen=True)
class _Where:
    mount: Path | None = None
    vg: str | None = None


def unescape(name: str) -> str:
    """The connection string a mount point name was made from (see mount.escape)."""
    return name.replace("_", "/").replace("%5F", "_").replace("%25", "%")


class DomainLocator:
    def __init__(self, *, mnt_root: Path, links_dir: Path,
                 file_preallocation: FilePreallocation = "falloc", lvm: bool = True) -> None:
        self.mnt_root = mnt_root
        self.links_dir = links_dir
        self.file_preallocation: FilePreallocation = file_preallocation
        self.lvm = lvm
        self._lock = threading.Lock()
        self._where: dict[str, _Where] = {}

    def connection_path(self, spec: str) -> Path:
        """Where a connection with this ``connection`` string is connected."""
        return self.mnt_root / mount.escape(spec)

    # --- opening ---------------------------------------------------------------------

    def open(self, sd_uuid: str) -> StorageDomainBackend:
        """The backend of domain ``sd_uuid``; :class:`NoSuchStorageDomain` if none."""
        sd_uuid = check_uuid(sd_uuid, "storagedomainID")
        with self._lock:
            where = self._where.get(sd_uuid)
        if where is not None:
            try:
                return self._open_at(sd_uuid, where)
            except NoSuchStorageDomain:
                self.forget(sd_uuid)
        where = self._search(sd_uuid)
        backend = self._open_at(sd_uuid, where)
        with self._lock:
            self._where[sd_uuid] = where
        return backend

    def forget(self, sd_uuid: str) -> None:
        with self._lock:
            self._where.pop(sd_uuid, None)

    def _search(self, sd_uuid: str) -> _Where:
        try:
            return _Where(mount=discover.find_file_domain(self.mnt_root, sd_uuid))
        except NoSuchStorageDomain:
            if not self.lvm:
                raise
        try:
            vg = find_vg(Lvm(), sd_uuid)
        except StorageError as e:
            log.debug("looking for domain %s in LVM failed: %s", sd_uuid, e)
            vg = None
        if vg is None:
            raise NoSuchStorageDomain(sdUUID=sd_uuid)
        return _Where(vg=vg)

    def _open_at(self, sd_uuid: str, where: _Where) -> StorageDomainBackend:
        if where.vg is not None:
            return LvmDomain(where.vg, sd_uuid, lvm=Lvm(), run_dir=self.links_dir)
        assert where.mount is not None
        meta = Layout(where.mount, sd_uuid).read_metadata()
        if meta.domain_type in LoopDomain.DOMAIN_TYPES:
            return LoopDomain(where.mount, sd_uuid, run_dir=self.links_dir)
        return FileDomain(where.mount, sd_uuid, preallocation=self.file_preallocation)

    def remote_path(self, backend: StorageDomainBackend) -> str:
        """The connection string (file domains) or VG name (LVM) the domain lives on."""
        if isinstance(backend, LvmDomain):
            return backend.vg_name
        if isinstance(backend, FileDomain):
            return unescape(backend.layout.mount.name)
        return ""

    # --- creating --------------------------------------------------------------------

    def create(self, sd_uuid: str, *, domain_type: str, type_args: str, name: str,
               domain_class: str, version: int) -> StorageDomainBackend:
        """Create a domain on connected storage; :class:`StorageDomainExists` if it exists."""
        sd_uuid = check_uuid(sd_uuid, "storagedomainID")
        try:
            self.open(sd_uuid)
        except NoSuchStorageDomain:
            pass
        else:
            raise StorageDomainExists(sdUUID=sd_uuid)
        backend: StorageDomainBackend
        if domain_type in LVM_TYPES:
            backend = LvmDomain.create(type_args, sd_uuid, lvm=Lvm(), name=name,
                                       domain_type=domain_type, domain_class=domain_class,
                                       version=version, run_dir=self.links_dir)
            where = _Where(vg=type_args)
        elif domain_type in FILE_TYPES:
            try:
                path = self.connection_path(type_args)
            except InvalidParams as e:  # named after the param the client sent
                raise InvalidParams("typeArgs", e.reason) from None
            if not path.is_dir():
                raise StorageConnectionError(connection=type_args,
                                             reason="not connected (connectStorageServer first)")
            if domain_type in LoopDomain.DOMAIN_TYPES:
                backend = LoopDomain.create(path, sd_uuid, name=name, domain_type=domain_type,
                                            domain_class=domain_class, version=version,
                                            run_dir=self.links_dir)
            else:
                backend = FileDomain.create(path, sd_uuid, name=name, domain_type=domain_type,
                                            domain_class=domain_class, version=version,
                                            preallocation=self.file_preallocation)
            where = _Where(mount=path)
        else:
            raise StorageError(reason=f"unknown domain type {domain_type!r}")
        with self._lock:
            self._where[sd_uuid] = where
        return backend
