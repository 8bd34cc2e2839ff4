"""The fence file: what the keeper tells the writer about the lease, through shared memory.

A small file in the run dir, mapped by the keeper (read-write) and by the writer (read-only).
It holds the lease's state, its lver and the instant (``CLOCK_MONOTONIC``, which every
process of one host shares) after which nothing may be written. The keeper rewrites it after
every renewal; the writer reads it before every metadata write. It is a seqlock: the keeper
makes ``seq`` odd while it writes, and a reader retries until it reads an even, unchanged
``seq`` around its copy, so it never acts on a half-written record.

Layout (little endian, 64 bytes)::

    0  u32 magic      "FNC1"
    4  u32 state      0 none, 1 SPM, 2 fenced
    8  u64 seq        even when stable
   16  u64 lver       the SPM lease version this host holds (0: none)
   24  i64 deadline   CLOCK_MONOTONIC nanoseconds; writes must start before it
   32  u32 host_id
   36  u32 writer_pid
   40  24 bytes reserved
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0x31434E46  # b"FNC1" little endian
SIZE = 64
_FMT = struct.Struct("<IIQQqIIq")
NONE, SPM, FENCED = 0, 1, 2
STATE_NAMES = {NONE: "none", SPM: "SPM", FENCED: "fenced"}
_READ_ATTEMPTS = 100_000


class FenceError(RuntimeError):
    """The fence file is missing, foreign or could not be read consistently."""


@dataclass(frozen=True)
class Fence:
    state: int
    lver: int
    deadline_ns: int
    host_id: int
    writer_pid: int
    expiry_ns: int = 0

    def remaining(self, now_ns: int | None = None) -> float:
        """Seconds left before the deadline (negative once it passed)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return (self.deadline_ns - now) / 1e9

    def allows(self, lver: int, now_ns: int | None = None) -> bool:
        """Whether a writer of lease version ``lver`` may start a write now."""
        return self.state == SPM and self.lver == lver and self.remaining(now_ns) > 0

    def to_wire(self) -> dict[str, object]:
        return {"state": STATE_NAMES.get(self.state, str(self.state)), "lver": self.lver,
                "remaining": round(self.remaining(), 3), "hostID": self.host_id,
                "writerPid": self.writer_pid}


class FenceWriter:
    """The keeper's side: creates the file (mode 0600) and publishes new fences."""

    def __init__(self, path: Path, host_id: int) -> None:
        self.path = path
        self.host_id = host_id
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, SIZE)
            self._map = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        # Continue the sequence of an earlier keeper's file: a reader mapped across the
        # change must never see the same even seq around two different records.
        magic, _state, seq = struct.unpack_from("<IIQ", self._map, 0)
        self._seq = (seq + 1) & ~1 if magic == MAGIC else 0
        self.publish(NONE, 0, 0, 0)

    def publish(self, state: int, lver: int, deadline_ns: int, writer_pid: int,
                expiry_ns: int = 0) -> None:
        # The record is built apart and copied in around the seq word: struct.pack_into
        # zeroes its target before filling it, which a reader must never see as stable.
        record = _FMT.pack(MAGIC, state, 0, lver, deadline_ns, self.host_id, writer_pid,
                           expiry_ns)
        self._seq += 1  # odd: readers retry
        self._map[8:16] = self._seq.to_bytes(8, "little")
        self._map[0:8] = record[0:8]
        self._map[16:_FMT.size] = record[16:]
        self._seq += 1
        self._map[8:16] = self._seq.to_bytes(8, "little")

    def close(self) -> None:
        self._map.close()


class FenceReader:
    """The writer's side: a consistent copy of the current fence, from any thread."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            self._map = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)

    def read(self) -> Fence:
        for attempt in range(_READ_ATTEMPTS):
            if attempt and attempt % 64 == 0:
                os.sched_yield()  # let a writer that was descheduled mid-publish finish
            before = struct.unpack_from("<Q", self._map, 8)[0]
            if before & 1:
                continue
            magic, state, seq, lver, deadline, host_id, pid, expiry = _FMT.unpack_from(
                self._map, 0)
            after = struct.unpack_from("<Q", self._map, 8)[0]
            if before == after == seq:
                if magic != MAGIC:
                    raise FenceError("the fence file has a foreign magic number")
                return Fence(state, lver, deadline, host_id, pid, expiry)
        raise FenceError("the fence file kept changing while it was read")

    def close(self) -> None:
        self._map.close()
