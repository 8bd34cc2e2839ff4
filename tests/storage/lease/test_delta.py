"""The delta lease (host ids) on real files, timed on a FakeClock so that every wait is exact."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from actors.storage.lease.delta import DeltaLease
from actors.storage.lease.errors import HostIdInUse, IoBusy, IoTimeout, LeaseExpired
from actors.storage.lease.records import HostFlags, HostRecord
from actors.storage.lease.timing import LeaseTiming
from tests.storage.helpers import ext4, frozen
from tests.storage.lease.conftest import TIMING, FakeClock, Store, make_store

OWNER_A = "4a3c2f6e-0000-4000-8000-00000000000a"
OWNER_B = "4a3c2f6e-0000-4000-8000-00000000000b"


def slot(path: Path, host_id: int, sector_size: int = 512) -> HostRecord | None:
    raw = path.read_bytes()[(host_id - 1) * sector_size: host_id * sector_size]
    return HostRecord.decode(raw)


def blocked_in_kernel(thread_name: str, timeout: float = 10) -> bool:
    """Wait until the named thread sleeps uninterruptibly (a syscall stuck in the kernel)."""
    (thread,) = [t for t in threading.enumerate() if t.name == thread_name]
    stat = Path(f"/proc/self/task/{thread.native_id}/stat")
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "D":
            return True
        time.sleep(0.005)
    return False


def lease(store: Store, clock: FakeClock, owner: str = OWNER_A, host_id: int = 3,
          timing: LeaseTiming = TIMING) -> DeltaLease:
    return DeltaLease(store.ids, host_id, owner, timing, sector_size=store.sector_size,
                      clock=clock, sleep=clock.sleep)


def test_acquire_renew_release_of_a_free_slot(store: Store, clock: FakeClock) -> None:
    a = lease(store, clock)
    try:
        start = clock()
        deadline = a.acquire()
        assert clock() - start == TIMING.settle  # a free slot: only the settle wait
        assert deadline == start + TIMING.lease
        assert a.held and a.generation == 1
        rec = slot(store.ids, 3, store.sector_size)
        assert rec is not None
        assert (rec.host_id, rec.generation, rec.counter, rec.flags, rec.owner) == (
            3, 1, 0, HostFlags.LIVE, OWNER_A)
        assert (rec.lease_ms, rec.io_timeout_ms) == (20_000, 5_000)
        assert slot(store.ids, 2, store.sector_size) is None  # neighbours untouched
        clock.advance(4)
        assert a.renew() == clock() + TIMING.lease
        assert a.acquire() == a.deadline  # still held: nothing to do
        rec = slot(store.ids, 3, store.sector_size)
        assert rec is not None and rec.counter == 1
        assert a.release()
        assert not a.held
        rec = slot(store.ids, 3, store.sector_size)
        assert rec is not None and rec.flags is HostFlags.RELEASED
        assert not a.release()  # nothing held: nothing written
    finally:
        a.close()
    b = lease(store, clock, OWNER_B)
    try:
        start = clock()
        b.acquire()
        assert clock() - start == TIMING.settle  # released: no watching
        assert b.generation == 2
    finally:
        b.close()


def test_silent_slot_is_watched_for_the_whole_bound_then_taken(store512: Store,
                                                                 clock: FakeClock) -> None:
    a = lease(store512, clock)
    a.acquire()
    a.close()  # the holder dies: its record stays LIVE and never changes again
    b = lease(store512, clock, OWNER_B)
    try:
        start = clock()
        b.acquire()
        waited = clock() - start - TIMING.settle
        assert waited > TIMING.dead_after_seen
        assert waited <= TIMING.dead_after_seen + TIMING.io_timeout + 0.01
        assert b.generation == 2
    finally:
        b.close()


def test_slot_renewed_while_watched_is_refused(store512: Store, clock: FakeClock) -> None:
    a = lease(store512, clock)
    a.acquire()

    def sleep_while_a_renews(seconds: float) -> None:
        clock.advance(seconds)
        a.renew()

    b = DeltaLease(store512.ids, 3, OWNER_B, TIMING, sector_size=512, clock=clock,
                   sleep=sleep_while_a_renews)
    try:
        with pytest.raises(HostIdInUse, match=f"host id 3 is in use by '{OWNER_A}'"):
            b.acquire()
        assert a.held
        rec = slot(store512.ids, 3)
        assert rec is not None and rec.owner == OWNER_A and rec.generation == 1
    finally:
        a.close()
        b.close()


def test_an_earlier_incarnation_with_our_name_is_watched_too(store512: Store,
                                                             clock: FakeClock) -> None:
    first = lease(store512, clock)
    first.acquire()
    first.close()
    again = lease(store512, clock)  # same owner, a new process: the old one may still run
    try:
        start = clock()
        again.acquire()
        assert clock() - start > TIMING.dead_after_seen + TIMING.settle
    finally:
        again.close()


def test_garbage_in_the_slot_is_watched_then_overwritten(store512: Store,
                                                         clock: FakeClock) -> None:
    with store512.ids.open("r+b") as f:
        f.seek(2 * 512)
        f.write(b"not a host record")
    a = lease(store512, clock)
    try:
        start = clock()
        a.acquire()
        assert clock() - start > TIMING.dead_after_seen + TIMING.settle
        assert a.generation == 1
    finally:
        a.close()


def test_expired_lease_is_lost_and_reacquired_with_a_new_generation(store512: Store,
                                                                    clock: FakeClock) -> None:
    a = lease(store512, clock)
    try:
        deadline = a.acquire()
        clock.set(deadline)
        assert not a.held
        with pytest.raises(LeaseExpired, match="no renewal landed before the deadline"):
            a.renew()
        with pytest.raises(LeaseExpired, match="not held"):
            a.renew()
        start = clock()
        a.acquire()  # our own record, past our own deadline: no watching
        assert clock() - start == TIMING.settle
        assert a.generation == 2
    finally:
        a.close()


def test_slot_taken_by_another_writer_loses_the_lease(store512: Store,
                                                      clock: FakeClock) -> None:
    a = lease(store512, clock)
    try:
        a.acquire()
        other = HostRecord(host_id=3, generation=9, counter=0, flags=HostFlags.LIVE,
                           owner=OWNER_B, stamp_ns=0, lease_ms=1, io_timeout_ms=1)
        with store512.ids.open("r+b") as f:
            f.seek(2 * 512)
            f.write(other.encode(512))
        with pytest.raises(HostIdInUse, match=OWNER_B):
            a.renew()
        assert not a.held
        assert slot(store512.ids, 3) == other  # and nothing was written over it
    finally:
        a.close()


@pytest.mark.timeout(60)
def test_renewal_that_lands_after_the_deadline_does_not_count(tmp: Path,
                                                              clock: FakeClock) -> None:
    with ext4(tmp) as mnt:
        store = make_store(mnt / "sd", 512)
        a = lease(store, clock)
        outcome: list[BaseException | float] = []
        try:
            deadline = a.acquire()
            clock.set(deadline - 1)
            with frozen(mnt):
                def renew() -> None:
                    try:
                        outcome.append(a.renew())
                    except Exception as e:  # noqa: BLE001 - the test looks at it
                        outcome.append(e)

                worker = threading.Thread(target=renew)
                worker.start()
                assert blocked_in_kernel(f"io-{a.name}")  # the write, issued at deadline - 1
                clock.set(deadline + 1)  # it completes after the deadline: 2 s, < io_timeout
            worker.join(10)
            assert len(outcome) == 1
            assert isinstance(outcome[0], LeaseExpired), outcome
            assert "landed after the deadline" in str(outcome[0])
            assert not a.held
            rec = slot(store.ids, 3)
            assert rec is not None and rec.counter == 1  # it did land, and still does not count
        finally:
            a.close()


@pytest.mark.timeout(60)
def test_renewal_timing_out_keeps_the_deadline_and_refuses_a_pile_up(tmp: Path) -> None:
    timing = LeaseTiming(lease=30, renew_interval=1, io_timeout=0.3)
    with ext4(tmp) as mnt:
        store = make_store(mnt / "sd", 512)
        a = DeltaLease(store.ids, 1, OWNER_A, timing, sector_size=512)
        try:
            deadline = a.acquire()
            with frozen(mnt):
                with pytest.raises(IoTimeout):
                    a.renew()
                with pytest.raises(IoBusy):
                    a.renew()
                assert a.deadline == deadline and a.held
            limit = time.monotonic() + 20
            while a._file.io.busy_since is not None and time.monotonic() < limit:
                time.sleep(0.01)
            assert a.renew() > deadline
        finally:
            a.close()


def test_bad_arguments(store512: Store) -> None:
    with pytest.raises(ValueError, match="host id 0"):
        DeltaLease(store512.ids, 0, OWNER_A, TIMING, sector_size=512)
    with pytest.raises(ValueError, match="host id 2001"):
        DeltaLease(store512.ids, 2001, OWNER_A, TIMING, sector_size=512)
    with pytest.raises(ValueError, match="owner"):
        DeltaLease(store512.ids, 1, "x" * 49, TIMING, sector_size=512)
    with pytest.raises(ValueError, match="lease 3 s must exceed"):
        LeaseTiming(lease=3, renew_interval=1, io_timeout=1)
    with pytest.raises(ValueError, match="io_timeout must be a positive"):
        LeaseTiming(lease=3, renew_interval=1, io_timeout=float("nan"))
