"""What a client asks a pool to do as an SPM task: one typed record per task verb.

The verb handlers build these from the wire params (already checked by the schema and by
the handles); the pool actor's :meth:`~actors.storage.pool.PoolActor.submit` takes only
these, so mypy checks what crosses that actor boundary. A record turns into the task's
persisted params (:meth:`TaskRequest.to_params`, plain JSON) only when it is handed to the
task manager, which records it and gives it to the task's builder
(:mod:`actors.storage.taskwork`) here or in the SPM's writer process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from actors.storage.handle import ImageHandle, VolumeHandle
from actors.storage.sd.records import VolumeCreateRequest, check_uuid

__all__ = ["AttachDomain", "CreateVolume", "DeleteImage", "DeleteVolume", "DetachDomain",
           "TaskRequest"]


@dataclass(frozen=True)
class TaskRequest:
    """A task on one domain of one pool. Subclasses name the verb and their own fields."""

    verb: ClassVar[str]

    @property
    def sp_uuid(self) -> str:
        raise NotImplementedError

    @property
    def sd_uuid(self) -> str:
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        """The verb's own params, beyond the pool and the domain."""
        return {}

    def to_params(self) -> dict[str, Any]:
        """The params the task is recorded with (JSON), as its builder reads them."""
        return {"spUUID": self.sp_uuid, "sdUUID": self.sd_uuid, **self.fields()}


@dataclass(frozen=True)
class _DomainOfPool(TaskRequest):
    pool: str
    domain: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool", check_uuid(self.pool, "storagepoolID"))
        object.__setattr__(self, "domain", check_uuid(self.domain, "storagedomainID"))

    @property
    def sp_uuid(self) -> str:
        return self.pool

    @property
    def sd_uuid(self) -> str:
        return self.domain


@dataclass(frozen=True)
class AttachDomain(_DomainOfPool):
    """``StorageDomain.attach``: the domain joins the pool (it must belong to none)."""

    verb: ClassVar[str] = "StorageDomain.attach"


@dataclass(frozen=True)
class DetachDomain(_DomainOfPool):
    """``StorageDomain.detach``: an inactive domain that is not the master leaves the pool."""

    verb: ClassVar[str] = "StorageDomain.detach"


@dataclass(frozen=True)
class CreateVolume(TaskRequest):
    """``Volume.create`` in the pool ``pool``, as ``request`` describes it."""

    verb: ClassVar[str] = "Volume.create"
    pool: str
    request: VolumeCreateRequest

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool", check_uuid(self.pool, "storagepoolID"))

    @property
    def sp_uuid(self) -> str:
        return self.pool

    @property
    def sd_uuid(self) -> str:
        return self.request.sd_uuid

    def fields(self) -> dict[str, Any]:
        return {"request": self.request.to_json()}


@dataclass(frozen=True)
class DeleteVolume(TaskRequest):
    """``Volume.delete`` of one volume (checked unused and childless first)."""

    verb: ClassVar[str] = "Volume.delete"
    volume: VolumeHandle

    @property
    def sp_uuid(self) -> str:
        return self.volume.sp

    @property
    def sd_uuid(self) -> str:
        return self.volume.sd

    def fields(self) -> dict[str, Any]:
        return {"imgUUID": self.volume.img, "volUUID": self.volume.vol}


@dataclass(frozen=True)
class DeleteImage(TaskRequest):
    """``Image.delete`` of a whole image (none of its volumes in use)."""

    verb: ClassVar[str] = "Image.delete"
    image: ImageHandle

    @property
    def sp_uuid(self) -> str:
        return self.image.sp

    @property
    def sd_uuid(self) -> str:
        return self.image.sd

    def fields(self) -> dict[str, Any]:
        return {"imgUUID": self.image.img}
