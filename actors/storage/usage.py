"""Which volumes are prepared on this host and for whom, and the lock that makes a prepare
and a deletion of the same image exclude each other.

Records live in the run dir, one empty file per holder::

    <run_dir>/storage/prepared/<sdUUID>/<imgUUID>/<volUUID>/<holder>

so they outlive a restart of vdsmd (VMs keep running across one, and their volumes stay in
use) and vanish with a reboot (``/run`` is a tmpfs, and no VM survives a reboot either).
Prepare writes its record before it touches the volume, teardown removes it after, so a
crash in between leaves the volume marked in use rather than unmarked: a stale record can
only refuse a deletion (``Image.teardown`` clears the client's), never allow a wrong one.

:meth:`VolumeUsage.image_lock` serialises, per image, what prepares, tears down or deletes
its volumes: the prepare of a VM arriving while a deletion task runs waits for it (then
finds the volume gone), and a deletion arriving while a prepare runs finds its record. The
wait is bounded (:class:`~messaging.errors.StorageBusy`, retryable): storage can hang, and
a hung image must not hold a worker forever. Images are locked one at a time; a volume of
another image in a prepared chain is a parent, which no deletion takes while it has
children.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.storage import fileutil
from actors.storage.handle import check_holder
from actors.storage.sd.backend import StorageDomainBackend
from actors.storage.sd.records import check_uuid
from messaging.errors import ImageInUse, InvalidParams, StorageBusy, VolumeInUse

log = logging.getLogger(__name__)


@dataclass
class _ImageLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    """Threads holding or waiting for it; the entry goes when the last one leaves."""
    what: str = ""
    since: float = 0.0


class VolumeUsage:
    def __init__(self, root: Path, *, lock_timeout: float) -> None:
        self.root = root
        self.lock_timeout = lock_timeout
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], _ImageLock] = {}

    # --- the per-image lock --------------------------------------------------------------

    @contextlib.contextmanager
    def image_lock(self, sd_uuid: str, img_uuid: str, what: str) -> Iterator[None]:
        """Hold image ``img_uuid``'s lock for ``what``; StorageBusy past the lock timeout."""
        key = (check_uuid(sd_uuid, "storagedomainID"), check_uuid(img_uuid, "imageID"))
        with self._guard:
            entry = self._locks.setdefault(key, _ImageLock())
            entry.users += 1
        started = time.monotonic()
        try:
            if not entry.lock.acquire(timeout=self.lock_timeout):
                with self._guard:
                    holder, age = entry.what, time.monotonic() - entry.since
                raise StorageBusy(what=f"image {img_uuid} (a {holder})", pending=1, age=age)
            try:
                with self._file_lock(key, img_uuid, started):
                    with self._guard:
                        entry.what, entry.since = what, time.monotonic()
                    yield
            finally:
                with self._guard:
                    entry.what = ""
                entry.lock.release()
        finally:
            with self._guard:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[key]

    @contextlib.contextmanager
    def _file_lock(self, key: tuple[str, str], img_uuid: str, started: float) -> Iterator[None]:
        """The same image's lock across processes: the SPM's writer deletes, vdsmd prepares
        (an flock on ``<root>/.locks/<sd>-<img>``, released by the kernel if one dies)."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{key[0]}-{key[1]}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - started
                    if waited >= self.lock_timeout:
                        raise StorageBusy(what=f"image {img_uuid} (held by another process)",
                                          pending=1, age=waited) from None
                    time.sleep(0.01)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def describe(self) -> list[dict[str, Any]]:
        """The images locked now, by what and for how long (for Actors.inspect)."""
        now = time.monotonic()
        with self._guard:
            return [{"sdUUID": sd, "imgUUID": img, "by": e.what, "age": round(now - e.since, 3),
                     "waiting": e.users - 1}
                    for (sd, img), e in self._locks.items() if e.what]

    # --- records -------------------------------------------------------------------------

    def _volume_dir(self, sd_uuid: str, img_uuid: str, vol_uuid: str) -> Path:
        return (self.root / check_uuid(sd_uuid, "storagedomainID")
                / check_uuid(img_uuid, "imageID") / check_uuid(vol_uuid, "volumeID"))

    def add(self, sd_uuid: str, img_uuid: str, vol_uuid: str, holder: str) -> bool:
        """Record that ``holder`` prepared the volume; False if it was recorded already."""
        path = self._volume_dir(sd_uuid, img_uuid, vol_uuid) / check_holder(holder)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return True

    def remove(self, sd_uuid: str, img_uuid: str, vol_uuid: str, holder: str) -> bool:
        """Forget ``holder``'s record of the volume; whether there was one."""
        volume = self._volume_dir(sd_uuid, img_uuid, vol_uuid)
        removed = fileutil.remove(volume / check_holder(holder))
        if volume.is_dir() and not any(volume.iterdir()):
            fileutil.rmdir(volume)
            image = volume.parent
            if not any(image.iterdir()):
                fileutil.rmdir(image)  # the domain's directory stays: other images use it
        return removed

    def holders(self, sd_uuid: str, img_uuid: str, vol_uuid: str) -> list[str]:
        """Who prepared the volume (sorted); empty when nobody has it prepared."""
        volume = self._volume_dir(sd_uuid, img_uuid, vol_uuid)
        try:
            return sorted(p.name for p in volume.iterdir())
        except FileNotFoundError:
            return []

    def image_holders(self, sd_uuid: str, img_uuid: str) -> dict[str, list[str]]:
        """The prepared volumes of an image and their holders."""
        image = self.root / check_uuid(sd_uuid, "storagedomainID") / check_uuid(
            img_uuid, "imageID")
        try:
            volumes = sorted(v.name for v in image.iterdir())
        except FileNotFoundError:
            return {}
        found = {}
        for vol in volumes:
            try:
                holders = self.holders(sd_uuid, img_uuid, vol)
            except InvalidParams:
                log.warning("ignoring %s: not a volume's record", image / vol)
                continue
            if holders:
                found[vol] = holders
        return found


def check_unused(usage: VolumeUsage, backend: StorageDomainBackend, img_uuid: str,
                 vol_uuid: str | None) -> None:
    """Refuse to delete what is prepared or in use on this host: the volume (VolumeInUse,
    218) or, ``vol_uuid`` None, any volume of the image (ImageInUse, 223)."""
    sd_uuid = backend.sd_uuid
    if vol_uuid is not None:
        holders = usage.holders(sd_uuid, img_uuid, vol_uuid)
        if holders:
            raise VolumeInUse(volUUID=vol_uuid, reason=f"prepared for {', '.join(holders)}: "
                              "tear it down first")
        reason = backend.in_use(img_uuid, vol_uuid)
        if reason:
            raise VolumeInUse(volUUID=vol_uuid, reason=reason)
        return
    for vol, holders in usage.image_holders(sd_uuid, img_uuid).items():
        raise ImageInUse(imgUUID=img_uuid, reason=f"volume {vol} is prepared for "
                         f"{', '.join(holders)}: tear it down first")
    for vol in backend.list_volumes(img_uuid):
        reason = backend.in_use(img_uuid, vol)
        if reason:
            raise ImageInUse(imgUUID=img_uuid, reason=f"volume {vol} is {reason}")
