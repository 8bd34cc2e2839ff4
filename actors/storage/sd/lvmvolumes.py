"""Images and volumes of an LVM domain: LVs with their metadata in tags.

The base of :class:`~actors.storage.sd.lvmdomain.LvmDomain`, which provides the VG, the
:class:`~actors.storage.lvm.Lvm` runner and the domain metadata. Creating a volume is five
steps: check, LV created inactive with ``MD_LEGALITY=ILLEGAL`` (one atomic lvcreate: the
metadata and the data appear together), qcow2 header (cow only: activate, qemu-img,
deactivate), parent marked INTERNAL, ``MD_LEGALITY=LEGAL``. Undoing removes the LV.
"""

from __future__ import annotations

import logging
from pathlib import Path

from actors.storage import fileutil, qemuimg
from actors.storage.command import Aborter
from actors.storage.lvm import LvInfo, Lvm
from actors.storage.sd import blocksize, lvmtags
from actors.storage.sd import metadata as md
from actors.storage.sd.filecreate import backing_name, check_parent, parent_internal_step
from actors.storage.sd.filedomain import delete_image_volumes, walk_chain
from actors.storage.sd.records import (
    Legality,
    PreparedLayer,
    PreparedVolume,
    VolumeCreateRequest,
    VolumeFormat,
    VolumeInfo,
    VolumeRole,
    check_uuid,
)
from actors.storage.steps import Step, run_steps
from messaging.errors import (
    NoSpace,
    NoSuchImage,
    NoSuchVolume,
    StorageError,
    VolumeExists,
    VolumeHasChildren,
    VolumeInUse,
)

log = logging.getLogger(__name__)

Chain = list[tuple[str, str, md.VolumeMetadata]]


class LvmVolumes:
    lvm: Lvm
    vg_name: str
    run_dir: Path
    chunk_size: int

    @property
    def sd_uuid(self) -> str:
        raise NotImplementedError

    def volume_lvs(self) -> dict[str, LvInfo]:
        raise NotImplementedError

    def extent_size(self) -> int:
        raise NotImplementedError

    # --- metadata --------------------------------------------------------------------

    def _meta(self, lv: LvInfo) -> md.VolumeMetadata:
        try:
            return lvmtags.volume_from_tags(lv.tags)
        except ValueError as e:
            raise StorageError(reason=f"volume {lv.name}: {e}") from None

    def _lv(self, img_uuid: str, vol_uuid: str) -> tuple[LvInfo, md.VolumeMetadata]:
        img, vol = check_uuid(img_uuid, "imageID"), check_uuid(vol_uuid, "volumeID")
        lv = self.lvm.lv(self.vg_name, vol)
        if lv is None or lvmtags.image_of(lv.tags) != img:
            if img not in self.list_images():
                raise NoSuchImage(imgUUID=img, sdUUID=self.sd_uuid)
            raise NoSuchVolume(volUUID=vol, imgUUID=img, sdUUID=self.sd_uuid)
        return lv, self._meta(lv)

    def _rewrite(self, vol_uuid: str, old: md.VolumeMetadata, new: md.VolumeMetadata) -> None:
        delete, add = lvmtags.diff(lvmtags.volume_tags(old), lvmtags.volume_tags(new))
        self.lvm.lv_tags(self.vg_name, vol_uuid, add=add, delete=delete)

    def children(self, img_uuid: str, vol_uuid: str) -> list[tuple[str, str]]:
        found = []
        for name, lv in self.volume_lvs().items():
            meta = self._meta(lv)
            if (meta.parent_img, meta.parent_vol) == (img_uuid, vol_uuid):
                found.append((meta.img_uuid, name))
        return found

    def _set_role(self, img_uuid: str, vol_uuid: str, role: VolumeRole) -> None:
        _lv, meta = self._lv(img_uuid, vol_uuid)
        if meta.role is not role:
            self._rewrite(vol_uuid, meta, meta.with_role(role))

    def _leaf_if_childless(self, img_uuid: str, vol_uuid: str, *,
                           ignore: tuple[str, str]) -> None:
        if self.lvm.lv(self.vg_name, vol_uuid) is None:
            return
        if all(child == ignore for child in self.children(img_uuid, vol_uuid)):
            self._set_role(img_uuid, vol_uuid, VolumeRole.LEAF)

    # --- images ----------------------------------------------------------------------

    def list_images(self) -> tuple[str, ...]:
        images = {lvmtags.image_of(lv.tags) for lv in self.volume_lvs().values()}
        return tuple(sorted(i for i in images if i is not None))

    def list_volumes(self, img_uuid: str) -> tuple[str, ...]:
        img = check_uuid(img_uuid, "imageID")
        names = sorted(n for n, lv in self.volume_lvs().items() if lvmtags.image_of(lv.tags) == img)
        if not names:
            raise NoSuchImage(imgUUID=img, sdUUID=self.sd_uuid)
        return tuple(names)

    def create_image(self, img_uuid: str) -> None:
        """Nothing to store: an LVM image exists through the tags of its volumes."""
        check_uuid(img_uuid, "imageID")

    def delete_image(self, img_uuid: str) -> None:
        links = []
        for name, lv in self.volume_lvs().items():
            meta = self._meta(lv)
            links.append(((meta.parent_img, meta.parent_vol), (meta.img_uuid, name)))
        delete_image_volumes(img_uuid, list(self.list_volumes(img_uuid)), links,
                             self.delete_volume)

    # --- volumes ---------------------------------------------------------------------

    def _allocation(self, req: VolumeCreateRequest) -> int:
        return blocksize.allocation(req, chunk_size=self.chunk_size, align=self.extent_size())

    def volume_create_steps(self, request: VolumeCreateRequest) -> list[Step]:
        req, vg = request, self.vg_name
        if req.sd_uuid != self.sd_uuid:
            raise StorageError(reason=f"request for {req.sd_uuid} sent to {self.sd_uuid}")
        blocksize.check_block_request(req)
        img, vol = req.img_uuid, req.vol_uuid

        def check(_abort: Aborter) -> None:
            if self.lvm.lv(vg, vol) is not None:
                raise VolumeExists(volUUID=vol, imgUUID=img)
            if req.parent_img is not None and req.parent_vol is not None:
                _lv, parent = self._lv(req.parent_img, req.parent_vol)
                check_parent(req, parent)
            needed, free = self._allocation(req), self.lvm.vg(vg).free
            if needed > free:
                raise NoSpace(where=f"domain {self.sd_uuid}",
                              reason=f"{needed} bytes needed, {free} free")

        def create_lv(_abort: Aborter) -> None:
            meta = md.VolumeMetadata.new(
                img_uuid=img, format=req.format, allocation=req.allocation,
                capacity=req.capacity, parent_img=req.parent_img, parent_vol=req.parent_vol,
                description=req.description)
            self.lvm.lvcreate(vg, vol, self._allocation(req), tags=lvmtags.volume_tags(meta))

        def remove_lv() -> None:
            lv = self.lvm.lv(vg, vol)
            if lv is not None:
                if lv.active:
                    self.lvm.deactivate(vg, [vol])
                self.lvm.lvremove(vg, [vol])

        def qcow2_header(abort: Aborter) -> None:
            if req.format is not VolumeFormat.COW:
                return
            backing, backing_format = None, "qcow2"
            if req.parent_img is not None and req.parent_vol is not None:
                backing = backing_name(img, req.parent_img, req.parent_vol)
                _lv, parent = self._lv(req.parent_img, req.parent_vol)
                backing_format = parent.format.qemu
            self.lvm.activate(vg, [vol])
            try:
                qemuimg.create(f"/dev/{vg}/{vol}", fmt="qcow2", size=req.capacity,
                               backing=backing, abort=abort,
                               backing_format="raw" if backing_format == "raw" else "qcow2")
            finally:
                self.lvm.deactivate(vg, [vol])

        def legal(_abort: Aborter) -> None:
            _lv, meta = self._lv(img, vol)
            self._rewrite(vol, meta, meta.with_legality(Legality.LEGAL))

        return [Step("check", check), Step("LV (ILLEGAL)", create_lv, remove_lv),
                Step("qcow2 header", qcow2_header),
                parent_internal_step(req, self._set_role, self._leaf_if_childless),
                Step("metadata (LEGAL)", legal)]

    def create_volume(self, request: VolumeCreateRequest, *,
                      abort: Aborter | None = None) -> VolumeInfo:
        run_steps(self.volume_create_steps(request), abort=abort)
        log.info("created volume %s/%s in LVM domain %s", request.img_uuid, request.vol_uuid,
                 self.sd_uuid)
        return self.volume_info(request.img_uuid, request.vol_uuid)

    def volume_info(self, img_uuid: str, vol_uuid: str) -> VolumeInfo:
        lv, meta = self._lv(img_uuid, vol_uuid)
        return VolumeInfo(
            sd_uuid=self.sd_uuid, img_uuid=meta.img_uuid, vol_uuid=lv.name,
            capacity=meta.capacity, apparentsize=lv.size, truesize=lv.size, format=meta.format,
            allocation=meta.allocation, role=meta.role, legality=meta.legality,
            parent_img=meta.parent_img, parent_vol=meta.parent_vol,
            description=meta.description, ctime=meta.ctime)

    def chain(self, img_uuid: str, vol_uuid: str, *, require_legal: bool = True) -> Chain:
        lvs = self.volume_lvs()

        def read_meta(img: str, vol: str) -> md.VolumeMetadata:
            lv = lvs.get(vol)
            if lv is None or lvmtags.image_of(lv.tags) != img:
                raise NoSuchVolume(volUUID=vol, imgUUID=img, sdUUID=self.sd_uuid)
            return self._meta(lv)

        return walk_chain(img_uuid, vol_uuid, read_meta, require_legal=require_legal)

    def link(self, img_uuid: str, vol_uuid: str) -> Path:
        return (self.run_dir / self.sd_uuid / check_uuid(img_uuid, "imageID")
                / check_uuid(vol_uuid, "volumeID"))

    def prepare(self, img_uuid: str, vol_uuid: str) -> PreparedVolume:
        chain = self.chain(img_uuid, vol_uuid)
        self.lvm.activate(self.vg_name, [vol for _, vol, _ in chain])
        layers = []
        for img, vol, _meta in chain:
            link, device = self.link(img, vol), f"/dev/{self.vg_name}/{vol}"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not (link.is_symlink() and str(link.readlink()) == device):
                fileutil.remove(link)
                link.symlink_to(device)
            layers.append(PreparedLayer(img, vol, str(link), device))
        return PreparedVolume(path=layers[0].path, device=layers[0].device,
                              format=chain[0][2].format, chain=tuple(layers))

    def teardown(self, img_uuid: str, vol_uuid: str) -> None:
        mine = [vol for img, vol, _ in self.chain(img_uuid, vol_uuid, require_legal=False)
                if img == img_uuid]
        for vol in mine:
            fileutil.remove(self.link(img_uuid, vol))
        lvs = self.volume_lvs()
        self.lvm.deactivate(self.vg_name, [v for v in mine if v in lvs and lvs[v].active])

    def extend_volume(self, img_uuid: str, vol_uuid: str, size: int) -> VolumeInfo:
        lv, meta = self._lv(img_uuid, vol_uuid)
        if meta.format is not VolumeFormat.COW:
            raise StorageError(reason=f"raw volume {vol_uuid} has a fixed allocation: "
                               "change its virtual size instead")
        target = blocksize.extension(meta.format, meta.capacity, size, self.extent_size())
        if target > lv.size:
            self.lvm.lvextend(self.vg_name, vol_uuid, target)
            if lv.active:
                self.lvm.refresh(self.vg_name, vol_uuid)
            log.info("extended volume %s/%s to %d bytes", img_uuid, vol_uuid, target)
        return self.volume_info(img_uuid, vol_uuid)

    def allocation_limit(self, img_uuid: str, vol_uuid: str) -> int | None:
        _lv, meta = self._lv(img_uuid, vol_uuid)
        if meta.format is not VolumeFormat.COW:
            return None
        return blocksize.full_size(meta.capacity, self.extent_size())

    def refresh_volume(self, img_uuid: str, vol_uuid: str) -> int:
        lv, _meta = self._lv(img_uuid, vol_uuid)
        if lv.active:
            self.lvm.refresh(self.vg_name, vol_uuid)
        return lv.size

    def in_use(self, img_uuid: str, vol_uuid: str) -> str:
        lv, _meta = self._lv(img_uuid, vol_uuid)
        return "its LV is active: tear it down first" if lv.active else ""

    def delete_volume(self, img_uuid: str, vol_uuid: str) -> None:
        lv, meta = self._lv(img_uuid, vol_uuid)
        children = self.children(img_uuid, vol_uuid)
        if children:
            raise VolumeHasChildren(volUUID=vol_uuid,
                                    children=", ".join(v for _, v in children))
        if lv.active:
            raise VolumeInUse(volUUID=vol_uuid, reason="its LV is active: tear it down first")
        self._rewrite(vol_uuid, meta, meta.with_legality(Legality.ILLEGAL))
        self.lvm.lvremove(self.vg_name, [vol_uuid])
        if meta.has_parent:
            self._leaf_if_childless(meta.parent_img, meta.parent_vol, ignore=(img_uuid, vol_uuid))
        log.info("deleted volume %s/%s of LVM domain %s", img_uuid, vol_uuid, self.sd_uuid)
