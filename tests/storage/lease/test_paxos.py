"""The SPM lease (Disk Paxos) in one process: free, released, dead and live holders, a lost
leader write repaired, and contenders stalled at every hook point (threads here; real
processes and SIGSTOP in test_contention.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from actors.storage.lease import ballot
from actors.storage.lease.delta import DeltaLease
from actors.storage.lease.errors import ChecksumError, LeaseContended, LeaseExpired, LeaseHeld
from actors.storage.lease.observer import IdsObserver
from actors.storage.lease.paxos import PaxosLease, area_size
from actors.storage.lease.records import DBlock, LeaderRecord, LeaderState
from actors.storage.lease.timing import LeaseTiming
from tests.storage.lease.conftest import FakeClock, Store

TIMING = LeaseTiming(lease=60, renew_interval=10, io_timeout=5)
HOSTS = 8


class Host:
    """One host's leases on the store: its host id, an ids observer and the SPM lease."""

    def __init__(self, store: Store, clock: FakeClock, host_id: int,
                 hook: ballot.Hook | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.delta = DeltaLease(store.ids, host_id, f"host-{host_id}", TIMING,
                                sector_size=store.sector_size, clock=clock, sleep=clock.sleep)
        self.delta.acquire()
        self.observer = IdsObserver(store.ids, TIMING, sector_size=store.sector_size,
                                    hosts=HOSTS, clock=clock)
        self.spm = PaxosLease(store.leases, "SPM", host_id, self.delta.generation, TIMING,
                              sector_size=store.sector_size, hosts=HOSTS, clock=clock,
                              sleep=sleep or self.sleep, hook=hook,
                              host_deadline=lambda: self.delta.deadline)
        self.owner = (host_id, self.delta.generation)
        self.clock = clock

    def sleep(self, seconds: float) -> None:
        """Waiting in acquire: time passes, and this host's keeper keeps renewing."""
        self.clock.advance(seconds)
        self.delta.renew()

    def close(self) -> None:
        self.delta.close()
        self.observer.close()
        self.spm.close()


def leader(spm: PaxosLease) -> LeaderRecord:
    record = spm.read_owner()
    assert record is not None
    return record


def test_free_then_released_lease_is_taken_at_once(store: Store, clock: FakeClock) -> None:
    a, b = Host(store, clock, 1), Host(store, clock, 2)
    try:
        assert a.spm.read_owner() is None
        start = clock()
        assert a.spm.acquire(a.observer) == 1
        assert clock() == start  # nothing to wait for
        assert a.spm.lver == 1
        got = leader(b.spm)
        assert (got.lver, got.owner, got.state, got.resource) == (
            1, a.owner, LeaderState.HELD, "SPM")
        assert a.spm.release()
        assert a.spm.lver is None
        got = leader(b.spm)
        assert (got.lver, got.owner, got.state) == (1, a.owner, LeaderState.RELEASED)
        assert not a.spm.release()  # nothing held
        assert b.spm.acquire(b.observer) == 2  # released: no waiting, no observer needed
        assert clock() == start
        assert leader(a.spm).owner == b.owner
    finally:
        a.close()
        b.close()


def test_live_holder_is_refused(store512: Store, clock: FakeClock) -> None:
    a, b = Host(store512, clock, 1), Host(store512, clock, 2)
    try:
        a.spm.acquire(a.observer)
        b.observer.poll()
        with pytest.raises(LeaseHeld, match="held by host 1 generation 1 at lver 1") as e:
            b.spm.acquire(b.observer)
        assert e.value.owner == a.owner and e.value.lver == 1
        assert e.value.code == 216
    finally:
        a.close()
        b.close()


def test_waiting_on_a_live_holder_gives_up_after_wait(store512: Store,
                                                      clock: FakeClock) -> None:
    a = Host(store512, clock, 1)

    def sleep_while_a_renews(seconds: float) -> None:
        b.sleep(seconds)
        a.delta.renew()

    b = Host(store512, clock, 2, sleep=sleep_while_a_renews)
    try:
        a.spm.acquire(a.observer)
        start = clock()
        with pytest.raises(LeaseHeld):
            b.spm.acquire(b.observer, wait=3 * TIMING.lease)
        assert clock() - start >= 3 * TIMING.lease
        assert leader(b.spm).owner == a.owner
    finally:
        a.close()
        b.close()


def test_dead_holder_is_replaced_once_proven_dead(store: Store, clock: FakeClock) -> None:
    a, b = Host(store, clock, 1), Host(store, clock, 2)
    try:
        a.spm.acquire(a.observer)
        b.observer.poll()
        first = clock()
        a.close()  # the holder dies: its host id is never renewed again
        assert b.spm.acquire(b.observer, wait=10 * TIMING.lease) == 2
        assert clock() - first > TIMING.dead_after_seen
        got = leader(b.spm)
        assert (got.lver, got.owner, got.state) == (2, b.owner, LeaderState.HELD)
    finally:
        b.close()


def test_our_own_generation_is_adopted_an_older_one_replaced(store512: Store,
                                                            clock: FakeClock) -> None:
    a = Host(store512, clock, 1)
    try:
        a.spm.acquire(a.observer)
        counter = leader(a.spm).counter
        again = PaxosLease(store512.leases, "SPM", 1, a.owner[1], TIMING, sector_size=512,
                           hosts=HOSTS, clock=clock, sleep=clock.sleep)
        assert again.acquire(a.observer) == 1  # a restarted keeper of the same generation
        assert leader(a.spm).counter == counter  # nothing written
        again.close()
        a.delta.release()
        a.delta.acquire()  # a new generation: the old one is released, hence dead
        a.observer.poll()
        newer = PaxosLease(store512.leases, "SPM", 1, a.delta.generation, TIMING,
                           sector_size=512, hosts=HOSTS, clock=clock, sleep=clock.sleep)
        assert newer.acquire(a.observer) == 2
        assert leader(newer).owner == (1, 2)
        newer.close()
    finally:
        a.close()


class Crash(Exception):
    pass


def test_chosen_owner_without_leader_write_is_respected(store: Store,
                                                        clock: FakeClock) -> None:
    def crash(stage: str) -> None:
        if stage == "committed":
            raise Crash

    a, b = Host(store, clock, 1, hook=crash), Host(store, clock, 2)
    try:
        with pytest.raises(Crash):
            a.spm.acquire(a.observer)  # chosen, then dies before writing the leader
        assert a.spm.read_owner() is None
        b.observer.poll()
        with pytest.raises(LeaseHeld) as e:
            b.spm.acquire(b.observer)  # finds a's chosen value, and a is alive
        assert (e.value.owner, e.value.lver) == (a.owner, 1)
        assert b.spm.read_owner() is None  # only an owner writes the leader
        a.spm.hook = None
        assert a.spm.acquire(a.observer) == 1  # a, back, owns what was chosen for it
        assert leader(b.spm).owner == a.owner
    finally:
        a.close()
        b.close()


def test_chosen_owner_without_leader_write_is_replaced_once_dead(store512: Store,
                                                                 clock: FakeClock) -> None:
    def crash(stage: str) -> None:
        if stage == "committed":
            raise Crash

    a, b = Host(store512, clock, 1, hook=crash), Host(store512, clock, 2)
    try:
        with pytest.raises(Crash):
            a.spm.acquire(a.observer)
        a.delta.close()  # and its host dies
        b.observer.poll()
        assert b.spm.acquire(b.observer, wait=10 * TIMING.lease) == 2
        got = leader(b.spm)
        assert (got.lver, got.owner) == (2, b.owner)
    finally:
        a.close()
        b.close()


def test_released_lease_is_never_revived_by_a_late_contender(store512: Store,
                                                            clock: FakeClock) -> None:
    """x stalls after seeing a free lease; meanwhile v acquires lver 1 and releases it. x's
    ballot for lver 1 then finds v's value: x must neither write the leader for v (landing
    over v's RELEASED, it would make a released lease held again) nor wait on v."""
    stalled, resume = threading.Event(), threading.Event()

    def stall(at: str) -> None:
        if at == "checked" and not stalled.is_set():
            stalled.set()
            assert resume.wait(30)

    x, v = Host(store512, clock, 1, hook=stall), Host(store512, clock, 2)
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(x.spm.acquire(x.observer)))
    thread.start()
    try:
        assert stalled.wait(30)
        assert v.spm.acquire(v.observer) == 1
        assert v.spm.release()
        resume.set()
        thread.join(30)
        assert outcome == [2]
        got = leader(v.spm)
        assert (got.lver, got.owner, got.state) == (2, x.owner, LeaderState.HELD)
        v.observer.poll()
        with pytest.raises(LeaseHeld):
            v.spm.acquire(v.observer)  # v never gets its released lver 1 back
    finally:
        resume.set()
        thread.join(30)
        x.close()
        v.close()


def test_no_lver_and_no_leader_write_once_the_host_lease_expired(store512: Store,
                                                                  clock: FakeClock) -> None:
    def expire(stage: str) -> None:
        if stage == "committed":
            clock.set(a.delta.deadline)

    a = Host(store512, clock, 1, hook=expire)
    try:
        with pytest.raises(LeaseExpired, match="this host's lease expired"):
            a.spm.acquire(a.observer)
        assert a.spm.lver is None
        assert a.spm.read_owner() is None
    finally:
        a.close()


@pytest.mark.parametrize("stage", ["checked", "phase1"])
def test_contender_stalled_at_any_point_never_becomes_a_second_owner(
        store: Store, clock: FakeClock, stage: str) -> None:
    stalled, resume = threading.Event(), threading.Event()

    def stall(at: str) -> None:
        if at == stage:
            stalled.set()
            assert resume.wait(30)

    a, b = Host(store, clock, 1, hook=stall), Host(store, clock, 2)
    outcome: list[object] = []

    def contend() -> None:
        try:
            outcome.append(a.spm.acquire(a.observer))
        except LeaseHeld as e:
            outcome.append(e)

    a.observer.poll()
    thread = threading.Thread(target=contend)
    thread.start()
    try:
        assert stalled.wait(30)  # a has seen a free lease (and, for phase1, a ballot)
        b.observer.poll()
        assert b.spm.acquire(b.observer) == 1
        resume.set()
        thread.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], LeaseHeld), outcome
        assert outcome[0].owner == b.owner
        assert a.spm.lver is None
        got = leader(b.spm)
        assert (got.lver, got.owner, got.state) == (1, b.owner, LeaderState.HELD)
    finally:
        resume.set()
        thread.join(30)
        a.close()
        b.close()


def test_bad_leader_is_never_trusted(store512: Store, clock: FakeClock) -> None:
    a = Host(store512, clock, 1)
    try:
        with store512.leases.open("r+b") as f:
            f.write(b"garbage".ljust(512, b"\0"))
        with pytest.raises(ChecksumError, match="sector 0 is not a valid leader"):
            a.spm.acquire(a.observer)
        other = LeaderRecord(resource="OTHER", lver=3, owner_id=1, owner_generation=1,
                             state=LeaderState.RELEASED, counter=1, stamp_ns=0)
        with store512.leases.open("r+b") as f:
            f.write(other.encode(512))
        with pytest.raises(ChecksumError, match="leader of 'OTHER'"):
            a.spm.acquire(a.observer)
    finally:
        a.close()


def test_newer_instance_in_the_blocks_is_never_overtaken_silently(store512: Store,
                                                                  clock: FakeClock) -> None:
    """A ballot block of a newer instance than the leader shows (the leader was overwritten
    by a very stale write) stops every ballot: the lease is reported contended, not taken."""
    a = Host(store512, clock, 1)
    try:
        stray = DBlock(instance=7, mbal=5, bal=5, inp_id=5, inp_generation=1)
        with store512.leases.open("r+b") as f:
            f.seek(5 * 512)
            f.write(stray.encode(512))
        with pytest.raises(LeaseContended, match="20 ballots"):
            a.spm.acquire(a.observer)
        assert a.spm.read_owner() is None
    finally:
        a.close()


def test_release_never_overwrites_a_newer_owner(store512: Store, clock: FakeClock) -> None:
    a, b = Host(store512, clock, 1), Host(store512, clock, 2)
    try:
        a.spm.acquire(a.observer)
        a.spm.release()
        b.spm.acquire(b.observer)
        a.spm.lver = 1  # as if a still believed it owned lver 1
        assert not a.spm.release()
        got = leader(b.spm)
        assert (got.lver, got.owner, got.state) == (2, b.owner, LeaderState.HELD)
    finally:
        a.close()
        b.close()


def test_ballot_numbers_and_area_size() -> None:
    assert ballot.ballot_number(0, 7) == 7
    assert ballot.ballot_number(7, 3) == 2003
    assert ballot.ballot_number(2000, 2000) == 4000
    assert ballot.ballot_number(2001, 1) == 4001
    assert area_size(512) == 1 << 20
    assert area_size(4096) == 8 << 20
    with pytest.raises(ValueError, match="host id 9"):
        PaxosLease("x", "SPM", 9, 1, TIMING, sector_size=512, hosts=8)
