"""File domains (localfs, posixfs, nfs): volumes are files that a VM opens directly.

The layout is :mod:`actors.storage.sd.filelayout`'s; creating a volume is a list of undoable
steps (:mod:`actors.storage.sd.filecreate`). :class:`~actors.storage.sd.loopdomain.LoopDomain`
reuses all of this with block semantics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

from actors.storage import fileutil, leftovers
from actors.storage.sd import metadata as md
from actors.storage.sd.backend import updated_metadata
from actors.storage.sd.filecreate import FilePreallocation, FileVolumeCreation
from actors.storage.sd.filelayout import Layout
from actors.storage.sd.records import (
    DomainStats,
    Legality,
    PreparedLayer,
    PreparedVolume,
    ProbeTarget,
    VolumeInfo,
    VolumeRole,
    check_uuid,
)
from messaging.errors import (
    InvalidParams,
    NoSuchStorageDomain,
    StorageError,
    VolumeHasChildren,
    VolumeIllegal,
    VolumeInUse,
)
from messaging.schema.types import check_text

log = logging.getLogger(__name__)

MAX_CHAIN = 256

Links = list[tuple[tuple[str, str], tuple[str, str]]]


def check_no_outside_children(img_uuid: str, links: Links) -> None:
    """Refuse to delete an image whose volume is the parent of a volume in another image.

    ``links`` are ``(parent, child)`` pairs of ``(img, vol)`` over the whole domain.
    """
    for (parent_img, parent_vol), (child_img, child_vol) in links:
        if parent_img == img_uuid and child_img != img_uuid:
            raise VolumeHasChildren(volUUID=parent_vol,
                                    children=f"{child_vol} in image {child_img}")


def walk_chain(img_uuid: str, vol_uuid: str,
               read_meta: Callable[[str, str], md.VolumeMetadata], *,
               require_legal: bool) -> list[tuple[str, str, md.VolumeMetadata]]:
    """A volume and its ancestors, top first, following each volume's parent in
    ``read_meta(img, vol)`` (which raises NoSuchVolume); each LEGAL when ``require_legal``."""
    found: list[tuple[str, str, md.VolumeMetadata]] = []
    img, vol = check_uuid(img_uuid, "imageID"), check_uuid(vol_uuid, "volumeID")
    for _ in range(MAX_CHAIN):
        meta = read_meta(img, vol)
        if require_legal and meta.legality is not Legality.LEGAL:
            raise VolumeIllegal(volUUID=vol, legality=meta.legality.value,
                                reason=f"image {img}: being deleted, or a failed creation")
        found.append((img, vol, meta))
        if not meta.has_parent:
            return found
        img, vol = meta.parent_img, meta.parent_vol
    raise StorageError(reason=f"the chain of volume {vol_uuid} is longer than {MAX_CHAIN}")


def delete_image_volumes(img_uuid: str, volumes: list[str], links: Links,
                         delete_volume: Callable[[str, str], None]) -> None:
    """Delete ``volumes`` of an image leaves first (a parent after all its children).

    ``links`` are the domain's ``(parent, child)`` pairs of ``(img, vol)``; an image whose
    volume is the parent of a volume in another image is refused before anything is deleted.
    """
    check_no_outside_children(img_uuid, links)
    remaining = list(volumes)
    for _ in range(len(remaining) + 1):
        if not remaining:
            return
        parents = {parent for parent, child in links if child[1] in remaining}
        leaves = [v for v in remaining if (img_uuid, v) not in parents]
        if not leaves:
            raise StorageError(reason=f"image {img_uuid} has a volume chain loop")
        for vol in leaves:
            delete_volume(img_uuid, vol)
            remaining.remove(vol)


class FileDomain(FileVolumeCreation):
    """A file domain at ``<mount>/<sdUUID>``. See :class:`StorageDomainBackend`."""

    DOMAIN_TYPES: tuple[str, ...] = ("localfs", "posixfs", "nfs")

    def __init__(self, mount: Path, sd_uuid: str, *,
                 preallocation: FilePreallocation = "falloc",
                 space_precheck: bool = True) -> None:
        self.layout = Layout(mount, sd_uuid)
        if not self.layout.exists():
            raise NoSuchStorageDomain(sdUUID=self.layout.sd_uuid)
        self.preallocation = preallocation
        self.space_precheck = space_precheck

    @classmethod
    def create(cls, mount: Path, sd_uuid: str, *, name: str, domain_type: str | None = None,
               domain_class: str = "data", version: int = 5, **options: Any) -> Self:
        """Create the domain on disk and open it (``options`` go to the constructor)."""
        domain_type = domain_type or cls.DOMAIN_TYPES[0]
        if domain_type not in cls.DOMAIN_TYPES:
            raise InvalidParams("domainType", f"{domain_type!r} is not one of "
                                f"{', '.join(cls.DOMAIN_TYPES)}")
        layout = Layout(mount, sd_uuid)
        check_text(name, "name")
        meta = md.DomainMetadata(sd_uuid=layout.sd_uuid, name=name, domain_type=domain_type,
                                 domain_class=domain_class, version=version)
        layout.create(meta)
        return cls(mount, sd_uuid, **options)

    @property
    def sd_uuid(self) -> str:
        return self.layout.sd_uuid

    # --- domain ----------------------------------------------------------------------

    def read_metadata(self) -> md.DomainMetadata:
        return self.layout.read_metadata()

    def update_metadata(self, changes: Mapping[str, str], *,
                        expected_generation: int | None = None) -> md.DomainMetadata:
        new = updated_metadata(self.sd_uuid, self.layout.read_metadata(), changes,
                               expected_generation)
        self.layout.write_metadata(new)
        return new

    def stats(self) -> DomainStats:
        st = os.statvfs(self.layout.root)
        return DomainStats(total=st.f_blocks * st.f_frsize, free=st.f_bavail * st.f_frsize)

    def probe_target(self) -> ProbeTarget:
        return ProbeTarget(read_path=str(self.layout.metadata),
                           write_path=str(self.layout.dom_md / "probe"))

    # --- images ----------------------------------------------------------------------

    def list_images(self) -> tuple[str, ...]:
        return self.layout.list_images()

    def list_volumes(self, img_uuid: str) -> tuple[str, ...]:
        return self.layout.list_volumes(img_uuid)

    def create_image(self, img_uuid: str) -> None:
        self.layout.image(img_uuid).mkdir(exist_ok=True)

    def delete_image(self, img_uuid: str) -> None:
        links = [((m.parent_img, m.parent_vol), (i, v))
                 for i, v, m in self.layout.all_volume_meta()]
        delete_image_volumes(img_uuid, list(self.list_volumes(img_uuid)), links,
                             self.delete_volume)
        image = self.layout.image(img_uuid)
        for leftover in image.glob(".*.tmp-*"):
            fileutil.remove(leftover)
        fileutil.rmdir(image)
        log.info("deleted image %s of domain %s", img_uuid, self.sd_uuid)

    # --- volumes: the rest -----------------------------------------------------------

    def volume_info(self, img_uuid: str, vol_uuid: str) -> VolumeInfo:
        meta = self.layout.read_volume_meta(img_uuid, vol_uuid)
        try:
            st = self.layout.volume(img_uuid, vol_uuid).stat()
            apparent, true = st.st_size, st.st_blocks * 512
        except FileNotFoundError:
            if meta.legality is Legality.LEGAL:
                raise StorageError(reason=f"the data of volume {vol_uuid} is missing") from None
            apparent = true = 0
        return VolumeInfo(
            sd_uuid=self.sd_uuid, img_uuid=img_uuid, vol_uuid=vol_uuid, capacity=meta.capacity,
            apparentsize=apparent, truesize=true, format=meta.format,
            allocation=meta.allocation, role=meta.role, legality=meta.legality,
            parent_img=meta.parent_img, parent_vol=meta.parent_vol,
            description=meta.description, ctime=meta.ctime)

    def chain(self, img_uuid: str, vol_uuid: str, *, require_legal: bool = True,
              ) -> list[tuple[str, str, md.VolumeMetadata]]:
        """The volume and its ancestors, top first (each LEGAL when ``require_legal``)."""
        return walk_chain(img_uuid, vol_uuid, self.layout.read_volume_meta,
                          require_legal=require_legal)

    def prepare(self, img_uuid: str, vol_uuid: str) -> PreparedVolume:
        layers = []
        for img, vol, _meta in self.chain(img_uuid, vol_uuid):
            path = self.layout.volume(img, vol)
            if not path.is_file():
                raise StorageError(reason=f"the data of volume {vol} is missing")
            layers.append(PreparedLayer(img, vol, str(path), None))
        top = self.layout.read_volume_meta(img_uuid, vol_uuid)
        return PreparedVolume(path=layers[0].path, device=None, format=top.format,
                              chain=tuple(layers))

    def teardown(self, img_uuid: str, vol_uuid: str) -> None:
        self.layout.read_volume_meta(img_uuid, vol_uuid)

    def extend_volume(self, img_uuid: str, vol_uuid: str, size: int) -> VolumeInfo:
        return self.volume_info(img_uuid, vol_uuid)

    def allocation_limit(self, img_uuid: str, vol_uuid: str) -> int | None:
        self.layout.read_volume_meta(img_uuid, vol_uuid)  # NoSuchVolume if there is none
        return None  # a file grows by itself

    def refresh_volume(self, img_uuid: str, vol_uuid: str) -> int:
        return self.layout.volume(img_uuid, vol_uuid).stat().st_size

    def delete_volume(self, img_uuid: str, vol_uuid: str) -> None:
        meta = self.layout.read_volume_meta(img_uuid, vol_uuid)
        children = self.children(img_uuid, vol_uuid)
        if children:
            raise VolumeHasChildren(volUUID=vol_uuid,
                                    children=", ".join(v for _, v in children))
        reason = self.in_use(img_uuid, vol_uuid)
        if reason:
            raise VolumeInUse(volUUID=vol_uuid, reason=reason)
        self.layout.write_volume_meta(img_uuid, vol_uuid, meta.with_legality(Legality.ILLEGAL))
        self.remove_data(img_uuid, vol_uuid)
        self.layout.remove_volume_meta(img_uuid, vol_uuid)
        fileutil.fsync_dir(self.layout.image(img_uuid))
        if meta.has_parent:
            self.leaf_if_childless(meta.parent_img, meta.parent_vol, ignore=(img_uuid, vol_uuid))
        log.info("deleted volume %s/%s of domain %s", img_uuid, vol_uuid, self.sd_uuid)

    def in_use(self, img_uuid: str, vol_uuid: str) -> str:
        """Why the volume is in use on this host ("" when it is not): a process has its file
        open (a VM's qemu, a qemu-img). Read from ``/proc``, so true after a restart too."""
        holders = leftovers.openers(self.layout.volume(img_uuid, vol_uuid))
        if not holders:
            return ""
        return "open by " + ", ".join(f"{comm} (pid {pid})" for pid, comm in holders[:5])

    def remove_data(self, img_uuid: str, vol_uuid: str) -> None:
        fileutil.remove(self.layout.volume(img_uuid, vol_uuid))

    def children(self, img_uuid: str, vol_uuid: str) -> list[tuple[str, str]]:
        return [(i, v) for i, v, m in self.layout.all_volume_meta()
                if (m.parent_img, m.parent_vol) == (img_uuid, vol_uuid)]

    def set_role(self, img_uuid: str, vol_uuid: str, role: VolumeRole) -> None:
        meta = self.layout.read_volume_meta(img_uuid, vol_uuid)
        if meta.role is not role:
            self.layout.write_volume_meta(img_uuid, vol_uuid, meta.with_role(role))

    def leaf_if_childless(self, img_uuid: str, vol_uuid: str, *,
                           ignore: tuple[str, str]) -> None:
        if not (self.layout.volume_meta(img_uuid, vol_uuid)).exists():
            return
        if all(child == ignore for child in self.children(img_uuid, vol_uuid)):
            self.set_role(img_uuid, vol_uuid, VolumeRole.LEAF)
