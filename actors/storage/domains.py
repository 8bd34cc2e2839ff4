"""``/storage/domains``: the domain-level storage I/O of the verbs, off the actor thread.

Creating a domain or a pool, reading a domain's metadata and space, a volume's info,
preparing and tearing down volumes for VMs: each call returns a
:class:`concurrent.futures.Future` at once and the I/O runs on the actor's
:class:`~actors.storage.workers.Lanes`, at most ``per_domain`` at a time per domain. The
caller (an API worker) waits on the future with a timeout; a domain whose storage hangs holds
at most ``per_domain`` threads and further calls on it are refused at once (224), while
every other domain keeps being served.

Prepare, teardown and the deletion checks go through :class:`~actors.storage.usage.VolumeUsage`:
a prepare records its holder (under the image's lock), a teardown removes it and only the
last holder's teardown releases the image's devices, and a deletion is refused while a
volume is prepared or in use (:func:`~actors.storage.usage.check_unused`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from actors.base import ActorContext, SupervisedActor
from actors.storage import poolmeta
from actors.storage.locator import DomainLocator
from actors.storage.sd.backend import StorageDomainBackend
from actors.storage.sd.records import PreparedVolume, VolumeCreateRequest, VolumeSize
from actors.storage.usage import VolumeUsage, check_unused
from actors.storage.workers import Handoff, Lanes
from messaging.errors import (
    NoSuchImage,
    NoSuchVolume,
    StorageError,
    StorageTimeout,
    VolumeExists,
    VolumeHasChildren,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class DomainsActor(SupervisedActor):
    def __init__(self, ctx: ActorContext, *, locator: DomainLocator, usage: VolumeUsage,
                 workers: int, per_domain: int) -> None:
        super().__init__(ctx)
        self.locator = locator
        self.usage = usage
        self.workers = workers
        self.per_domain = per_domain
        self._lanes: Lanes | None = None
        self._calls = 0

    def setup(self) -> None:
        self._lanes = Lanes("storage-io", workers=self.workers, per_key=self.per_domain)

    def teardown(self) -> None:
        if self._lanes is not None:
            self._lanes.shutdown()

    def describe(self) -> dict[str, Any]:
        lanes = self._lanes
        return {"workers": self.workers, "perDomain": self.per_domain, "calls": self._calls,
                "threads": lanes.workers.threads() if lanes else 0,
                "inflight": lanes.inflight() if lanes else {},
                "imageLocks": self.usage.describe()}

    def _on(self, sd_uuid: str, what: str, fn: Callable[[StorageDomainBackend], T],
            ) -> Future[T]:
        """Run ``fn(backend of sd_uuid)`` in the domain's lane."""
        assert self._lanes is not None
        self._calls += 1
        locator = self.locator
        label = f"storage domain {sd_uuid} ({what})"

        def run() -> T:
            try:
                return fn(locator.open(sd_uuid))
            except OSError as e:  # the storage failed (EIO, ENOSPC, ...): a storage error
                raise StorageError(reason=f"{label}: {e.strerror or e}") from e

        return self._lanes.submit(sd_uuid, run, what=label)

    # --- domains and pools -------------------------------------------------------------

    def create_domain(self, sd_uuid: str, *, domain_type: str, type_args: str, name: str,
                      domain_class: str, version: int) -> Future[bool]:
        assert self._lanes is not None
        self._calls += 1
        locator = self.locator

        def create() -> bool:
            locator.create(sd_uuid, domain_type=domain_type, type_args=type_args, name=name,
                           domain_class=domain_class, version=version)
            return True

        return self._lanes.submit(sd_uuid, create, what=f"storage domain {sd_uuid} (create)")

    def info(self, sd_uuid: str) -> Future[dict[str, Any]]:
        locator = self.locator

        def info(backend: StorageDomainBackend) -> dict[str, Any]:
            meta = backend.read_metadata()
            wire = meta.to_wire()
            wire.update(remotePath=locator.remote_path(backend), lver=-1, spm_id=-1,
                        master_ver=int(meta.get("MASTER_VERSION", "0") or 0))
            return wire

        return self._on(sd_uuid, "getInfo", info)

    def stats(self, sd_uuid: str) -> Future[dict[str, Any]]:
        def stats(backend: StorageDomainBackend) -> dict[str, Any]:
            st = backend.stats()
            return {"disktotal": st.total, "diskfree": st.free}

        return self._on(sd_uuid, "getStats", stats)

    def pool_membership(self, sd_uuid: str) -> Future[str]:
        """The pool the domain's metadata says it belongs to ("" for none)."""
        return self._on(sd_uuid, "metadata", lambda b: b.read_metadata().pool_uuid)

    def create_pool(self, sp_uuid: str, *, name: str, master_sd: str, master_version: int,
                    domain_list: Sequence[str]) -> Future[bool]:
        assert self._lanes is not None
        self._calls += 1
        locator = self.locator

        def create() -> bool:
            poolmeta.create_pool(locator, sp_uuid=sp_uuid, name=name, master_sd=master_sd,
                                 master_version=master_version, domain_list=domain_list)
            return True

        return self._lanes.submit(master_sd, create,
                                  what=f"storage domain {master_sd} (pool create)")

    # --- images and volumes ------------------------------------------------------------

    def volume_info(self, sd_uuid: str, img_uuid: str, vol_uuid: str,
                    ) -> Future[dict[str, Any]]:
        return self._on(sd_uuid, "volume info",
                        lambda b: b.volume_info(img_uuid, vol_uuid).to_wire())

    def refresh_volume(self, sd_uuid: str, img_uuid: str, vol_uuid: str) -> Future[int]:
        """After the SPM extended a volume: make this host's devices see the new size."""
        return self._on(sd_uuid, "volume refresh",
                        lambda b: b.refresh_volume(img_uuid, vol_uuid))

    def volume_size(self, sd_uuid: str, img_uuid: str, vol_uuid: str) -> Future[VolumeSize]:
        """The volume's sizes as this host sees them, after refreshing its devices (so that an
        extension the SPM made shows)."""
        def size(backend: StorageDomainBackend) -> VolumeSize:
            physical = backend.refresh_volume(img_uuid, vol_uuid)
            capacity = backend.volume_info(img_uuid, vol_uuid).capacity
            return VolumeSize(capacity, physical, backend.allocation_limit(img_uuid, vol_uuid))

        return self._on(sd_uuid, "volume size", size)

    def check_new_volume(self, req: VolumeCreateRequest) -> Future[None]:
        """Refuse at once what Volume.create's task would refuse: an existing volume, a
        missing parent, a request this kind of domain cannot hold."""
        def check(backend: StorageDomainBackend) -> None:
            backend.volume_create_steps(req)  # validates the request; does no I/O
            try:
                backend.volume_info(req.img_uuid, req.vol_uuid)
            except (NoSuchImage, NoSuchVolume):
                pass
            else:
                raise VolumeExists(volUUID=req.vol_uuid, imgUUID=req.img_uuid)
            if req.parent_img is not None and req.parent_vol is not None:
                backend.volume_info(req.parent_img, req.parent_vol)

        return self._on(req.sd_uuid, "volume check", check)

    def check_deletable(self, sd_uuid: str, img_uuid: str, vol_uuid: str | None,
                        ) -> Future[None]:
        """NoSuchImage / NoSuchVolume unless the image (and the volume) exist;
        VolumeHasChildren for a parent; VolumeInUse / ImageInUse while prepared or in use.
        The deletion task checks all of it again, under the image's lock."""
        usage = self.usage

        def check(backend: StorageDomainBackend) -> None:
            volumes = backend.list_volumes(img_uuid)
            if vol_uuid is not None:
                if vol_uuid not in volumes:
                    raise NoSuchVolume(volUUID=vol_uuid, imgUUID=img_uuid, sdUUID=sd_uuid)
                children = backend.children(img_uuid, vol_uuid)
                if children:
                    raise VolumeHasChildren(volUUID=vol_uuid,
                                            children=", ".join(v for _, v in children))
            check_unused(usage, backend, img_uuid, vol_uuid)

        return self._on(sd_uuid, "volume check", check)

    def prepare(self, sd_uuid: str, img_uuid: str, vol_uuid: str, holder: str,
                handoff: Handoff | None = None) -> Future[PreparedVolume]:
        """Prepare the volume for ``holder``, recorded before anything is touched. When the
        caller abandons ``handoff`` (it stopped waiting), a prepare that finishes later is
        undone: a use nobody was told of must not keep the volume from being deleted."""
        usage = self.usage

        def prepare(backend: StorageDomainBackend) -> PreparedVolume:
            with usage.image_lock(sd_uuid, img_uuid, "prepare"):
                new = usage.add(sd_uuid, img_uuid, vol_uuid, holder)
                try:
                    prepared = backend.prepare(img_uuid, vol_uuid)
                    if handoff is None or handoff.deliver():
                        return prepared
                    log.warning("prepare of %s/%s for %s finished after its caller gave up: "
                                "undone", img_uuid, vol_uuid, holder)
                    if new:  # else the holder had it prepared before: that use stands
                        usage.remove(sd_uuid, img_uuid, vol_uuid, holder)
                        new = False
                        if not usage.image_holders(sd_uuid, img_uuid):
                            backend.teardown(img_uuid, vol_uuid)
                    raise StorageTimeout(timeout=0, reason="prepare abandoned by its caller")
                except BaseException:
                    if new:
                        usage.remove(sd_uuid, img_uuid, vol_uuid, holder)
                    raise

        return self._on(sd_uuid, "prepare", prepare)

    def teardown_image(self, sd_uuid: str, img_uuid: str, vol_uuid: str | None, holder: str,
                       ) -> Future[None]:
        """Drop ``holder``'s use of the volume (of every volume of the image when None);
        once nobody holds any volume of the image, release all of them."""
        usage = self.usage

        def teardown(backend: StorageDomainBackend) -> None:
            with usage.image_lock(sd_uuid, img_uuid, "teardown"):
                volumes = backend.list_volumes(img_uuid)
                if vol_uuid is not None and vol_uuid not in volumes:
                    usage.remove(sd_uuid, img_uuid, vol_uuid, holder)
                    raise NoSuchVolume(volUUID=vol_uuid, imgUUID=img_uuid, sdUUID=sd_uuid)
                for vol in [vol_uuid] if vol_uuid is not None else volumes:
                    usage.remove(sd_uuid, img_uuid, vol, holder)
                left = usage.image_holders(sd_uuid, img_uuid)
                if left:
                    log.info("image %s of %s stays prepared for %s", img_uuid, sd_uuid,
                             sorted({h for holders in left.values() for h in holders}))
                    return
                for vol in volumes:
                    backend.teardown(img_uuid, vol)

        return self._on(sd_uuid, "teardown", teardown)
