"""The on-disk layout of a file-based domain (file and loop domains) and its metadata I/O.

::

    <mount>/<sdUUID>/
        dom_md/
            metadata        KEY=value lines + CHECKSUM (atomic replace, < 4 KiB)
            ids             1 MiB of zeros: host delta leases (the lease issue)
            leases          16 MiB sparse: resource leases, e.g. the SPM lease
            inbox, outbox   1 MiB of zeros each: the SPM mailbox
            probe           sparse, one 4 KiB slot per host id: the monitor's write probe
        images/
            <imgUUID>/
                <volUUID>        the volume's data (qcow2 or raw)
                <volUUID>.meta   its metadata (JSON, atomic replace)

A domain is built under a hidden temporary name and renamed into place, so that a
half-created domain never appears under its UUID.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from actors.storage import fileutil
from actors.storage.sd import metadata as md
from actors.storage.sd.backend import decoded_metadata
from actors.storage.sd.records import check_uuid
from messaging.errors import (
    InvalidParams,
    NoSpace,
    NoSuchImage,
    NoSuchStorageDomain,
    NoSuchVolume,
    StorageDomainExists,
    StorageError,
)

log = logging.getLogger(__name__)

DOM_MD = "dom_md"
IMAGES = "images"
META_SUFFIX = ".meta"
SPECIAL_FILES = {"ids": 1 << 20, "leases": 16 << 20, "inbox": 1 << 20, "outbox": 1 << 20,
                 "probe": 0}
"""Name -> size; ids, inbox and outbox are written with zeros, the others are sparse."""
ZEROED = ("ids", "inbox", "outbox")


class Layout:
    """Paths of one file-based domain; every id is validated before a path is built."""

    def __init__(self, mount: Path, sd_uuid: str) -> None:
        self.sd_uuid = check_uuid(sd_uuid, "storagedomainID")
        self.mount = Path(mount)
        self.root = self.mount / self.sd_uuid
        self.dom_md = self.root / DOM_MD
        self.images = self.root / IMAGES
        self.metadata = self.dom_md / "metadata"

    def image(self, img_uuid: str) -> Path:
        return self.images / check_uuid(img_uuid, "imageID")

    def volume(self, img_uuid: str, vol_uuid: str) -> Path:
        return self.image(img_uuid) / check_uuid(vol_uuid, "volumeID")

    def volume_meta(self, img_uuid: str, vol_uuid: str) -> Path:
        vol = self.volume(img_uuid, vol_uuid)
        return vol.with_name(vol.name + META_SUFFIX)

    def exists(self) -> bool:
        return self.metadata.is_file()

    # --- domain metadata ----------------------------------------------------------------

    def read_metadata(self) -> md.DomainMetadata:
        try:
            data = self.metadata.read_bytes()
        except FileNotFoundError:
            raise NoSuchStorageDomain(sdUUID=self.sd_uuid) from None
        return decoded_metadata(self.sd_uuid, md.decode_text, data)

    def write_metadata(self, meta: md.DomainMetadata) -> None:
        fileutil.write_atomic(self.metadata, md.encode_text(meta))

    # --- volume metadata ----------------------------------------------------------------

    def read_volume_meta(self, img_uuid: str, vol_uuid: str) -> md.VolumeMetadata:
        path = self.volume_meta(img_uuid, vol_uuid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if not self.image(img_uuid).is_dir():
                raise NoSuchImage(imgUUID=img_uuid, sdUUID=self.sd_uuid) from None
            raise NoSuchVolume(volUUID=vol_uuid, imgUUID=img_uuid, sdUUID=self.sd_uuid) from None
        try:
            meta = md.VolumeMetadata.decode(data)
        except ValueError as e:
            raise StorageError(reason=f"volume {vol_uuid} of image {img_uuid}: {e}") from None
        if meta.img_uuid != img_uuid:
            raise StorageError(reason=f"volume {vol_uuid} says it belongs to {meta.img_uuid}")
        return meta

    def write_volume_meta(self, img_uuid: str, vol_uuid: str, meta: md.VolumeMetadata) -> None:
        fileutil.write_atomic(self.volume_meta(img_uuid, vol_uuid), meta.encode())

    def remove_volume_meta(self, img_uuid: str, vol_uuid: str) -> None:
        """Remove the metadata and any temp file an interrupted atomic write left behind."""
        path = self.volume_meta(img_uuid, vol_uuid)
        fileutil.remove(path)
        for leftover in path.parent.glob(f".{path.name}.tmp-*"):
            fileutil.remove(leftover)

    # --- listing ------------------------------------------------------------------------

    def list_images(self) -> tuple[str, ...]:
        if not self.images.is_dir():
            raise NoSuchStorageDomain(sdUUID=self.sd_uuid)
        return tuple(sorted(p.name for p in self.images.iterdir() if _is_uuid(p.name)))

    def list_volumes(self, img_uuid: str) -> tuple[str, ...]:
        image = self.image(img_uuid)
        if not image.is_dir():
            raise NoSuchImage(imgUUID=img_uuid, sdUUID=self.sd_uuid)
        names = (p.name[: -len(META_SUFFIX)] for p in image.glob("*" + META_SUFFIX))
        return tuple(sorted(n for n in names if _is_uuid(n)))

    def all_volume_meta(self) -> list[tuple[str, str, md.VolumeMetadata]]:
        """``(img, vol, meta)`` of every readable volume of the domain (for child lookups)."""
        found = []
        for img in self.list_images():
            for vol in self.list_volumes(img):
                try:
                    found.append((img, vol, self.read_volume_meta(img, vol)))
                except (NoSuchVolume, StorageError) as e:
                    log.warning("skipping volume %s/%s: %s", img, vol, e)
        return found

    # --- creation -----------------------------------------------------------------------

    def create(self, meta: md.DomainMetadata) -> None:
        """Build the domain under a temporary name, then rename it into place."""
        if not self.mount.is_dir():
            raise StorageError(reason=f"{self.mount} is not a directory (not connected?)")
        if self.root.exists():
            raise StorageDomainExists(sdUUID=self.sd_uuid)
        tmp = self.mount / f".{self.sd_uuid}.creating-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            (tmp / DOM_MD).mkdir(parents=True)
            (tmp / IMAGES).mkdir()
            for name, size in SPECIAL_FILES.items():
                path = tmp / DOM_MD / name
                with path.open("wb") as f:
                    if name in ZEROED:
                        f.write(bytes(size))
                    else:
                        f.truncate(size)
                    os.fsync(f.fileno())
            fileutil.write_atomic(tmp / DOM_MD / "metadata", md.encode_text(meta))
            fileutil.fsync_dir(tmp)
            tmp.rename(self.root)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(where=str(self.mount), reason=str(e)) from None
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):  # another creator won the race
                raise StorageDomainExists(sdUUID=self.sd_uuid) from None
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fileutil.fsync_dir(self.mount)
        log.info("created domain %s at %s", self.sd_uuid, self.root)


def _is_uuid(name: str) -> bool:
    try:
        check_uuid(name, "name")
    except InvalidParams:
        return False
    return True
