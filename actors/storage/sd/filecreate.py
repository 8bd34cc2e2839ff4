"""Creating a volume of a file-based domain (file and loop domains) as undoable steps.

Five steps (see :mod:`actors.storage.steps`): check, image directory, metadata marked
ILLEGAL, data (qemu-img), parent marked INTERNAL, metadata marked LEGAL. Each undo is
idempotent and removes only what the creation made, so a failed, aborted or interrupted
creation leaves nothing. The data step is :meth:`FileVolumeCreation.make_data`, which
:class:`~actors.storage.sd.loopdomain.LoopDomain` overrides with block sizing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal, Protocol

from actors.storage import fileutil, qemuimg
from actors.storage.command import Aborter
from actors.storage.sd import metadata as md
from actors.storage.sd.filelayout import Layout
from actors.storage.sd.records import (
    Allocation,
    Legality,
    VolumeCreateRequest,
    VolumeFormat,
    VolumeInfo,
    VolumeRole,
)
from actors.storage.steps import Step, run_steps
from messaging.errors import InvalidParams, NoSpace, StorageError, VolumeExists

log = logging.getLogger(__name__)

FULL_RATE = 20 << 20
"""Bytes per second assumed when a ``full`` preallocation's timeout is computed."""
FilePreallocation = Literal["falloc", "full"]


def backing_name(img_uuid: str, parent_img: str, parent_vol: str) -> str:
    """The backing name stored in a child's qcow2 header, relative to the child's directory."""
    return parent_vol if parent_img == img_uuid else f"../{parent_img}/{parent_vol}"


def check_parent(req: VolumeCreateRequest, parent: md.VolumeMetadata) -> None:
    """A new volume's parent must be LEGAL and no larger than the new volume."""
    if parent.legality is not Legality.LEGAL:
        raise StorageError(reason=f"parent volume {req.parent_vol} is ILLEGAL")
    if parent.capacity > req.capacity:
        raise InvalidParams("size", f"{req.capacity} is smaller than the parent's "
                            f"{parent.capacity}")


class _SetRole(Protocol):
    def __call__(self, img_uuid: str, vol_uuid: str, role: VolumeRole, /) -> None: ...


class _LeafIfChildless(Protocol):
    def __call__(self, img_uuid: str, vol_uuid: str, *, ignore: tuple[str, str]) -> None: ...


def parent_internal_step(req: VolumeCreateRequest, set_role: _SetRole,
                         leaf_if_childless: _LeafIfChildless) -> Step:
    """The step that marks a new volume's parent (if any) INTERNAL; its undo makes the
    parent a LEAF again unless it has another child."""

    def parent_internal(_abort: Aborter) -> None:
        if req.parent_img is not None and req.parent_vol is not None:
            set_role(req.parent_img, req.parent_vol, VolumeRole.INTERNAL)

    def undo_parent() -> None:
        if req.parent_img is not None and req.parent_vol is not None:
            leaf_if_childless(req.parent_img, req.parent_vol,
                              ignore=(req.img_uuid, req.vol_uuid))

    return Step("parent INTERNAL", parent_internal, undo_parent)



class FileVolumeCreation:
    """The creation half of :class:`~actors.storage.sd.filedomain.FileDomain`."""

    layout: Layout
    preallocation: FilePreallocation
    space_precheck: bool

    @property
    def sd_uuid(self) -> str:
        raise NotImplementedError

    def volume_info(self, img_uuid: str, vol_uuid: str) -> VolumeInfo:
        raise NotImplementedError

    def remove_data(self, img_uuid: str, vol_uuid: str) -> None:
        raise NotImplementedError

    def set_role(self, img_uuid: str, vol_uuid: str, role: VolumeRole) -> None:
        raise NotImplementedError

    def leaf_if_childless(self, img_uuid: str, vol_uuid: str, *,
                          ignore: tuple[str, str]) -> None:
        raise NotImplementedError

    def check_request(self, req: VolumeCreateRequest) -> None:
        """Refuse what this kind of domain cannot create (no I/O)."""
        if req.sd_uuid != self.sd_uuid:
            raise StorageError(reason=f"request for {req.sd_uuid} sent to {self.sd_uuid}")

    def space_needed(self, req: VolumeCreateRequest) -> int:
        return req.capacity if req.allocation is Allocation.PREALLOCATED else 0

    def make_data(self, req: VolumeCreateRequest, path: Path, abort: Aborter) -> None:
        prealloc: qemuimg.Preallocation = "off"
        timeout = qemuimg.CREATE_TIMEOUT
        if req.allocation is Allocation.PREALLOCATED:
            prealloc = self.preallocation
            abort.bytes.expect(req.capacity)  # the task's progress in bytes
            if prealloc == "full":
                timeout += req.capacity / FULL_RATE
        self._qemu_create(req, path, prealloc, timeout, abort)
        abort.bytes.finish()

    def _qemu_create(self, req: VolumeCreateRequest, path: Path,
                     prealloc: qemuimg.Preallocation, timeout: float, abort: Aborter) -> None:
        backing = backing_format = None
        if req.parent_img is not None and req.parent_vol is not None:
            parent = self.layout.read_volume_meta(req.parent_img, req.parent_vol)
            backing = backing_name(req.img_uuid, req.parent_img, req.parent_vol)
            backing_format = parent.format.qemu
        qemuimg.create(str(path), fmt="qcow2" if req.format is VolumeFormat.COW else "raw",
                       size=req.capacity, backing=backing,
                       backing_format="raw" if backing_format == "raw" else "qcow2",
                       preallocation=prealloc, timeout=timeout, abort=abort)
        fileutil.fsync_file(path)  # the data is durable before the volume is marked LEGAL
        fileutil.fsync_dir(path.parent)

    def volume_create_steps(self, request: VolumeCreateRequest) -> list[Step]:
        self.check_request(request)
        req, lay = request, self.layout
        img, vol = req.img_uuid, req.vol_uuid
        data, image = lay.volume(img, vol), lay.image(img)
        made_dir: list[Path] = []

        def check(_abort: Aborter) -> None:
            if lay.volume_meta(img, vol).exists() or data.exists():
                raise VolumeExists(volUUID=vol, imgUUID=img)
            if req.parent_img is not None and req.parent_vol is not None:
                check_parent(req, lay.read_volume_meta(req.parent_img, req.parent_vol))
            if self.space_precheck:
                needed, st = self.space_needed(req), os.statvfs(lay.images)
                if needed > st.f_bavail * st.f_frsize:
                    raise NoSpace(where=f"domain {self.sd_uuid}", reason=f"{needed} bytes "
                                  f"needed, {st.f_bavail * st.f_frsize} free")

        def make_dir(_abort: Aborter) -> None:
            if not image.is_dir():
                image.mkdir(exist_ok=True)
                made_dir.append(image)

        def undo_dir() -> None:
            for path in made_dir:
                fileutil.rmdir(path)

        def illegal(_abort: Aborter) -> None:
            lay.write_volume_meta(img, vol, md.VolumeMetadata.new(
                img_uuid=img, format=req.format, allocation=req.allocation,
                capacity=req.capacity, parent_img=req.parent_img, parent_vol=req.parent_vol,
                description=req.description))

        def legal(_abort: Aborter) -> None:
            meta = lay.read_volume_meta(img, vol)
            lay.write_volume_meta(img, vol, meta.with_legality(Legality.LEGAL))

        return [
            Step("check", check),
            Step("image directory", make_dir, undo_dir),
            Step("metadata (ILLEGAL)", illegal, lambda: lay.remove_volume_meta(img, vol)),
            Step("data", lambda abort: self.make_data(req, data, abort),
                 lambda: self.remove_data(img, vol)),
            parent_internal_step(req, self.set_role, self.leaf_if_childless),
            Step("metadata (LEGAL)", legal),
        ]

    def create_volume(self, request: VolumeCreateRequest, *,
                      abort: Aborter | None = None) -> VolumeInfo:
        run_steps(self.volume_create_steps(request), abort=abort)
        log.info("created volume %s/%s in domain %s", request.img_uuid, request.vol_uuid,
                 self.sd_uuid)
        return self.volume_info(request.img_uuid, request.vol_uuid)
