"""The one interface every storage-domain backend implements.

Three implementations:

- :class:`~actors.storage.sd.filedomain.FileDomain` (``localfs``, ``posixfs``, ``nfs``):
  volumes are files, a VM opens the file;
- :class:`~actors.storage.sd.loopdomain.LoopDomain` (``loop``): volumes are files with block
  semantics (a fixed allocation that is extended on demand), a VM opens a loop device;
- :class:`~actors.storage.sd.lvmdomain.LvmDomain` (``iscsi``, ``fcp``): volumes are LVs of
  one VG, metadata in VG and LV tags.

Methods block on storage I/O and may hang on a dead mount: an actor calls them from a worker
it owns, never on its own thread. A backend object is not thread-safe and keeps no state
but its configuration: one owner calls it, and a new object over the same storage (after a
restart) sees everything. Writers are serialised by the caller (the SPM role); a metadata
write can still refuse a stale ``expected_generation``.

Every UUID argument is validated before a path or a command line is built from it
(:class:`InvalidParams`, -32602). Missing things raise the 2xx errors that name them
(:class:`NoSuchStorageDomain`, :class:`NoSuchImage`, :class:`NoSuchVolume`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar, runtime_checkable

from actors.storage.command import Aborter
from actors.storage.sd.metadata import DomainMetadata
from actors.storage.sd.records import (
    DomainStats,
    PreparedVolume,
    ProbeTarget,
    VolumeCreateRequest,
    VolumeInfo,
)
from actors.storage.sd.stamp import DOMAIN_KEY, current_lver
from actors.storage.steps import Step
from messaging.errors import MetadataConflict, StorageDomainInvalid, StorageError

Raw = TypeVar("Raw")


@runtime_checkable
class StorageDomainBackend(Protocol):
    @property
    def sd_uuid(self) -> str: ...

    def read_metadata(self) -> DomainMetadata:
        """The domain metadata, checksum verified (:class:`StorageDomainInvalid` if bad)."""
        ...

    def update_metadata(self, changes: Mapping[str, str], *,
                        expected_generation: int | None = None) -> DomainMetadata:
        """Apply ``changes`` atomically and bump the generation; refuse (MetadataConflict)
        when ``expected_generation`` is given and the stored one differs."""
        ...

    def stats(self) -> DomainStats: ...

    def probe_target(self) -> ProbeTarget: ...

    def list_images(self) -> tuple[str, ...]: ...

    def list_volumes(self, img_uuid: str) -> tuple[str, ...]: ...

    def create_image(self, img_uuid: str) -> None:
        """Make an empty image (idempotent; on LVM an image exists through its volumes)."""
        ...

    def delete_image(self, img_uuid: str) -> None:
        """Delete every volume of the image, leaves first, then the image."""
        ...

    def volume_create_steps(self, request: VolumeCreateRequest) -> list[Step]:
        """The steps that create the volume; building them does no I/O (see steps.py)."""
        ...

    def create_volume(self, request: VolumeCreateRequest, *,
                      abort: Aborter | None = None) -> VolumeInfo:
        """Run :meth:`volume_create_steps`; on failure nothing of the volume remains."""
        ...

    def volume_info(self, img_uuid: str, vol_uuid: str) -> VolumeInfo: ...

    def prepare(self, img_uuid: str, vol_uuid: str) -> PreparedVolume:
        """Make the volume and its whole chain usable by a VM; idempotent."""
        ...

    def teardown(self, img_uuid: str, vol_uuid: str) -> None:
        """Undo :meth:`prepare` for the layers of this image; idempotent."""
        ...

    def extend_volume(self, img_uuid: str, vol_uuid: str, size: int) -> VolumeInfo:
        """Grow a block volume's allocation to at least ``size`` bytes (no-op for files)."""
        ...

    def children(self, img_uuid: str, vol_uuid: str) -> list[tuple[str, str]]:
        """The ``(img, vol)`` volumes whose parent this volume is, in any image."""
        ...

    def in_use(self, img_uuid: str, vol_uuid: str) -> str:
        """Why the volume is in use on this host, as the system shows it (a process has it
        open, a loop device is attached, its LV is active); "" when it is not."""
        ...

    def allocation_limit(self, img_uuid: str, vol_uuid: str) -> int | None:
        """The most :meth:`extend_volume` grows this volume to (a fully allocated qcow2 of its
        capacity, in whole allocation units); None when it is never extended (a file, a raw
        volume)."""
        ...

    def refresh_volume(self, img_uuid: str, vol_uuid: str) -> int:
        """Make this host see a volume the SPM extended (``losetup -c`` of its loop devices,
        ``lvchange --refresh`` of an active LV; nothing for a file); its size now."""
        ...

    def delete_volume(self, img_uuid: str, vol_uuid: str) -> None:
        """Delete a volume that no other volume uses as its parent (VolumeHasChildren) and
        that is not in use (VolumeInUse, see :meth:`in_use`)."""
        ...


def updated_metadata(sd_uuid: str, current: DomainMetadata, changes: Mapping[str, str],
                     expected_generation: int | None) -> DomainMetadata:
    """What ``update_metadata`` writes: ``current`` with ``changes`` applied and the
    generation bumped (and, under the SPM lease, its version stamped: ``SPM_LVER``).
    :class:`MetadataConflict` when ``expected_generation`` is given and
    ``current`` is not of it; :class:`StorageError` for a change that is not allowed."""
    if expected_generation is not None and current.generation != expected_generation:
        raise MetadataConflict(what=f"domain {sd_uuid}", found=current.generation,
                               expected=expected_generation)
    lver = current_lver()
    if lver is not None:  # a write of the SPM's writer carries its lease version
        changes = {**changes, DOMAIN_KEY: str(lver)}
    try:
        return current.updated(changes)
    except ValueError as e:
        raise StorageError(reason=str(e)) from None


def decoded_metadata(sd_uuid: str, decode: Callable[[Raw], DomainMetadata],
                     raw: Raw) -> DomainMetadata:
    """The metadata ``decode`` reads from ``raw`` (a file's bytes, a VG's tags), which must
    be domain ``sd_uuid``'s: :class:`StorageDomainInvalid` when it is corrupt or another
    domain's."""
    try:
        meta = decode(raw)
    except ValueError as e:
        raise StorageDomainInvalid(sdUUID=sd_uuid, reason=str(e)) from None
    if meta.sd_uuid != sd_uuid:
        raise StorageDomainInvalid(sdUUID=sd_uuid, reason=f"metadata belongs to {meta.sd_uuid}")
    return meta
