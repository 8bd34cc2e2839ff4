"""Images and volumes: the typed interface that the verbs and the VMs share.

:class:`VolumeApi` has one typed method per operation on handles
(:mod:`actors.storage.handle`): :meth:`~VolumeApi.prepare_volume`,
:meth:`~VolumeApi.teardown_volume`, :meth:`~VolumeApi.teardown_image`. The wire handlers
(``Image.prepare``, ``Image.teardown``, ``Volume.*``, ``Image.delete``) turn params into
handles and call them with the holder :data:`~actors.storage.handle.API_HOLDER`; the VM
subsystem calls them with its VM's holder (``StorageSubsystem.prepare_volume``). Which
volumes are prepared, and for whom, is recorded in the run dir
(:mod:`actors.storage.usage`), so a deletion is refused while one is (218/223), also after
a restart of vdsmd.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

from actors.storage.calls import DOMAINS, StorageCalls, ask
from actors.storage.handle import API_HOLDER, ImageHandle, VolumeHandle, check_holder
from actors.storage.proxies import DomainsProxy
from actors.storage.sd.records import (
    BLANK_UUID,
    Allocation,
    PreparedVolume,
    VolumeCreateRequest,
    VolumeFormat,
    VolumeSize,
)
from actors.storage.taskrequest import CreateVolume, DeleteImage, DeleteVolume
from actors.storage.workers import Handoff
from messaging.errors import StorageTimeout
from messaging.server import Binding

log = logging.getLogger(__name__)


class VolumeApi(StorageCalls):
    # --- the typed interface -------------------------------------------------------------

    def prepare_volume(self, volume: VolumeHandle, holder: str) -> PreparedVolume:
        """Make the volume and its chain usable on this host for ``holder``."""
        check_holder(holder)
        self.member(volume.sp, volume.sd, active=True)
        handoff = Handoff()
        future: concurrent.futures.Future[PreparedVolume] = ask(
            self.domains.proxy(DomainsProxy).prepare(volume.sd, volume.img, volume.vol, holder,
                                                     handoff),
            DOMAINS)
        try:
            return future.result(self.call_timeout)
        except concurrent.futures.TimeoutError:
            if handoff.abandon():  # a late success is undone by the worker itself
                raise StorageTimeout(timeout=self.call_timeout, reason="Image.prepare") from None
        return future.result(self.call_timeout)  # delivered just at the deadline

    def volume_size(self, volume: VolumeHandle, timeout: float | None = None) -> VolumeSize:
        """The volume's virtual and physical size on this host (its devices refreshed first)
        and how far it can be extended."""
        self.member(volume.sp, volume.sd, active=False)
        size: VolumeSize = self.io(
            self.domains.proxy(DomainsProxy).volume_size(volume.sd, volume.img, volume.vol),
            "volume size", timeout)
        return size

    def teardown_volume(self, volume: VolumeHandle, holder: str) -> None:
        """Undo ``holder``'s :meth:`prepare_volume` (released once nobody holds the image)."""
        self._teardown(volume.image, volume.vol, holder)

    def teardown_image(self, image: ImageHandle, holder: str) -> None:
        """:meth:`teardown_volume` of every volume of the image."""
        self._teardown(image, None, holder)

    def _teardown(self, image: ImageHandle, vol: str | None, holder: str) -> None:
        check_holder(holder)
        self.member(image.sp, image.sd, active=False)
        self.io(self.domains.proxy(DomainsProxy).teardown_image(image.sd, image.img, vol, holder),
                "Image.teardown")

    # --- the verbs -----------------------------------------------------------------------

    def create_volume(self, params: dict[str, Any]) -> str:
        parent_vol = params.get("srcVolUUID")
        parent_img = params.get("srcImgUUID")
        if parent_vol in (None, BLANK_UUID):
            parent_vol = parent_img = None
        elif parent_img in (None, BLANK_UUID):
            parent_img = params["imageID"]
        req = VolumeCreateRequest(
            sd_uuid=params["storagedomainID"], img_uuid=params["imageID"],
            vol_uuid=params["volumeID"], capacity=params["size"],
            format=VolumeFormat.parse(params["volFormat"]),
            allocation=Allocation.parse(params["preallocate"]),
            initial_size=params.get("initialSize"), parent_img=parent_img,
            parent_vol=parent_vol, description=params.get("desc", ""))
        pool = self.member(params["storagepoolID"], req.sd_uuid, active=True)
        self.io(self.domains.proxy(DomainsProxy).check_new_volume(req), "Volume.create")
        return self.submit(pool, CreateVolume(params["storagepoolID"], req))

    def volume_info(self, params: dict[str, Any]) -> dict[str, Any]:
        volume = VolumeHandle.from_params(params)
        self.member(volume.sp, volume.sd, active=False)
        info = self.domains.proxy(DomainsProxy).volume_info(volume.sd, volume.img, volume.vol)
        return self.io(info, "Volume.getInfo")

    def delete_volume(self, params: dict[str, Any]) -> str:
        volume = VolumeHandle.from_params(params)
        pool = self.member(volume.sp, volume.sd, active=True)
        self.io(self.domains.proxy(DomainsProxy).check_deletable(volume.sd, volume.img, volume.vol),
                "Volume.delete")
        return self.submit(pool, DeleteVolume(volume))

    def delete_image(self, params: dict[str, Any]) -> str:
        image = ImageHandle.from_params(params)
        pool = self.member(image.sp, image.sd, active=True)
        self.io(self.domains.proxy(DomainsProxy).check_deletable(image.sd, image.img, None),
                "Image.delete")
        return self.submit(pool, DeleteImage(image))

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.prepare_volume(VolumeHandle.from_params(params), API_HOLDER).to_wire()

    def teardown(self, params: dict[str, Any]) -> bool:
        if params.get("volumeID") is None:
            self.teardown_image(ImageHandle.from_params(params), API_HOLDER)
        else:
            self.teardown_volume(VolumeHandle.from_params(params), API_HOLDER)
        return True

    def bindings(self) -> dict[str, Binding]:
        return {
            "Volume.create": Binding(self.create_volume),
            "Volume.getInfo": Binding(self.volume_info),
            "Volume.delete": Binding(self.delete_volume),
            "Image.prepare": Binding(self.prepare),
            "Image.teardown": Binding(self.teardown),
            "Image.delete": Binding(self.delete_image),
        }
