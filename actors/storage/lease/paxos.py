"""A resource lease (the SPM lease) decided by Disk Paxos, as sanlock applies it.

The leader record says who owns the resource at which lver; it is only ever written with a
value Disk Paxos chose for that lver (:mod:`actors.storage.lease.ballot`). To acquire, a
host reads the leader: held by a (host id, generation) that the ids area does not prove dead
(and that did not release it) means LeaseHeld. Otherwise it runs a ballot for instance
``lver + 1``; the value chosen owns that lver, and the leader is written with it. If the
value is another host's (a contender that won, or one whose leader write was lost and that
we repaired), we look again. Safety rests on Paxos, not on timing: a contender stalled for
any time anywhere (between its check and its writes, between the phases) never produces a
second owner of an lver, and an lver is acquired only after the previous one's owner was
proven dead or released it. The lver is the fencing token.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from actors.storage.lease import ballot
from actors.storage.lease.ballot import Hook, Owner
from actors.storage.lease.errors import ChecksumError, LeaseContended, LeaseHeld
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
    PaxosLease. ``hook`` is for tests: called with "checked" (after the leader check),
    "phase1" (between the Paxos phases) and "committed" (before the leader write).
    """

    def __init__(self, path: str | Path, resource: str, host_id: int, generation: int,
                 timing: LeaseTiming, *, sector_size: int, offset: int = 0,
                 hosts: int = MAX_HOSTS, clock: Clock = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, hook: Hook | None = None) -> None:
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
        self.lver: int | None = None
        """The lver we own (None when we own none)."""

    def read_owner(self) -> LeaderRecord | None:
        """The leader record (None if never written)."""
        return self._area.read()[0]

    def acquire(self, observer: LivenessSource, *, wait: float = 0.0,
                poll_interval: float | None = None) -> int:
        """Own the resource; return the lver. While another live owner holds it, keep
        polling ``observer`` for up to ``wait`` seconds, then raise LeaseHeld."""
        poll = poll_interval or min(self.timing.renew_interval, self.timing.io_timeout) / 2
        give_up = self.clock() + wait
        overtaken = 0
        while True:
            leader, blocks = self._area.read()
            if leader is not None and leader.resource != self.resource:
                raise ChecksumError(lease=self.name, sector=0, kind="leader",
                                    reason=f"it is the leader of {leader.resource!r}")
            if leader is not None and leader.state is LeaderState.HELD:
                if leader.owner == self.me:
                    self.lver = leader.lver
                    return leader.lver
                if observer.liveness(*leader.owner) is not Liveness.DEAD:
                    if self.clock() >= give_up:
                        raise LeaseHeld(lease=self.name, host_id=leader.owner_id,
                                        generation=leader.owner_generation, lver=leader.lver)
                    self._poll(observer, poll)
                    continue
            self._stage("checked")
            instance = (leader.lver if leader is not None else 0) + 1
            try:
                value = ballot.run(self._area, instance=instance, host_id=self.me[0],
                                   value=self.me, blocks=blocks, hook=self.hook)
            except ballot.Overtaken:
                overtaken += 1
                if overtaken >= MAX_BALLOTS and self.clock() >= give_up:
                    raise LeaseContended(lease=self.name, attempts=overtaken) from None
                self.sleep(random.uniform(0, min(self.timing.io_timeout, 0.005 * overtaken)))  # noqa: S311
                continue
            self._stage("committed")
            counter = leader.counter + 1 if leader is not None else 1
            self._area.write_leader(self._leader(instance, value, LeaderState.HELD, counter))
            if value == self.me:
                self.lver = instance
                return instance

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
        leader = self._area.read()[0]
        if leader is not None and (leader.lver > lver or (
                leader.lver == lver and (leader.owner != self.me
                                         or leader.state is not LeaderState.HELD))):
            return False
        counter = leader.counter + 1 if leader is not None else 1
        self._area.write_leader(self._leader(lver, self.me, LeaderState.RELEASED, counter))
        return True

    def close(self) -> None:
        self._area.file.close()
