"""Loop domains: a block domain whose volumes are files exposed as loop devices.

The layout is a file domain's (see :mod:`actors.storage.sd.filelayout`), the semantics are a
block domain's, so that thin provisioning runs end to end on a machine without LVM
activation:

- a volume's file has a fixed, really allocated size (``posix_fallocate``), as an LV has
  extents: a raw volume gets its whole capacity, a sparse cow volume ``initialSize`` (or
  ``chunk_size``), a preallocated cow volume what qemu-img measures for a full image;
- :meth:`LoopDomain.prepare` attaches every layer of the chain to a loop device and links it
  as ``<run_dir>/<sdUUID>/<imgUUID>/<volUUID>``: the VM opens the link of the top volume and
  qemu resolves the relative backing names to the parents' links;
- :meth:`LoopDomain.extend_volume` grows the file and runs ``losetup -c`` on its devices.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from actors.storage import fileutil, loopdev, qemuimg
from actors.storage.command import Aborter
from actors.storage.sd import blocksize
from actors.storage.sd.filedomain import FileDomain
from actors.storage.sd.records import (
    Allocation,
    PreparedLayer,
    PreparedVolume,
    VolumeCreateRequest,
    VolumeFormat,
    VolumeInfo,
    check_uuid,
)
from messaging.errors import NoSpace, StorageError

log = logging.getLogger(__name__)

ALIGN = 1 << 20
"""Allocations are whole MiB (an LV's are whole extents)."""
SECTOR = 512


class LoopDomain(FileDomain):
    """A loop domain at ``<mount>/<sdUUID>``, prepared volumes linked under ``run_dir``."""

    DOMAIN_TYPES = ("loop",)

    def __init__(self, mount: Path, sd_uuid: str, *, run_dir: Path,
                 chunk_size: int = blocksize.DEFAULT_CHUNK, space_precheck: bool = True) -> None:
        super().__init__(mount, sd_uuid, preallocation="falloc", space_precheck=space_precheck)
        self.run_dir = Path(run_dir)
        self.chunk_size = chunk_size

    # --- sizing ----------------------------------------------------------------------

    def check_request(self, req: VolumeCreateRequest) -> None:
        super().check_request(req)
        blocksize.check_block_request(req)

    def allocation(self, req: VolumeCreateRequest) -> int:
        """Bytes the volume's file gets at creation (a raw one: its capacity in sectors)."""
        if req.format is VolumeFormat.RAW:
            return blocksize.round_up(req.capacity, SECTOR)
        return blocksize.allocation(req, chunk_size=self.chunk_size, align=ALIGN)

    def space_needed(self, req: VolumeCreateRequest) -> int:
        return self.allocation(req)

    def make_data(self, req: VolumeCreateRequest, path: Path, abort: Aborter) -> None:
        size = self.allocation(req)
        if req.allocation is Allocation.PREALLOCATED:
            abort.bytes.expect(size)  # the task's progress in bytes
        if req.format is VolumeFormat.RAW:
            qemuimg.create(str(path), fmt="raw", size=size, preallocation="falloc",
                           abort=abort)
        else:
            self._qemu_create(req, path, "off", qemuimg.CREATE_TIMEOUT, abort)
            abort.check()
            fileutil.fallocate(path, size)
        abort.bytes.finish()

    # --- devices ---------------------------------------------------------------------

    def link(self, img_uuid: str, vol_uuid: str) -> Path:
        return (self.run_dir / self.sd_uuid / check_uuid(img_uuid, "imageID")
                / check_uuid(vol_uuid, "volumeID"))

    def _link_to(self, link: Path, device: str) -> None:
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and str(link.readlink()) == device:
            return
        tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
        fileutil.remove(tmp)
        tmp.symlink_to(device)
        tmp.replace(link)

    def prepare(self, img_uuid: str, vol_uuid: str) -> PreparedVolume:
        chain = self.chain(img_uuid, vol_uuid)
        attached: list[str] = []
        layers: list[PreparedLayer] = []
        try:
            for img, vol, _meta in reversed(chain):
                path = self.layout.volume(img, vol)
                devices = loopdev.find(path)
                if devices:
                    device = devices[0].device
                else:
                    device = loopdev.attach(path)
                    attached.append(device)
                link = self.link(img, vol)
                self._link_to(link, device)
                layers.append(PreparedLayer(img, vol, str(link), device))
        except BaseException:
            for device in attached:
                loopdev.detach(device)
            raise
        layers.reverse()
        log.info("prepared %s/%s of %s: %s", img_uuid, vol_uuid, self.sd_uuid,
                 " <- ".join(layer.device or "" for layer in layers))
        return PreparedVolume(path=layers[0].path, device=layers[0].device,
                              format=chain[0][2].format, chain=tuple(layers))

    def teardown(self, img_uuid: str, vol_uuid: str) -> None:
        """Detach and unlink the layers of this image (a template's layers stay)."""
        for img, vol, _meta in self.chain(img_uuid, vol_uuid, require_legal=False):
            if img != img_uuid:
                continue
            fileutil.remove(self.link(img, vol))
            loopdev.detach_file(self.layout.volume(img, vol))
        image_links = self.run_dir / self.sd_uuid / img_uuid
        if image_links.is_dir() and not any(image_links.iterdir()):
            fileutil.rmdir(image_links)

    def extend_volume(self, img_uuid: str, vol_uuid: str, size: int) -> VolumeInfo:
        meta = self.layout.read_volume_meta(img_uuid, vol_uuid)
        if meta.format is VolumeFormat.RAW:
            raise StorageError(reason=f"raw volume {vol_uuid} has a fixed allocation: "
                               "change its virtual size instead")
        path = self.layout.volume(img_uuid, vol_uuid)
        target = blocksize.extension(meta.format, meta.capacity, size, ALIGN)
        if target < size:
            log.info("extension of %s to %d capped at %d (a full image)", vol_uuid, size, target)
        before = path.stat().st_size
        if target > before:
            try:
                fileutil.fallocate(path, target)
            except NoSpace:
                os.truncate(path, before)  # ext4 keeps what it could allocate: give it back
                raise
            for device in loopdev.find(path):
                loopdev.refresh(device.device)
            log.info("extended volume %s/%s to %d bytes", img_uuid, vol_uuid, target)
        return self.volume_info(img_uuid, vol_uuid)

    def allocation_limit(self, img_uuid: str, vol_uuid: str) -> int | None:
        meta = self.layout.read_volume_meta(img_uuid, vol_uuid)
        if meta.format is not VolumeFormat.COW:
            return None
        return blocksize.full_size(meta.capacity, ALIGN)

    def refresh_volume(self, img_uuid: str, vol_uuid: str) -> int:
        path = self.layout.volume(img_uuid, vol_uuid)
        size = path.stat().st_size
        for device in loopdev.find(path):
            loopdev.refresh(device.device)
        return size

    def in_use(self, img_uuid: str, vol_uuid: str) -> str:
        devices = loopdev.find(self.layout.volume(img_uuid, vol_uuid))
        if devices:
            return f"attached to {devices[0].device}: tear it down first"
        return super().in_use(img_uuid, vol_uuid)

    def remove_data(self, img_uuid: str, vol_uuid: str) -> None:
        path = self.layout.volume(img_uuid, vol_uuid)
        loopdev.detach_file(path)
        fileutil.remove(self.link(img_uuid, vol_uuid))
        fileutil.remove(path)
