"""A resource lease (the SPM lease) decided by Disk Paxos, as sanlock applies it.

Who owns lver ``N`` is the value Disk Paxos chose for instance ``N``
(:mod:`actors.storage.lease.ballot`). The leader record is that owner's own note of it: it
writes HELD right after its value was chosen and RELEASED when it lets go, and nobody else
ever writes it. To acquire, a host reads the leader: held by a (host id, generation) that
the ids area does not prove dead means LeaseHeld. Otherwise it runs a ballot for instance
``lver + 1``. If another value was chosen there (a contender that won, or one that died
before writing the leader), that value owns ``lver + 1``: it is judged the same way, and
once dead the ballot moves on to ``lver + 2``.

Safety rests on Paxos, not on timing: a contender stalled anywhere for any time (between
its check and its writes, between the phases) never makes a second owner of an lver, and
an lver is acquired only after the previous owner was proven dead or released it. A
non-owner never writes the leader, because such a write can land late, over the owner's
RELEASED, and bring a released lease back to life. The lver is the fencing token.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from actors.storage.lease import ballot
from actors.storage.lease.ballot import Hook, Owner
from actors.storage.lease.errors import ChecksumError, LeaseContended, LeaseExpired, LeaseHeld
from actors.storage.lease.observer import Liveness
from actors.storage.lease.records import MAX_HOSTS, LeaderRecord, LeaderState, encode_name
from actors.storage.lease.sectorfile import SectorFile
from actors.storage.lease.timedio import Clock
from actors.storage.lease.timing import LeaseTiming
from messaging.errors import StorageError

MAX_BALLOTS = 20
"""Ballots overtaken in a row before acquire gives up (LeaseContended)."""


def area_size(sector_size: int) -> int:
    """Bytes one resource's area takes: leader + MAX_HOSTS blocks, rounded to 1 MiB."""
    return -(-(1 + MAX_HOSTS) * sector_size // (1 << 20)) * (1 << 20)


class LivenessSource(Protocol):
    def liveness(self, host_id: int, generation: int) -> Liveness: ...

    def poll(self) -> None: ...


class PaxosLease:
    """Resource ``resource`` in the area at ``offset`` of ``path``, for (host_id, generation).

    Every host contending for a resource must use the same ``hosts`` (ballot blocks read),
    not below the highest host id that contends. A new host-lease generation needs a new
    PaxosLease. ``host_deadline`` gives this host's lease deadline (the DeltaLease's):
    no leader is written, and no lver returned, once it has passed. ``hook`` is for tests:
    called with "checked" (after the leader check), "phase1" (between the Paxos phases)
    and "committed" (before the leader write).
    """

    def __init__(self, path: str | Path, resource: str, host_id: int, generation: int,
                 timing: LeaseTiming, *, sector_size: int, offset: int = 0,
                 hosts: int = MAX_HOSTS, clock: Clock = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, hook: Hook | None = None,
                 host_deadline: Callable[[], float] | None = None) -> None:
        encode_name(resource, "resource")
        if not 1 <= host_id <= hosts <= MAX_HOSTS:
            raise ValueError(f"host id {host_id} is not in 1..hosts ({hosts}) <= {MAX_HOSTS}")
        if generation < 1:
            raise ValueError("a host-lease generation starts at 1")
        self.resource = resource
        self.me: Owner = (host_id, generation)
        self.timing = timing
        self.clock = clock
        self.sleep = sleep
        self.hook = hook
        self.name = f"{path}@{offset}#{resource}"
        file = SectorFile(path, sector_size=sector_size, span=(1 + hosts) * sector_size,
                          io_timeout=timing.io_timeout, clock=clock, write=True, name=self.name)
        self._area = ballot.Area(file, offset=offset, hosts=hosts, name=self.name)
        self.host_deadline = host_deadline
        self.lver: int | None = None
        """The lver we own (None when we own none)."""
        self._released = 0
        """The highest lver we released: never adopted again."""

    def read_owner(self) -> LeaderRecord | None:
        """The leader record (None if never written)."""
        return self._area.read()[0]

    def acquire(self, observer: LivenessSource, *, wait: float = 0.0,
                poll_interval: float | None = None) -> int:
        """Own the resource; return the lver. While another live owner holds it, keep
        polling ``observer`` for up to ``wait`` seconds, then raise LeaseHeld. If this raises
        after our value was chosen (the leader write failed), :attr:`lver` is set: the lver
        is ours all the same; release() it or acquire() again."""
        poll = poll_interval or min(self.timing.renew_interval, self.timing.io_timeout) / 2
        give_up = self.clock() + wait
        overtaken = 0
        decided: tuple[int, Owner] | None = None
        while True:
            leader, blocks = self._area.read()
            if leader is not None and leader.resource != self.resource:
                raise ChecksumError(lease=self.name, sector=0, kind="leader",
                                    reason=f"it is the leader of {leader.resource!r}")
            lver, owner, held = (0, (0, 0), False) if leader is None else (
                leader.lver, leader.owner, leader.state is LeaderState.HELD)
            if decided is not None and decided[0] > lver:
                lver, owner, held = decided[0], decided[1], True  # its owner did not write it
            if held and owner == self.me and lver > self._released:
                self._check_host()  # our leader write that timed out, and landed
                self.lver = lver
                return lver
            if held and owner != self.me and observer.liveness(*owner) is not Liveness.DEAD:
                if self.clock() >= give_up:
                    raise LeaseHeld(lease=self.name, host_id=owner[0], generation=owner[1],
                                    lver=lver)
                self._poll(observer, poll)
                continue
            self._stage("checked")
            try:
                chosen = ballot.run(self._area, instance=lver + 1, host_id=self.me[0],
                                    value=self.me, blocks=blocks, hook=self.hook)
            except ballot.Overtaken:
                overtaken += 1
                if overtaken >= MAX_BALLOTS and self.clock() >= give_up:
                    raise LeaseContended(lease=self.name, attempts=overtaken) from None
                self.sleep(random.uniform(0, min(self.timing.io_timeout, 0.005 * overtaken)))  # noqa: S311
                continue
            if chosen != self.me:
                decided = (lver + 1, chosen)  # another owner: judge it on the next turn
                continue
            self._stage("committed")
            self._check_host()
            self.lver = lver + 1
            counter = leader.counter + 1 if leader is not None else 1
            self._area.write_leader(self._leader(lver + 1, self.me, LeaderState.HELD, counter))
            return lver + 1

    def _check_host(self) -> None:
        if self.host_deadline is not None and self.clock() >= self.host_deadline():
            self.lver = None
            raise LeaseExpired(lease=self.name, reason="this host's lease expired meanwhile")

    def _poll(self, observer: LivenessSource, interval: float) -> None:
        self.sleep(interval)
        try:
            observer.poll()
        except StorageError:
            pass  # a failed poll tells nothing: the holder is not proven dead

    def _stage(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)

    def _leader(self, lver: int, owner: Owner, state: LeaderState,
                counter: int) -> LeaderRecord:
        return LeaderRecord(resource=self.resource, lver=lver, owner_id=owner[0],
                            owner_generation=owner[1], state=state, counter=counter,
                            stamp_ns=int(self.clock() * 1e9))

    def release(self) -> bool:
        """Mark our lver RELEASED (stop every writer first: others may take it at once).
        Writes only while the leader shows our lver (or an older one: a lost leader write);
        False when it wrote nothing."""
        lver, self.lver = self.lver, None
        if lver is None:
            return False
        self._released = max(self._released, lver)
        leader = self._area.read()[0]
        if leader is not None and (leader.lver > lver or (
                leader.lver == lver and (leader.owner != self.me
                                         or leader.state is not LeaderState.HELD))):
            return False
        counter = leader.counter + 1 if leader is not None else 1
        if self.host_deadline is not None and self.clock() >= self.host_deadline():
            return False  # another host may own a newer lver already: never write over it
        self._area.write_leader(self._leader(lver, self.me, LeaderState.RELEASED, counter))
        return True

    def close(self) -> None:
        self._area.file.close()
