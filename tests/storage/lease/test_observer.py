"""The ids observer: DEAD exactly after the bound (FakeClock), never on a failed read, and a
real-time run where DEAD is only ever said of a holder whose validity had ended."""

from __future__ import annotations

import threading
import time

import pytest

from actors.storage.lease.delta import DeltaLease
from actors.storage.lease.errors import IoFailed, LeaseExpired
from actors.storage.lease.observer import IdsObserver, Liveness
from actors.storage.lease.timing import LeaseTiming
from tests.storage.lease.conftest import TIMING, FakeClock, Store

ALIVE, DEAD, UNKNOWN = Liveness.ALIVE, Liveness.DEAD, Liveness.UNKNOWN


def holder(store: Store, clock: FakeClock, host_id: int = 3,
           timing: LeaseTiming = TIMING) -> DeltaLease:
    lease = DeltaLease(store.ids, host_id, f"host-{host_id}", timing,
                       sector_size=store.sector_size, clock=clock, sleep=clock.sleep)
    lease.acquire()
    return lease


def observer(store: Store, clock: FakeClock, hosts: int = 8) -> IdsObserver:
    return IdsObserver(store.ids, TIMING, sector_size=store.sector_size, hosts=hosts,
                       clock=clock)


def test_dead_exactly_after_the_bound_and_not_before(store: Store, clock: FakeClock) -> None:
    a = holder(store, clock)
    obs = observer(store, clock)
    try:
        assert obs.liveness(3, 1) is UNKNOWN  # nothing read yet
        obs.poll()
        assert obs.liveness(3, 1) is ALIVE
        assert obs.liveness(4, 1) is UNKNOWN  # an empty slot is not proven dead yet
        clock.advance(5)
        a.renew()  # changes the record: counting starts again from the next read
        a.close()  # then the holder dies
        obs.poll()
        seen = clock()
        clock.set(seen + TIMING.dead_after_seen)
        obs.poll()
        assert obs.liveness(3, 1) is ALIVE  # exactly the bound: not yet
        assert obs.liveness(4, 1) is DEAD  # never written, silent since the first read
        clock.set(seen + TIMING.dead_after_seen + 0.001)
        assert obs.liveness(3, 1) is ALIVE  # time alone proves nothing: a read must show it
        obs.poll()
        assert obs.liveness(3, 1) is DEAD
        assert obs.liveness(3, 0) is DEAD
    finally:
        obs.close()


def test_released_or_newer_generation_is_dead_at_once(store512: Store,
                                                      clock: FakeClock) -> None:
    long = LeaseTiming(lease=60, renew_interval=5, io_timeout=5)
    a = holder(store512, clock, 1, long)
    b = holder(store512, clock, 2, long)
    obs = observer(store512, clock)
    try:
        obs.poll()
        assert obs.liveness(1, 1) is ALIVE
        assert obs.liveness(1, 2) is UNKNOWN  # a generation the slot does not show
        assert a.release()
        assert b.release()
        b.acquire()
        obs.poll()
        assert obs.liveness(1, 1) is DEAD  # released
        assert obs.liveness(2, 1) is DEAD  # superseded by generation 2
        assert obs.liveness(2, 2) is ALIVE
        slot = obs.slot(2)
        assert slot is not None and slot.record is not None and slot.record.generation == 2
    finally:
        a.close()
        b.close()
        obs.close()


def test_failed_reads_tell_nothing(store512: Store, clock: FakeClock) -> None:
    a = holder(store512, clock, 1)
    a.close()
    obs = observer(store512, clock)
    saved = store512.ids.read_bytes()
    try:
        obs.poll()
        assert obs.liveness(1, 1) is ALIVE
        store512.ids.write_bytes(b"")  # every read is now short: an I/O error
        for _ in range(5):
            clock.advance(TIMING.dead_after)
            with pytest.raises(IoFailed, match="short read"):
                obs.poll()
            assert obs.liveness(1, 1) is UNKNOWN  # never DEAD without a read showing it
        store512.ids.write_bytes(saved)
        obs.poll()
        assert obs.liveness(1, 1) is DEAD  # a read long after the first shows the same
        store512.ids.write_bytes(b"")
        with pytest.raises(IoFailed):
            obs.poll()
        assert obs.liveness(1, 1) is DEAD  # a dead generation stays dead
        assert (obs.polls, obs.failures) == (2, 6)
    finally:
        obs.close()


def test_a_missing_file_is_unknown(store512: Store, clock: FakeClock) -> None:
    obs = IdsObserver(store512.root / "missing", TIMING, sector_size=512, hosts=4, clock=clock)
    try:
        with pytest.raises(IoFailed, match="No such file"):
            obs.poll()
        assert obs.liveness(1, 1) is UNKNOWN
        assert obs.latest_read is None
        with pytest.raises(ValueError, match="host id 5 is not watched"):
            obs.liveness(5, 1)
    finally:
        obs.close()


def test_holders_longer_timing_written_in_its_record_is_respected(store512: Store,
                                                                  clock: FakeClock) -> None:
    slow = LeaseTiming(lease=40, renew_interval=10, io_timeout=5)
    a = holder(store512, clock, 1, slow)
    a.close()
    obs = observer(store512, clock)
    try:
        obs.poll()
        start = clock()
        clock.advance(TIMING.dead_after + 1)
        obs.poll()
        assert obs.liveness(1, 1) is ALIVE  # our own bound has passed, the holder's not
        clock.set(start + slow.dead_after_seen + 0.001)
        obs.poll()
        assert obs.liveness(1, 1) is DEAD
    finally:
        obs.close()


@pytest.mark.timeout(60)
def test_real_time_dead_only_once_the_holders_validity_had_ended(store512: Store) -> None:
    """A holder renews on its own thread (real clock), then dies. Whenever the observer says
    DEAD, the read that proved it was issued more than io_timeout after the holder's last
    deadline: whatever the holder wrote while valid had landed."""
    timing = LeaseTiming(lease=1.5, renew_interval=0.3, io_timeout=0.3)
    lease = DeltaLease(store512.ids, 5, "holder", timing, sector_size=512)
    obs = IdsObserver(store512.ids, timing, sector_size=512, hosts=8)
    stop = threading.Event()
    lease.acquire()

    def renew() -> None:
        while not stop.wait(timing.renew_interval):
            try:
                lease.renew()
            except LeaseExpired:
                return

    renewer = threading.Thread(target=renew)
    renewer.start()
    try:
        limit = time.monotonic() + 2 * timing.lease
        while time.monotonic() < limit:
            obs.poll()
            if obs.liveness(5, 1) is DEAD:  # only if this loaded machine stalled the holder
                assert lease.deadline + timing.io_timeout < (obs.latest_read or 0)
            time.sleep(0.05)
        stop.set()  # the holder dies
        renewer.join(10)
        last = lease.deadline
        limit = time.monotonic() + 10 * timing.lease
        while obs.liveness(5, 1) is not DEAD and time.monotonic() < limit:
            obs.poll()
            time.sleep(0.05)
        assert obs.liveness(5, 1) is DEAD
        assert last + timing.io_timeout < (obs.latest_read or 0)
    finally:
        stop.set()
        renewer.join(10)
        lease.close()
        obs.close()
