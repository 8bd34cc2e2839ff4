"""The three on-disk records, each within one sector (see docs/storage-leases.md).

Every record starts with a 16-byte header: a magic naming its kind, a format version, the
sector size it was written for and a CRC32 over the whole sector except the CRC field
itself (so garbage after the record's fields is caught too). An all-zero sector means "never
written" (``decode`` returns None); anything else that does not check out raises
:class:`~actors.storage.lease.errors.ChecksumError` and is never trusted.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from actors.storage.lease.errors import ChecksumError

VERSION = 1
SECTOR_SIZES = (512, 4096)
MAX_HOSTS = 2000
NAME_SIZE = 48
_HEADER = struct.Struct("<4sHHII")  # magic, version, reserved, sector_size, crc32
_CRC_AT = 12


def _name(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def encode_name(name: str, what: str) -> bytes:
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raw = b""
    if not raw or len(raw) > NAME_SIZE or b"\0" in raw:
        raise ValueError(f"{what} {name!r} must be 1-{NAME_SIZE} bytes of UTF-8 without NUL")
    return raw


class HostFlags(enum.IntEnum):
    LIVE = 1
    RELEASED = 2


class LeaderState(enum.IntEnum):
    FREE = 0
    HELD = 1
    RELEASED = 2


@dataclass(frozen=True)
class _Record:
    MAGIC: ClassVar[bytes]
    KIND: ClassVar[str]
    BODY: ClassVar[struct.Struct]

    def _fields(self) -> tuple[object, ...]:
        raise NotImplementedError

    def encode(self, sector_size: int) -> bytes:
        if sector_size not in SECTOR_SIZES:
            raise ValueError(f"sector size {sector_size} is not one of {SECTOR_SIZES}")
        body = self.BODY.pack(*self._fields())
        head = _HEADER.pack(self.MAGIC, VERSION, 0, sector_size, 0)
        sector = bytearray(sector_size)
        sector[: len(head)] = head
        sector[len(head): len(head) + len(body)] = body
        struct.pack_into("<I", sector, _CRC_AT, _crc(sector))
        return bytes(sector)

    @classmethod
    def decode(cls, sector: bytes, *, where: str = "", index: int = 0) -> Self | None:
        """The record in ``sector`` (exactly one sector); None if it was never written."""
        size = len(sector)
        if sector.count(b"\0") == size:
            return None

        def bad(reason: str) -> ChecksumError:
            return ChecksumError(lease=where, sector=index, kind=cls.KIND, reason=reason)

        if size not in SECTOR_SIZES:
            raise ValueError(f"a sector is {SECTOR_SIZES} bytes, not {size}")
        magic, version, _, sector_size, crc = _HEADER.unpack_from(sector)
        if magic != cls.MAGIC:
            raise bad(f"magic {magic!r}, not {cls.MAGIC!r}")
        if crc != _crc(sector):
            raise bad("checksum mismatch (torn or foreign write)")
        if version != VERSION:
            raise bad(f"format version {version}, this host reads {VERSION}")
        if sector_size != size:
            raise bad(f"written for {sector_size}-byte sectors, read as {size}")
        try:
            return cls._from(cls.BODY.unpack_from(sector, _HEADER.size))
        except ValueError as e:  # an unknown enum value, bytes that are not UTF-8
            raise bad(str(e)) from None

    @classmethod
    def _from(cls, values: tuple[Any, ...]) -> Self:
        raise NotImplementedError


def _crc(sector: bytes | bytearray) -> int:
    view = memoryview(sector)
    return zlib.crc32(view[_CRC_AT + 4:], zlib.crc32(view[:_CRC_AT]))


@dataclass(frozen=True)
class HostRecord(_Record):
    """One host's delta lease: sector ``host_id - 1`` of the domain's ``ids`` area."""

    MAGIC = b"VAHR"
    KIND = "host"
    BODY = struct.Struct(f"<IIQQQII{NAME_SIZE}s")

    host_id: int
    generation: int
    counter: int
    flags: HostFlags
    owner: str
    stamp_ns: int
    """The writer's own monotonic clock, ns (informational: never compared across hosts)."""
    lease_ms: int
    io_timeout_ms: int
    """The writer's timing, so that a reader configured with shorter ones waits long enough."""

    def _fields(self) -> tuple[object, ...]:
        return (self.host_id, int(self.flags), self.generation, self.counter,
                self.stamp_ns, self.lease_ms, self.io_timeout_ms,
                encode_name(self.owner, "owner"))

    @classmethod
    def _from(cls, v: tuple[Any, ...]) -> Self:
        host_id, flags, generation, counter, ts, lease_ms, io_ms, owner = v
        return cls(host_id=host_id, generation=generation, counter=counter,
                   flags=HostFlags(flags), owner=_name(owner), stamp_ns=ts,
                   lease_ms=lease_ms, io_timeout_ms=io_ms)


@dataclass(frozen=True)
class LeaderRecord(_Record):
    """The state of one resource lease: sector 0 of its area in the ``leases`` file."""

    MAGIC = b"VALR"
    KIND = "leader"
    BODY = struct.Struct(f"<{NAME_SIZE}sQIIQQQ")

    resource: str
    lver: int
    """The last instance committed: the fencing token of its owner."""
    owner_id: int
    owner_generation: int
    state: LeaderState
    counter: int
    """Bumped by every write of the leader (so that readers can tell writes apart)."""
    stamp_ns: int
    """The writer's own monotonic clock, ns (informational)."""

    @property
    def owner(self) -> tuple[int, int]:
        return (self.owner_id, self.owner_generation)

    def _fields(self) -> tuple[object, ...]:
        return (encode_name(self.resource, "resource"), self.lver, self.owner_id,
                int(self.state), self.owner_generation, self.counter,
                self.stamp_ns)

    @classmethod
    def _from(cls, v: tuple[Any, ...]) -> Self:
        resource, lver, owner_id, state, generation, counter, ts = v
        return cls(resource=_name(resource), lver=lver, owner_id=owner_id,
                   owner_generation=generation, state=LeaderState(state), counter=counter,
                   stamp_ns=ts)


@dataclass(frozen=True)
class DBlock(_Record):
    """One host's Disk Paxos ballot block: sector ``host_id`` of a lease area."""

    MAGIC = b"VADB"
    KIND = "dblock"
    BODY = struct.Struct("<QQQIIQ")

    instance: int
    """The lver being decided; a block of an older instance counts as empty."""
    mbal: int
    """The highest ballot this host has started."""
    bal: int
    """The highest ballot in which this host accepted a value (0: none)."""
    inp_id: int
    inp_generation: int
    """The value accepted in ``bal``: the (host id, generation) proposed as owner."""

    @property
    def inp(self) -> tuple[int, int]:
        return (self.inp_id, self.inp_generation)

    def _fields(self) -> tuple[object, ...]:
        return (self.instance, self.mbal, self.bal, self.inp_id, 0, self.inp_generation)

    @classmethod
    def _from(cls, v: tuple[Any, ...]) -> Self:
        instance, mbal, bal, inp_id, _, inp_generation = v
        return cls(instance=instance, mbal=mbal, bal=bal, inp_id=inp_id,
                   inp_generation=inp_generation)
