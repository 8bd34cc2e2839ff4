"""Records shared by every storage-domain backend: ids, enums, requests and answers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from messaging.errors import InvalidParams
from messaging.schema.types import check_text

BLANK_UUID = "00000000-0000-0000-0000-000000000000"
"""The parent of a volume that has none (vdsm's convention)."""


def check_uuid(value: object, param: str) -> str:
    """``value`` as a canonical lower-case UUID; :class:`InvalidParams` naming ``param`` if not.

    Only the canonical 36-character form round-trips, so braces, ``urn:uuid:``, bare hex and
    anything with a ``/`` are refused before a path is ever built from them.
    """
    if not isinstance(value, str):
        raise InvalidParams(param, f"expected a UUID string, got {type(value).__name__}")
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        raise InvalidParams(param, f"{value[:64]!r} is not a UUID") from None
    if canonical != value.lower():
        raise InvalidParams(param, f"{value[:64]!r} is not a canonical UUID")
    return canonical


class VolumeFormat(StrEnum):
    COW = "COW"
    RAW = "RAW"

    @classmethod
    def parse(cls, value: str) -> VolumeFormat:
        """From the wire (``cow``/``raw``) or from metadata (``COW``/``RAW``)."""
        try:
            return cls(value.upper())
        except ValueError:
            raise InvalidParams("volFormat", f"{value!r} is not cow or raw") from None

    @property
    def qemu(self) -> str:
        return "qcow2" if self is VolumeFormat.COW else "raw"


class Allocation(StrEnum):
    SPARSE = "SPARSE"
    PREALLOCATED = "PREALLOCATED"

    @classmethod
    def parse(cls, value: str) -> Allocation:
        try:
            return cls(value.upper())
        except ValueError:
            raise InvalidParams("preallocate", f"{value!r} is not sparse or preallocated") from None


class Legality(StrEnum):
    LEGAL = "LEGAL"
    ILLEGAL = "ILLEGAL"


class VolumeRole(StrEnum):
    """vdsm's ``voltype``: a LEAF is writable, an INTERNAL volume is the parent of another."""

    LEAF = "LEAF"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class VolumeCreateRequest:
    """Everything ``Volume.create`` asks for; JSON round-trips for the task journal."""

    sd_uuid: str
    img_uuid: str
    vol_uuid: str
    capacity: int
    format: VolumeFormat
    allocation: Allocation
    initial_size: int | None = None
    parent_img: str | None = None
    parent_vol: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        check_uuid(self.sd_uuid, "storagedomainID")
        check_uuid(self.img_uuid, "imageID")
        check_uuid(self.vol_uuid, "volumeID")
        if self.capacity <= 0:
            raise InvalidParams("size", f"{self.capacity} is not a positive size")
        if self.initial_size is not None and self.initial_size <= 0:
            raise InvalidParams("initialSize", f"{self.initial_size} is not a positive size")
        if (self.parent_vol is None) != (self.parent_img is None):
            raise InvalidParams("srcVolUUID", "srcImgUUID and srcVolUUID go together")
        if self.parent_vol is not None:
            check_uuid(self.parent_img, "srcImgUUID")
            check_uuid(self.parent_vol, "srcVolUUID")
            if self.format is not VolumeFormat.COW:
                raise InvalidParams("volFormat", "a volume with a parent must be cow")
            if self.parent_vol == self.vol_uuid:
                raise InvalidParams("srcVolUUID", "a volume cannot be its own parent")
        check_text(self.description, "desc")

    @property
    def has_parent(self) -> bool:
        return self.parent_vol is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "sd_uuid": self.sd_uuid, "img_uuid": self.img_uuid, "vol_uuid": self.vol_uuid,
            "capacity": self.capacity, "format": self.format.value,
            "allocation": self.allocation.value, "initial_size": self.initial_size,
            "parent_img": self.parent_img, "parent_vol": self.parent_vol,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeCreateRequest:
        return cls(
            sd_uuid=data["sd_uuid"], img_uuid=data["img_uuid"], vol_uuid=data["vol_uuid"],
            capacity=int(data["capacity"]), format=VolumeFormat(data["format"]),
            allocation=Allocation(data["allocation"]), initial_size=data.get("initial_size"),
            parent_img=data.get("parent_img"), parent_vol=data.get("parent_vol"),
            description=str(data.get("description", "")),
        )


@dataclass(frozen=True)
class VolumeInfo:
    sd_uuid: str
    img_uuid: str
    vol_uuid: str
    capacity: int
    """Virtual size in bytes."""
    apparentsize: int
    """Size of the file or block device."""
    truesize: int
    """Bytes really allocated."""
    format: VolumeFormat
    allocation: Allocation
    role: VolumeRole
    legality: Legality
    parent_img: str
    parent_vol: str
    """:data:`BLANK_UUID` when there is no parent."""
    description: str
    ctime: int

    def to_wire(self) -> dict[str, Any]:
        """``Volume.getInfo``'s result, vdsm's names."""
        return {
            "uuid": self.vol_uuid, "image": self.img_uuid, "domain": self.sd_uuid,
            "capacity": self.capacity, "apparentsize": self.apparentsize,
            "truesize": self.truesize, "format": self.format.value,
            "type": self.allocation.value, "voltype": self.role.value,
            "legality": self.legality.value, "parent": self.parent_vol,
            "description": self.description, "ctime": self.ctime,
        }


@dataclass(frozen=True)
class VolumeSize:
    """A volume's sizes as this host sees them: what a VM's thin provisioning works with."""

    capacity: int
    """Virtual size in bytes."""
    physical: int
    """Bytes of the volume on this host: its file, or its device (a loop device, an LV)."""
    limit: int | None
    """The most an extension grows it to: a fully allocated qcow2 of ``capacity``, in whole
    allocation units of its domain. None for a volume that is never extended (a file grows
    by itself, a raw block volume has its whole capacity)."""

    @property
    def thin(self) -> bool:
        """Whether the volume has a fixed allocation that extensions grow (a cow volume on a
        block domain)."""
        return self.limit is not None


@dataclass(frozen=True)
class PreparedLayer:
    img_uuid: str
    vol_uuid: str
    path: str
    device: str | None


@dataclass(frozen=True)
class PreparedVolume:
    """What a VM needs to open a volume: ``path`` (its whole backing chain resolves from it).

    For a block domain ``path`` is a symlink ``<run>/<sdUUID>/<imgUUID>/<volUUID>`` to the
    block ``device`` (a loop device or an LV), so that the relative backing names stored in
    the qcow2 headers resolve to the parents' devices; for a file domain it is the file.
    """

    path: str
    device: str | None
    format: VolumeFormat
    chain: tuple[PreparedLayer, ...]
    """Top first."""

    @property
    def is_block(self) -> bool:
        return self.device is not None

    def to_wire(self) -> dict[str, Any]:
        return {
            "path": self.path, "volType": "block" if self.is_block else "file",
            "format": self.format.value.lower(), "device": self.device,
            "chain": [{"imageID": layer.img_uuid, "volumeID": layer.vol_uuid,
                       "path": layer.path} for layer in self.chain],
        }


@dataclass(frozen=True)
class DomainStats:
    total: int
    free: int


@dataclass(frozen=True)
class ProbeTarget:
    """What the domain monitor probes: an O_DIRECT read, and a write where the domain has one.

    ``write_path`` is a scratch file of the domain (never its metadata): a frozen or hung
    filesystem lets reads through from the cache-less path but blocks every write.
    """

    read_path: str
    write_path: str | None = None
