"""Domain and volume metadata records and their encodings.

Domain metadata is ``KEY=value`` lines, sorted, ending with ``CHECKSUM=<sha256 of the lines
above>``; ``GENERATION`` counts the writes so that a writer can refuse to overwrite a change it
has not seen. The text stays well under 4 KiB, so the monitor's 4 KiB O_DIRECT read covers it.
File domains store the text in ``dom_md/metadata``; LVM domains store the same lines as VG
tags (see :mod:`actors.storage.sd.lvmtags`).

Volume metadata is a small JSON object (file domains: ``<volUUID>.meta``) or LV tags (LVM).
The decoders raise ValueError on anything malformed; the backends turn it into a storage error
that names the domain or volume.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from actors.storage.sd.records import (
    BLANK_UUID,
    Allocation,
    Legality,
    VolumeFormat,
    VolumeRole,
    check_uuid,
)
from actors.storage.sd.stamp import current_lver
from messaging.errors import InvalidParams

KEY_RE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
CHECKSUM = "CHECKSUM"
GENERATION = "GENERATION"
CORE_KEYS = ("SDUUID", "NAME", "TYPE", "CLASS", "VERSION", "POOL_UUID", "ROLE", GENERATION)
READ_ONLY_KEYS = frozenset(("SDUUID", "TYPE", GENERATION, CHECKSUM))
MAX_TEXT = 4096


@dataclass(frozen=True)
class DomainMetadata:
    sd_uuid: str
    name: str
    domain_type: str
    domain_class: str
    version: int
    generation: int = 0
    pool_uuid: str = ""
    role: str = "Regular"
    extra: tuple[tuple[str, str], ...] = ()
    """Keys this code does not interpret (a newer writer's, or a pool's), kept as they are."""

    def fields(self) -> dict[str, str]:
        values = dict(self.extra)
        values.update({
            "SDUUID": self.sd_uuid, "NAME": self.name, "TYPE": self.domain_type,
            "CLASS": self.domain_class, "VERSION": str(self.version),
            "POOL_UUID": self.pool_uuid, "ROLE": self.role, GENERATION: str(self.generation),
        })
        return values

    def get(self, key: str, default: str = "") -> str:
        return self.fields().get(key, default)

    def updated(self, changes: Mapping[str, str]) -> DomainMetadata:
        """A copy with ``changes`` applied and the generation bumped."""
        for key, value in changes.items():
            if key in READ_ONLY_KEYS:
                raise ValueError(f"metadata key {key} cannot be changed")
            _check_pair(key, value)
        values = self.fields()
        values.update(changes)
        values[GENERATION] = str(self.generation + 1)
        return from_fields(values)

    def to_wire(self) -> dict[str, Any]:
        """``StorageDomain.getInfo`` fields that come from the metadata."""
        return {"uuid": self.sd_uuid, "name": self.name, "type": self.domain_type,
                "class": self.domain_class, "version": self.version,
                "pool": [self.pool_uuid] if self.pool_uuid else [], "role": self.role,
                "generation": self.generation}


def _check_pair(key: str, value: str) -> None:
    if KEY_RE.fullmatch(key) is None:
        raise ValueError(f"invalid metadata key {key[:64]!r}")
    if any(c in value for c in "\n\r\0"):
        raise ValueError(f"metadata value of {key} must be one line")


def from_fields(values: Mapping[str, str]) -> DomainMetadata:
    try:
        return DomainMetadata(
            sd_uuid=check_uuid(values["SDUUID"], "SDUUID"),
            name=values["NAME"], domain_type=values["TYPE"], domain_class=values["CLASS"],
            version=int(values["VERSION"]), generation=int(values[GENERATION]),
            pool_uuid=values.get("POOL_UUID", ""), role=values.get("ROLE", "Regular"),
            extra=tuple(sorted((k, v) for k, v in values.items() if k not in CORE_KEYS)),
        )
    except (KeyError, ValueError, InvalidParams) as e:
        raise ValueError(f"domain metadata: {e}") from None


def checksum(lines: Iterable[str]) -> str:
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()


def encode_lines(meta: DomainMetadata) -> list[str]:
    """Sorted ``KEY=value`` lines, the checksum line last."""
    lines = []
    for key, value in sorted(meta.fields().items()):
        _check_pair(key, value)
        lines.append(f"{key}={value}")
    return [*lines, f"{CHECKSUM}={checksum(lines)}"]


def decode_lines(lines: Iterable[str]) -> DomainMetadata:
    """Parse and verify; :class:`ValueError` on a bad line or checksum."""
    body: list[str] = []
    found_sum = None
    for line in lines:
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or KEY_RE.fullmatch(key) is None:
            raise ValueError(f"bad metadata line {line[:64]!r}")
        if key == CHECKSUM:
            found_sum = value
        else:
            body.append(line)
    body.sort()
    if found_sum is None:
        raise ValueError("metadata has no checksum")
    if found_sum != checksum(body):
        raise ValueError("metadata checksum mismatch")
    return from_fields(dict(line.partition("=")[::2] for line in body))


def encode_text(meta: DomainMetadata) -> bytes:
    text = "".join(f"{line}\n" for line in encode_lines(meta)).encode()
    if len(text) > MAX_TEXT:
        raise ValueError(f"domain metadata is {len(text)} bytes, more than {MAX_TEXT}")
    return text


def decode_text(data: bytes) -> DomainMetadata:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ValueError("metadata is not UTF-8 text") from None
    return decode_lines(text.split("\n"))


@dataclass(frozen=True)
class VolumeMetadata:
    img_uuid: str
    format: VolumeFormat
    allocation: Allocation
    capacity: int
    legality: Legality = Legality.ILLEGAL
    role: VolumeRole = VolumeRole.LEAF
    parent_img: str = BLANK_UUID
    parent_vol: str = BLANK_UUID
    description: str = ""
    ctime: int = 0
    lver: int = 0
    """The SPM lease version of the write that last changed it (0: none recorded)."""

    @classmethod
    def new(cls, *, img_uuid: str, format: VolumeFormat, allocation: Allocation,
            capacity: int, parent_img: str | None, parent_vol: str | None,
            description: str) -> VolumeMetadata:
        """The metadata of a volume being created: ILLEGAL until its data is complete."""
        return cls(img_uuid=img_uuid, format=format, allocation=allocation, capacity=capacity,
                   parent_img=parent_img or BLANK_UUID, parent_vol=parent_vol or BLANK_UUID,
                   description=description, ctime=int(time.time()),
                   lver=current_lver() or 0)

    @property
    def has_parent(self) -> bool:
        return self.parent_vol != BLANK_UUID

    def with_legality(self, legality: Legality) -> VolumeMetadata:
        return replace(self, legality=legality, lver=self._stamp())

    def with_role(self, role: VolumeRole) -> VolumeMetadata:
        return replace(self, role=role, lver=self._stamp())

    def _stamp(self) -> int:
        """The lease version a change made now carries (see :mod:`actors.storage.sd.stamp`)."""
        lver = current_lver()
        return self.lver if lver is None else lver

    def to_json(self) -> dict[str, Any]:
        return {"image": self.img_uuid, "format": self.format.value,
                "type": self.allocation.value, "capacity": self.capacity,
                "legality": self.legality.value, "voltype": self.role.value,
                "parent_image": self.parent_img, "parent": self.parent_vol,
                "description": self.description, "ctime": self.ctime, "lver": self.lver}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VolumeMetadata:
        try:
            return cls(
                img_uuid=check_uuid(data["image"], "image"),
                format=VolumeFormat(data["format"]), allocation=Allocation(data["type"]),
                capacity=int(data["capacity"]), legality=Legality(data["legality"]),
                role=VolumeRole(data["voltype"]),
                parent_img=check_uuid(data["parent_image"], "parent_image"),
                parent_vol=check_uuid(data["parent"], "parent"),
                description=str(data.get("description", "")), ctime=int(data.get("ctime", 0)),
                lver=int(data.get("lver", 0)),
            )
        except (KeyError, TypeError, ValueError, InvalidParams) as e:
            raise ValueError(f"volume metadata: {e!r}") from None

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> VolumeMetadata:
        try:
            loaded = json.loads(data)
        except ValueError as e:
            raise ValueError(f"volume metadata is not JSON: {e}") from None
        if not isinstance(loaded, dict):
            raise ValueError("volume metadata is not a JSON object")
        return cls.from_json(loaded)
