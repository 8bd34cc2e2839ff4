"""The on-disk records: round trips, and every kind of bad sector is refused, never trusted."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.storage.lease.errors import ChecksumError
from actors.storage.lease.records import (
    NAME_SIZE,
    DBlock,
    HostFlags,
    HostRecord,
    LeaderRecord,
    LeaderState,
)

HOST = HostRecord(host_id=7, generation=3, counter=41, flags=HostFlags.LIVE,
                  owner="0b1c6c0e-5f7a-4c11-9b7e-2f7d3c1a9e55", stamp_ns=123_456_789,
                  lease_ms=60_000, io_timeout_ms=10_000)
LEADER = LeaderRecord(resource="SPM", lver=12, owner_id=7, owner_generation=3,
                      state=LeaderState.HELD, counter=5, stamp_ns=99)
BLOCK = DBlock(instance=13, mbal=4007, bal=4007, inp_id=7, inp_generation=3)
RECORDS = [HOST, LEADER, BLOCK]


@pytest.mark.parametrize("sector_size", [512, 4096])
@pytest.mark.parametrize("record", RECORDS, ids=["host", "leader", "dblock"])
def test_round_trip_fills_exactly_one_sector(record: HostRecord | LeaderRecord | DBlock,
                                             sector_size: int) -> None:
    raw = record.encode(sector_size)
    assert len(raw) == sector_size
    assert type(record).decode(raw) == record


@pytest.mark.parametrize("kind", [HostRecord, LeaderRecord, DBlock])
@pytest.mark.parametrize("sector_size", [512, 4096])
def test_all_zero_sector_was_never_written(kind: type[HostRecord], sector_size: int) -> None:
    assert kind.decode(bytes(sector_size)) is None


@pytest.mark.parametrize("record", RECORDS, ids=["host", "leader", "dblock"])
def test_every_flipped_byte_is_detected(record: HostRecord | LeaderRecord | DBlock) -> None:
    raw = record.encode(512)
    for i in range(512):
        bad = bytearray(raw)
        bad[i] ^= 0x40
        with pytest.raises(ChecksumError):
            type(record).decode(bytes(bad), where="t", index=3)


def test_torn_write_is_detected_or_is_whole() -> None:
    """A sector torn anywhere (new head, old tail, or the reverse) reads as the old record,
    the new one, or a ChecksumError: never as a mix."""
    before = HOST
    after = HostRecord(**{**HOST.__dict__, "counter": HOST.counter + 1, "generation": 4,
                          "owner": "another-owner", "stamp_ns": 5})
    old, new = before.encode(4096), after.encode(4096)
    mixed = 0
    for cut in range(1, 4096):
        for torn in (new[:cut] + old[cut:], old[:cut] + new[cut:]):
            try:
                got = HostRecord.decode(torn)
            except ChecksumError:
                mixed += 1
                continue
            assert got in (before, after)
    assert mixed > 0


def test_foreign_and_garbage_sectors_are_refused() -> None:
    with pytest.raises(ChecksumError, match="magic"):
        LeaderRecord.decode(HOST.encode(512), where="leases", index=0)
    with pytest.raises(ChecksumError, match="magic"):
        HostRecord.decode(b"\xff" * 512)
    with pytest.raises(ChecksumError, match=r"sector 9 is not a valid dblock"):
        DBlock.decode(b"garbage".ljust(512, b"\0"), where="leases", index=9)


def _recrc(sector: bytearray) -> bytes:
    crc = zlib.crc32(bytes(sector[16:]), zlib.crc32(bytes(sector[:12])))
    struct.pack_into("<I", sector, 12, crc)
    return bytes(sector)


def test_valid_checksum_but_other_version_sector_size_or_enum_is_refused() -> None:
    newer = bytearray(HOST.encode(512))
    struct.pack_into("<H", newer, 4, 2)
    with pytest.raises(ChecksumError, match="version 2"):
        HostRecord.decode(_recrc(newer))
    big = bytearray(HOST.encode(4096))
    struct.pack_into("<I", big, 8, 512)
    with pytest.raises(ChecksumError, match="512-byte sectors"):
        HostRecord.decode(_recrc(big))
    flags = bytearray(HOST.encode(512))
    struct.pack_into("<I", flags, 20, 9)
    with pytest.raises(ChecksumError, match="9 is not a valid HostFlags"):
        HostRecord.decode(_recrc(flags))


def test_names_are_checked_when_encoding() -> None:
    long = HostRecord(**{**HOST.__dict__, "owner": "x" * (NAME_SIZE + 1)})
    with pytest.raises(ValueError, match="owner"):
        long.encode(512)
    with pytest.raises(ValueError, match="resource"):
        LeaderRecord(**{**LEADER.__dict__, "resource": ""}).encode(512)
    with pytest.raises(ValueError, match="sector size"):
        HOST.encode(1024)
    with pytest.raises(ValueError, match="owner '\\\\ud800' must be 1-48 bytes of UTF-8"):
        HostRecord(**{**HOST.__dict__, "owner": "\ud800"}).encode(512)
    full = HostRecord(**{**HOST.__dict__, "owner": "é" * (NAME_SIZE // 2)})
    assert HostRecord.decode(full.encode(512)) == full


@given(generation=st.integers(0, 2**64 - 1), counter=st.integers(0, 2**64 - 1),
       owner=st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
                     min_size=1, max_size=12),
       flags=st.sampled_from(HostFlags))
def test_host_record_round_trips_any_values(generation: int, counter: int, owner: str,
                                            flags: HostFlags) -> None:
    record = HostRecord(host_id=2000, generation=generation, counter=counter, flags=flags,
                        owner=owner, stamp_ns=2**64 - 1, lease_ms=2**32 - 1, io_timeout_ms=1)
    assert HostRecord.decode(record.encode(512)) == record
