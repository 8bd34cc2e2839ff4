"""Other hosts' liveness, judged only by whether their ``ids`` records change.

:meth:`IdsObserver.poll` reads the first ``hosts`` sectors of the ids area in one O_DIRECT
read. For each slot it keeps the bytes last seen and the completion time of the first read
that returned them; for the area, the issue time of the latest successful read. A host
generation is DEAD when its slot shows a newer generation or RELEASED, or when the latest
read (issued at ``T``) still shows the bytes first returned by a read that completed at
``c`` with ``T - c > lease + io_timeout`` (:attr:`LeaseTiming.dead_after_seen` derives why
that is safe; it is the lead's ``lease + 2 x io_timeout`` counted from the first read's
issue, made tighter by counting from its completion). A failed or timed-out read tells
nothing: it never makes anything DEAD, and the answer is UNKNOWN until a read succeeds.
A generation once DEAD stays DEAD: a holder that lost its lease never renews it again.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from actors.storage.lease.errors import ChecksumError
from actors.storage.lease.records import MAX_HOSTS, HostFlags, HostRecord
from actors.storage.lease.sectorfile import SectorFile
from actors.storage.lease.timedio import Clock
from actors.storage.lease.timing import LeaseTiming


class Liveness(enum.Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


def silence_bound(timing: LeaseTiming, record: HostRecord | None) -> float:
    """How long a slot must stay the same, from the completion of the first read showing it,
    before its holder is dead: ours, or the holder's own (written in its record) if longer."""
    bound = timing.dead_after_seen
    if record is not None:
        bound = max(bound, (record.lease_ms + record.io_timeout_ms) / 1000)
    return bound


@dataclass(frozen=True)
class Slot:
    raw: bytes
    record: HostRecord | None
    """None when the slot was never written or holds garbage (see ``garbage``)."""
    garbage: bool
    first_seen: float
    """Completion time of the first read that returned ``raw``."""


class IdsObserver:
    """Watches host ids 1..``hosts`` of the ids area at ``path``. Thread-safe."""

    def __init__(self, path: str | Path, timing: LeaseTiming, *, sector_size: int,
                 hosts: int = MAX_HOSTS, clock: Clock = time.monotonic) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts {hosts} is not in 1..{MAX_HOSTS}")
        self.timing = timing
        self.hosts = hosts
        self.sector_size = sector_size
        self.name = f"{path}#ids"
        self._file = SectorFile(path, sector_size=sector_size, span=hosts * sector_size,
                                io_timeout=timing.io_timeout, clock=clock, name=self.name)
        self._lock = threading.Lock()
        self._raw: bytes | None = None
        self._slots: list[Slot] = []
        self._latest: float | None = None
        self._failed = False
        self.polls = 0
        self.failures = 0

    @property
    def latest_read(self) -> float | None:
        """Issue time of the latest successful read (None before the first)."""
        with self._lock:
            return self._latest

    def poll(self) -> None:
        """Read the area once; raises IoTimeout, IoBusy or IoFailed (then nothing is learnt)."""
        try:
            got = self._file.read(0, self.hosts * self.sector_size)
        except Exception:
            with self._lock:
                self._failed = True
                self.failures += 1
            raise
        with self._lock:
            self.polls += 1
            self._failed = False
            if self._latest is not None and got.issued < self._latest:
                return  # a slower caller's older read: it tells nothing new
            self._latest = got.issued
            if got.value == self._raw:
                return
            size = self.sector_size
            for i in range(self.hosts):
                raw = got.value[i * size:(i + 1) * size]
                if self._raw is not None and raw == self._raw[i * size:(i + 1) * size]:
                    continue
                slot = self._decode(raw, i, got.completed)
                if i < len(self._slots):
                    self._slots[i] = slot
                else:
                    self._slots.append(slot)
            self._raw = got.value

    def _decode(self, raw: bytes, index: int, seen: float) -> Slot:
        try:
            record = HostRecord.decode(raw, where=self.name, index=index)
        except ChecksumError:
            return Slot(raw, None, True, seen)
        return Slot(raw, record, False, seen)

    def slot(self, host_id: int) -> Slot | None:
        """What slot ``host_id`` showed at the latest successful read (None before one)."""
        with self._lock:
            return self._slots[host_id - 1] if self._slots else None

    def liveness(self, host_id: int, generation: int) -> Liveness:
        if not 1 <= host_id <= self.hosts:
            raise ValueError(f"host id {host_id} is not watched (1..{self.hosts})")
        with self._lock:
            if self._latest is None:
                return Liveness.UNKNOWN
            slot = self._slots[host_id - 1]
            record = slot.record
            if record is not None and record.host_id == host_id and (
                    record.generation > generation or (
                        record.generation == generation
                        and record.flags is HostFlags.RELEASED)):
                return Liveness.DEAD
            if self._latest - slot.first_seen > silence_bound(self.timing, record):
                return Liveness.DEAD
            if self._failed or record is None or record.host_id != host_id or (
                    record.generation != generation):
                return Liveness.UNKNOWN
            return Liveness.ALIVE

    def close(self) -> None:
        self._file.close()
