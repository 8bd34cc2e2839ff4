"""LVM block domains (iscsi, fcp): a VG per domain, an LV per volume, metadata in tags.

The VG carries the domain metadata as tags and five special LVs (``metadata``, ``ids``,
``leases``, ``inbox``, ``outbox``) for the monitor, the leases and the mailbox; each volume is
an LV named after its UUID, tagged with its image and metadata (see
:mod:`actors.storage.sd.lvmtags`). LVs are created inactive and activated by
:meth:`LvmDomain.prepare` only; a prepared volume is linked as
``<run_dir>/<sdUUID>/<imgUUID>/<volUUID>`` -> ``/dev/<vg>/<volUUID>``, so that the relative
backing names in qcow2 headers resolve to the parents' LVs.

On a kernel without device-mapper (this test machine) everything but activation works:
creating a raw volume, extending, tagging and removing; creating a cow volume (its qcow2
header is written through the activated LV) and :meth:`LvmDomain.prepare` fail with a clear
"device-mapper is not available" error, and a failed creation is rolled back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from actors.storage import fileutil
from actors.storage.lvm import LvInfo, Lvm
from actors.storage.sd import blocksize, lvmtags
from actors.storage.sd import metadata as md
from actors.storage.sd.backend import decoded_metadata, updated_metadata
from actors.storage.sd.lvmvolumes import LvmVolumes
from actors.storage.sd.records import DomainStats, ProbeTarget, check_uuid
from messaging.errors import (
    InvalidParams,
    NoSuchStorageDomain,
    StorageDomainExists,
    StorageError,
)
from messaging.schema.types import check_text

log = logging.getLogger(__name__)

VG_NAME_RE = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.\-]{0,126}")
SPECIAL_LVS = {"metadata": 128 << 20, "ids": 8 << 20, "leases": 1 << 30, "inbox": 16 << 20,
               "outbox": 16 << 20}


def check_vg_name(name: str) -> str:
    if VG_NAME_RE.fullmatch(name) is None or name in (".", ".."):
        raise InvalidParams("typeArgs", f"{name[:64]!r} is not a volume group name")
    return name


def find_vg(lvm: Lvm, sd_uuid: str) -> str | None:
    """The VG holding domain ``sd_uuid`` among those ``lvm`` sees."""
    sd_uuid = check_uuid(sd_uuid, "storagedomainID")
    for vg in lvm.vgs():
        if lvmtags.sd_uuid_of(vg.tags) == sd_uuid:
            return vg.name
    return None


class LvmDomain(LvmVolumes):
    """The LVM domain ``sd_uuid`` in VG ``vg_name``. See :class:`StorageDomainBackend`."""

    DOMAIN_TYPES: tuple[str, ...] = ("iscsi", "fcp")

    def __init__(self, vg_name: str, sd_uuid: str, *, lvm: Lvm, run_dir: Path,
                 chunk_size: int = blocksize.DEFAULT_CHUNK) -> None:
        self.vg_name = check_vg_name(vg_name)
        self._sd_uuid = check_uuid(sd_uuid, "storagedomainID")
        self.lvm = lvm
        self.run_dir = Path(run_dir)
        self.chunk_size = chunk_size
        vgs = [vg for vg in lvm.vgs() if vg.name == self.vg_name]
        if not vgs or lvmtags.sd_uuid_of(vgs[0].tags) != self._sd_uuid:
            raise NoSuchStorageDomain(sdUUID=self._sd_uuid)

    @classmethod
    def create(cls, vg_name: str, sd_uuid: str, *, lvm: Lvm, name: str,
               domain_type: str | None = None, domain_class: str = "data", version: int = 5,
               **options: Any) -> Self:
        """Turn the existing, empty VG ``vg_name`` into domain ``sd_uuid``."""
        domain_type = domain_type or cls.DOMAIN_TYPES[0]
        if domain_type not in cls.DOMAIN_TYPES:
            raise InvalidParams("domainType", f"{domain_type!r} is not an LVM domain type")
        check_vg_name(vg_name)
        check_text(name, "name")
        sd_uuid = check_uuid(sd_uuid, "storagedomainID")
        holder = lvmtags.sd_uuid_of(lvm.vg(vg_name).tags)
        if holder == sd_uuid:
            raise StorageDomainExists(sdUUID=sd_uuid)
        if holder is not None:
            raise StorageError(reason=f"volume group {vg_name} already holds domain {holder}")
        meta = md.DomainMetadata(sd_uuid=sd_uuid, name=name, domain_type=domain_type,
                                 domain_class=domain_class, version=version)
        created: list[str] = []
        try:
            for lv_name, size in SPECIAL_LVS.items():
                lvm.lvcreate(vg_name, lv_name, size)
                created.append(lv_name)
            lvm.vg_tags(vg_name, add=lvmtags.domain_tags(meta))
        except BaseException:
            lvm.lvremove(vg_name, created)
            raise
        log.info("created LVM domain %s in volume group %s", sd_uuid, vg_name)
        return cls(vg_name, sd_uuid, lvm=lvm, **options)

    @property
    def sd_uuid(self) -> str:
        return self._sd_uuid

    # --- domain ----------------------------------------------------------------------

    def read_metadata(self) -> md.DomainMetadata:
        try:
            vg = self.lvm.vg(self.vg_name)
        except StorageError:
            raise NoSuchStorageDomain(sdUUID=self.sd_uuid) from None
        return decoded_metadata(self.sd_uuid, lvmtags.domain_from_tags, vg.tags)

    def update_metadata(self, changes: Mapping[str, str], *,
                        expected_generation: int | None = None) -> md.DomainMetadata:
        current = self.read_metadata()
        new = updated_metadata(self.sd_uuid, current, changes, expected_generation)
        delete, add = lvmtags.diff(lvmtags.domain_tags(current), lvmtags.domain_tags(new))
        self.lvm.vg_tags(self.vg_name, add=add, delete=delete)
        return new

    def stats(self) -> DomainStats:
        vg = self.lvm.vg(self.vg_name)
        return DomainStats(total=vg.size, free=vg.free)

    def probe_target(self) -> ProbeTarget:
        """The metadata LV, read only: a block domain has no filesystem to freeze."""
        return ProbeTarget(read_path=f"/dev/{self.vg_name}/metadata")

    def remove(self) -> None:
        """Remove every LV and the domain tags, leaving the empty VG (for tests and format)."""
        lvs = [lv.name for lv in self.lvm.lvs(self.vg_name)]
        self.lvm.lvremove(self.vg_name, lvs)
        tags = [t for t in self.lvm.vg(self.vg_name).tags if t.startswith(lvmtags.DOMAIN_PREFIX)]
        self.lvm.vg_tags(self.vg_name, delete=tags)
        fileutil.rmdir(self.run_dir / self.sd_uuid)

    # --- helpers used by LvmVolumes --------------------------------------------------

    def volume_lvs(self) -> dict[str, LvInfo]:
        """The volume LVs by name (special LVs and foreign LVs left out)."""
        return {lv.name: lv for lv in self.lvm.lvs(self.vg_name)
                if lv.name not in SPECIAL_LVS and lvmtags.image_of(lv.tags) is not None}

    def extent_size(self) -> int:
        return self.lvm.vg(self.vg_name).extent_size

