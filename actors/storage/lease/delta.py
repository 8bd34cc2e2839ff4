"""A host's delta lease: its host id in a domain's ``ids`` area, renewed by rewriting it.

Other hosts judge the holder alive only by its record changing, timed on their own clocks
(:mod:`actors.storage.lease.observer`). The holder's validity is ``issue time of its last
successful write + lease``; a write counts only if it completed within io_timeout and
before the validity it extends had ended. Once lost (expired, or the slot was taken), the
lease is gone for good: :meth:`DeltaLease.acquire` again gets a new generation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from actors.storage.lease.errors import ChecksumError, HostIdInUse, LeaseExpired
from actors.storage.lease.observer import silence_bound
from actors.storage.lease.records import MAX_HOSTS, HostFlags, HostRecord, encode_name
from actors.storage.lease.sectorfile import SectorFile
from actors.storage.lease.timedio import Clock, Timed
from actors.storage.lease.timing import LeaseTiming


class DeltaLease:
    """Host id ``host_id`` (1..2000) of the ``ids`` area at ``path``, for ``owner``."""

    def __init__(self, path: str | Path, host_id: int, owner: str, timing: LeaseTiming, *,
                 sector_size: int, clock: Clock = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 1 <= host_id <= MAX_HOSTS:
            raise ValueError(f"host id {host_id} is not in 1..{MAX_HOSTS}")
        encode_name(owner, "owner")
        self.host_id = host_id
        self.owner = owner
        self.timing = timing
        self.clock = clock
        self.sleep = sleep
        self.name = f"{path}#host{host_id}"
        self._file = SectorFile(path, sector_size=sector_size, span=sector_size,
                                io_timeout=timing.io_timeout, clock=clock, write=True,
                                name=self.name)
        self._offset = (host_id - 1) * sector_size
        self.generation = 0
        self.counter = 0
        self.deadline = 0.0
        """Until when (on ``clock``) the lease is valid; meaningful while :attr:`held`."""
        self._held = False
        self._written = b""
        """The sector this lease wrote last (whether or not the write landed)."""

    @property
    def held(self) -> bool:
        return self._held and self.clock() < self.deadline

    def _read(self) -> Timed[bytes]:
        return self._file.read(self._offset, self._file.sector_size)

    def _write(self, flags: HostFlags) -> Timed[None]:
        record = HostRecord(
            host_id=self.host_id, generation=self.generation, counter=self.counter, flags=flags,
            owner=self.owner, stamp_ns=int(self.clock() * 1e9),
            lease_ms=math.ceil(self.timing.lease * 1000),
            io_timeout_ms=math.ceil(self.timing.io_timeout * 1000))
        self._written = record.encode(self._file.sector_size)
        return self._file.write(self._offset, self._written)

    def _decode(self, raw: bytes) -> HostRecord | None:
        return HostRecord.decode(raw, where=self.name, index=self.host_id - 1)

    def _in_use(self, raw: bytes) -> HostIdInUse:
        try:
            record = self._decode(raw)
        except ChecksumError:
            record = None
        owner = record.owner if record is not None else "an unreadable record"
        return HostIdInUse(lease=self.name, host_id=self.host_id, owner=owner)

    def acquire(self, *, previous_dead: bool = False) -> float:
        """Take the host id; return the validity deadline (at once if still held).

        ``previous_dead``: the caller knows that every earlier incarnation of this owner on
        this host is dead (the keeper checked its predecessor's pid file and killed it): a
        record with our owner name is then claimed without watching it.

        A free or released slot (or our own record, once our deadline has passed) is claimed
        with a new generation, read back after ``settle`` (2 x io_timeout) and is ours if the
        claim is still there. Any other record (also one with our owner name: an earlier
        incarnation may still run) is first watched until it has stayed the same for longer
        than a live holder can go without a renewal (HostIdInUse as soon as it changes)."""
        if self.held:
            return self.deadline
        first = self._read()
        try:
            record = self._decode(first.value)
        except ChecksumError:
            record = None  # garbage: watched like a live record, never trusted
        ours = (first.value == self._written and self.clock() >= self.deadline) or (
            previous_dead and record is not None and record.owner == self.owner)
        if not ours and first.value.count(b"\0") != len(first.value) and (
                record is None or record.flags is not HostFlags.RELEASED):
            self._watch(first, record)
        self._held = False
        self.generation = (record.generation if record is not None else 0) + 1
        self.counter = 0
        claim = self._write(HostFlags.LIVE)
        self.sleep(self.timing.settle)
        check = self._read()
        if check.value != self._written:
            raise self._in_use(check.value)
        deadline = claim.issued + self.timing.lease
        if check.completed >= deadline:
            raise LeaseExpired(lease=self.name, reason="acquiring took longer than the lease")
        self.deadline = deadline
        self._held = True
        return deadline

    def _watch(self, first: Timed[bytes], record: HostRecord | None) -> None:
        bound = silence_bound(self.timing, record)
        step = min(self.timing.renew_interval, self.timing.io_timeout)
        while True:
            wait = first.completed + bound - self.clock()
            self.sleep(min(step, max(wait, 0.0)) + 0.001)
            now = self._read()
            if now.value != first.value:
                raise self._in_use(now.value)
            if now.issued - first.completed > bound:
                return

    def renew(self) -> float:
        """Rewrite the record with counter + 1; return the new deadline. An I/O error or
        timeout leaves the deadline as it was (try again); LeaseExpired if the deadline passed
        before a renewal landed, HostIdInUse if the slot was taken: both lose the lease."""
        if not self._held:
            raise LeaseExpired(lease=self.name, reason="not held")
        if self.clock() >= self.deadline:
            self._held = False
            raise LeaseExpired(lease=self.name, reason="no renewal landed before the deadline")
        current = self._read()
        try:
            found = self._decode(current.value)
        except ChecksumError:
            found = None
        if found is None or found.flags is not HostFlags.LIVE or _identity(found) != (
                self.host_id, self.generation, self.owner):
            self._held = False
            raise self._in_use(current.value)
        self.counter += 1
        done = self._write(HostFlags.LIVE)
        if done.completed >= self.deadline:
            self._held = False
            raise LeaseExpired(lease=self.name, reason="the renewal landed after the deadline")
        self.deadline = max(self.deadline, done.issued + self.timing.lease)
        return self.deadline

    def release(self) -> bool:
        """Mark the record RELEASED (other hosts may count this generation dead at once: stop
        every writer first). False if the lease was no longer held (nothing written)."""
        if not self.held:
            self._held = False
            return False
        self._held = False
        self.counter += 1
        self._write(HostFlags.RELEASED)
        return True

    def close(self) -> None:
        self._file.close()


def _identity(record: HostRecord) -> tuple[int, int, str]:
    return (record.host_id, record.generation, record.owner)
