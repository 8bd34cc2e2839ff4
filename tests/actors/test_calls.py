"""BoundedCaller: deadlines on the shared clock (no timer thread per call), and a lease held
by every call for as long as it runs, abandoned or not."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from actors.calls import BoundedCaller
from actors.clock import Clock
from tests.harness import wait_for

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


class Leases:
    """Counts leases taken and returned; refuses them while ``refuse`` is set."""

    def __init__(self) -> None:
        self.held = 0
        self.taken = 0
        self.refuse: Exception | None = None
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        if self.refuse is not None:
            raise self.refuse
        with self.lock:
            self.held += 1
            self.taken += 1
        try:
            yield
        finally:
            with self.lock:
                self.held -= 1


def test_deadlines_use_the_shared_clock_not_a_timer_thread_per_call(
    clock: Clock, release: threading.Event,
) -> None:
    caller = BoundedCaller("host", clock=clock, max_outstanding=20)
    before = {t.ident for t in threading.enumerate()}
    futures = [caller.submit("stuck", lambda: release.wait(30), timeout=0.2, name=f"c{i}")
               for i in range(10)]
    new = [t for t in threading.enumerate() if t.ident not in before]
    assert not [t for t in new if isinstance(t, threading.Timer)]
    assert len([t for t in new if t.name.startswith("call-host-stuck")]) == 10
    for future in futures:
        with pytest.raises(TimeoutError):
            future.result(5)  # resolved by the clock at the deadline
    assert caller.stuck == 10 and caller.abandoned_total == 10


def test_a_lease_is_held_until_an_abandoned_call_returns(
    clock: Clock, release: threading.Event,
) -> None:
    leases = Leases()
    caller = BoundedCaller("host", clock=clock, lease=leases.lease)
    future = caller.submit("call", lambda: release.wait(30), timeout=0.1)
    with pytest.raises(TimeoutError):
        future.result(5)
    assert leases.held == 1  # abandoned, still running: still leased
    release.set()
    wait_for(lambda: leases.held == 0, 5, what="the lease to be returned")
    assert caller.call("call", lambda: leases.held, timeout=5) == 1  # held while it runs
    assert leases.held == 0 and leases.taken == 2


def test_a_refused_lease_fails_the_call_without_running_it(clock: Clock) -> None:
    leases = Leases()
    leases.refuse = ConnectionError("libvirt is away")
    caller = BoundedCaller("host", clock=clock, lease=leases.lease)
    ran: list[bool] = []
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="away"):
        caller.call("call", lambda: ran.append(True), timeout=5)
    assert not ran and time.monotonic() - started < 2
    assert not caller.busy("call")
