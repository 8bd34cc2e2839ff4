"""Pool metadata, kept in the master domain's metadata, and the writes that change it.

A pool has no storage of its own: its master domain's metadata carries it, as extra keys
next to the domain's own (vdsm did the same)::

    ROLE=Master
    POOL_UUID=<spUUID>
    POOL_NAME=<name>
    POOL_DOMAINS=<sdUUID>:Active,<sdUUID>:Attached,...
    MASTER_VERSION=<n>

and every member domain's metadata says ``POOL_UUID=<spUUID>`` (``ROLE=Regular``). The text
must stay under 4 KiB (the monitor reads one O_DIRECT block), which bounds a pool to about
70 domains.

These functions block on storage I/O: they run on a pool actor's writer thread (or, for
:func:`create_pool`, on a domain worker, before any pool actor exists). Each write passes the
generation it read, so a change made meanwhile by someone else is refused rather than lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from actors.storage.locator import DomainLocator
from actors.storage.sd.backend import StorageDomainBackend
from actors.storage.sd.metadata import DomainMetadata
from actors.storage.sd.records import check_uuid
from messaging.errors import (
    InvalidParams,
    MetadataConflict,
    NoSuchStoragePool,
    StorageDomainAttached,
    StorageDomainNotAttached,
    StorageError,
    StoragePoolExists,
    WrongMasterVersion,
)
from messaging.schema.types import check_text

log = logging.getLogger(__name__)

ACTIVE = "Active"
ATTACHED = "Attached"
STATUSES = (ACTIVE, ATTACHED)
MASTER, REGULAR = "Master", "Regular"
POOL_KEYS = ("POOL_NAME", "POOL_DOMAINS", "MASTER_VERSION")


@dataclass(frozen=True)
class PoolMetadata:
    sp_uuid: str
    name: str
    master: str
    master_version: int
    domains: tuple[tuple[str, str], ...]
    """``(sdUUID, status)`` pairs, in the order they were added."""
    lver: int = field(default=0, compare=False)
    """The SPM lease version of the writer that last wrote the master (``SPM_LVER``): the
    fencing token each SPM write stamps. Not part of the pool's identity."""

    @property
    def statuses(self) -> dict[str, str]:
        return dict(self.domains)

    def with_domain(self, sd_uuid: str, status: str | None) -> PoolMetadata:
        """A copy with ``sd_uuid`` set to ``status`` (added if new; removed if None)."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown domain status {status!r}")
        if status is None:
            domains = [(sd, st) for sd, st in self.domains if sd != sd_uuid]
        elif sd_uuid in self.statuses:
            domains = [(sd, status if sd == sd_uuid else st) for sd, st in self.domains]
        else:
            domains = [*self.domains, (sd_uuid, status)]
        return replace(self, domains=tuple(domains))

    def changes(self) -> dict[str, str]:
        """The master domain's metadata keys that hold this pool (with the lver stamp)."""
        keys = {
            "POOL_UUID": self.sp_uuid, "ROLE": MASTER, "POOL_NAME": self.name,
            "POOL_DOMAINS": ",".join(f"{sd}:{st}" for sd, st in self.domains),
            "MASTER_VERSION": str(self.master_version),
        }
        if self.lver:
            keys["SPM_LVER"] = str(self.lver)
        return keys

    @classmethod
    def from_master(cls, meta: DomainMetadata) -> PoolMetadata:
        if meta.role != MASTER or not meta.pool_uuid:
            raise StorageError(reason=f"domain {meta.sd_uuid} is not a master domain")
        domains = []
        for item in filter(None, meta.get("POOL_DOMAINS").split(",")):
            sd, _, status = item.partition(":")
            try:
                sd = check_uuid(sd, "POOL_DOMAINS")
            except InvalidParams:
                status = ""
            if status not in STATUSES:
                raise StorageError(reason=f"bad POOL_DOMAINS entry {item[:80]!r} in the "
                                   f"metadata of {meta.sd_uuid}")
            domains.append((sd, status))
        try:
            version = int(meta.get("MASTER_VERSION", "0"))
        except ValueError:
            raise StorageError(reason=f"bad MASTER_VERSION in {meta.sd_uuid}") from None
        try:
            lver = int(meta.get("SPM_LVER", "0") or 0)
        except ValueError:
            lver = 0
        return cls(meta.pool_uuid, meta.get("POOL_NAME"), meta.sd_uuid, version, tuple(domains),
                   lver)

    def to_record(self) -> dict[str, object]:
        """The whole pool as plain data (what the SPM's writer sends back to vdsmd)."""
        return {"spUUID": self.sp_uuid, "name": self.name, "master": self.master,
                "masterVersion": self.master_version,
                "domains": [[sd, status] for sd, status in self.domains]}

    @classmethod
    def from_record(cls, data: Mapping[str, object]) -> PoolMetadata:
        domains = data["domains"]
        if not isinstance(domains, list):
            raise StorageError(reason="a pool record without a list of domains")
        return cls(str(data["spUUID"]), str(data["name"]), str(data["master"]),
                   int(str(data["masterVersion"])),
                   tuple((str(sd), str(st)) for sd, st in domains))

    def to_wire(self) -> dict[str, object]:
        return {"name": self.name, "master_uuid": self.master,
                "master_ver": self.master_version, "spm_id": -1, "lver": -1,
                "domains": ",".join(f"{sd}:{st}" for sd, st in self.domains),
                "type": "", "pool_status": "connected"}


def _write(backend: StorageDomainBackend, meta: DomainMetadata,
           changes: Mapping[str, str]) -> DomainMetadata:
    try:
        return backend.update_metadata(changes, expected_generation=meta.generation)
    except ValueError as e:  # the text would not fit in one block
        raise StorageError(reason=f"metadata of {meta.sd_uuid} is full: {e}") from None


def read_pool(locator: DomainLocator, sp_uuid: str, master_sd: str,
              master_version: int | None) -> PoolMetadata:
    """The pool as its master domain describes it (version checked unless None)."""
    meta = locator.open(master_sd).read_metadata()
    if meta.pool_uuid != sp_uuid or meta.role != MASTER:
        raise NoSuchStoragePool(spUUID=sp_uuid, data={"master": master_sd})
    pool = PoolMetadata.from_master(meta)
    if master_version is not None and pool.master_version != master_version:
        raise WrongMasterVersion(sdUUID=master_sd, spUUID=sp_uuid,
                                 found=pool.master_version, expected=master_version)
    return pool


def create_pool(locator: DomainLocator, *, sp_uuid: str, name: str, master_sd: str,
                master_version: int, domain_list: Sequence[str]) -> PoolMetadata:
    """Make ``master_sd`` the master of a new pool holding ``domain_list`` (all attached,
    the master active). Checks every domain before writing anything; on a failure undoes
    the writes already made."""
    check_text(name, "name", forbidden=",")  # POOL_DOMAINS-style lists use commas
    members = list(dict.fromkeys([master_sd, *domain_list]))
    opened = [(locator.open(sd), sd) for sd in members]
    metas = {sd: backend.read_metadata() for backend, sd in opened}
    for sd, meta in metas.items():
        if meta.pool_uuid == sp_uuid:
            raise StoragePoolExists(spUUID=sp_uuid)
        if meta.pool_uuid:
            raise StorageDomainAttached(sdUUID=sd, spUUID=meta.pool_uuid)
        if meta.domain_class != "data" and sd == master_sd:
            raise StorageError(reason=f"domain {sd} ({meta.domain_class}) cannot be a master")
    pool = PoolMetadata(sp_uuid, name, master_sd, master_version,
                        tuple((sd, ACTIVE if sd == master_sd else ATTACHED) for sd in members))
    done: list[tuple[StorageDomainBackend, DomainMetadata]] = []
    try:
        for backend, sd in opened:
            changes = pool.changes() if sd == master_sd else {"POOL_UUID": sp_uuid,
                                                              "ROLE": REGULAR}
            done.append((backend, _write(backend, metas[sd], changes)))
    except BaseException:
        for backend, meta in reversed(done):
            _undo(backend, meta)
        raise
    log.info("created pool %s (%s) with master %s and %d domain(s)", sp_uuid, name, master_sd,
             len(members))
    return pool


def _undo(backend: StorageDomainBackend, meta: DomainMetadata) -> None:
    try:
        backend.update_metadata({"POOL_UUID": "", "ROLE": REGULAR,
                                 **dict.fromkeys(POOL_KEYS, "")})
    except Exception as e:  # noqa: BLE001 - each undo is tried; the first error is raised
        log.error("cannot undo the pool membership of %s: %s", meta.sd_uuid, e)


def attach(locator: DomainLocator, pool: PoolMetadata, sd_uuid: str) -> PoolMetadata:
    """Attach ``sd_uuid`` (status Attached): the domain first, then the master."""
    if sd_uuid in pool.statuses:
        return pool
    backend = locator.open(sd_uuid)
    meta = backend.read_metadata()
    if meta.pool_uuid and meta.pool_uuid != pool.sp_uuid:
        raise StorageDomainAttached(sdUUID=sd_uuid, spUUID=meta.pool_uuid)
    if meta.pool_uuid != pool.sp_uuid:
        meta = _write(backend, meta, {"POOL_UUID": pool.sp_uuid, "ROLE": REGULAR})
    new = pool.with_domain(sd_uuid, ATTACHED)
    try:
        write_master(locator, pool, new)
    except BaseException:
        _undo(backend, meta)
        raise
    return new


def detach(locator: DomainLocator, pool: PoolMetadata, sd_uuid: str) -> PoolMetadata:
    """Detach ``sd_uuid``: the master first, then the domain (which may be gone)."""
    if sd_uuid == pool.master:
        raise StorageError(reason=f"{sd_uuid} is the master domain of pool {pool.sp_uuid}")
    new = pool.with_domain(sd_uuid, None)
    if sd_uuid in pool.statuses:
        write_master(locator, pool, new)
    backend = locator.open(sd_uuid)
    meta = backend.read_metadata()
    if meta.pool_uuid == pool.sp_uuid:
        _write(backend, meta, {"POOL_UUID": "", "ROLE": REGULAR})
    return new


def set_status(locator: DomainLocator, pool: PoolMetadata, sd_uuid: str,
               status: str) -> PoolMetadata:
    if sd_uuid not in pool.statuses:
        raise StorageDomainNotAttached(sdUUID=sd_uuid, spUUID=pool.sp_uuid)
    if pool.statuses[sd_uuid] == status:
        return pool
    new = pool.with_domain(sd_uuid, status)
    write_master(locator, pool, new)
    return new


def write_master(locator: DomainLocator, old: PoolMetadata, new: PoolMetadata) -> None:
    """Replace the pool part of the master's metadata, refusing if it changed meanwhile."""
    backend = locator.open(old.master)
    meta = backend.read_metadata()
    if PoolMetadata.from_master(meta) != old:
        raise MetadataConflict(f"the metadata of pool {old.sp_uuid} changed on its master "
                               f"{old.master} behind this host's back (generation "
                               f"{meta.generation})", what=f"pool {old.sp_uuid}",
                               found=meta.generation, expected="the one read")
    _write(backend, meta, new.changes())
