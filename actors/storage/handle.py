"""The typed names of storage things inside the agent: images, volumes and who uses them.

Verb handlers build these from the wire params (already validated by the schema), the VM
subsystem from a VM's drives; both then call the same typed methods
(:class:`actors.storage.volumes.VolumeApi`). Every id is checked to be a canonical UUID
when a handle is made, so a handle is always safe to build a path from.

A *holder* names who prepared a volume: :data:`API_HOLDER` for ``Image.prepare`` (any
client), ``vm-<vmID>`` for a VM of this host (:func:`vm_holder`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from actors.storage.sd.records import VolumeSize, check_uuid
from messaging.errors import InvalidParams

__all__ = ["API_HOLDER", "ImageHandle", "VolumeHandle", "VolumeSize", "check_holder",
           "vm_holder"]

API_HOLDER = "api"
_HOLDER_RE = re.compile(r"api|vm-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def vm_holder(vm_id: str) -> str:
    """The holder name of the VM ``vm_id``."""
    return f"vm-{check_uuid(vm_id, 'vmID')}"


def check_holder(holder: str) -> str:
    if _HOLDER_RE.fullmatch(holder) is None:
        raise InvalidParams("holder", f"{holder[:64]!r} is not a holder name")
    return holder


def _canonical(handle: object, **params: str) -> None:
    """Check each id attribute (named by its wire param) and store it in canonical form."""
    for attr, param in params.items():
        object.__setattr__(handle, attr, check_uuid(getattr(handle, attr), param))


@dataclass(frozen=True)
class ImageHandle:
    """An image of a domain of a pool."""

    sp: str
    sd: str
    img: str

    def __post_init__(self) -> None:
        _canonical(self, sp="storagepoolID", sd="storagedomainID", img="imageID")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ImageHandle:
        return cls(params["storagepoolID"], params["storagedomainID"], params["imageID"])


@dataclass(frozen=True)
class VolumeHandle:
    """A volume of an image of a domain of a pool."""

    sp: str
    sd: str
    img: str
    vol: str

    def __post_init__(self) -> None:
        _canonical(self, sp="storagepoolID", sd="storagedomainID", img="imageID",
                   vol="volumeID")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> VolumeHandle:
        return cls(params["storagepoolID"], params["storagedomainID"], params["imageID"],
                   params["volumeID"])

    @property
    def image(self) -> ImageHandle:
        return ImageHandle(self.sp, self.sd, self.img)
