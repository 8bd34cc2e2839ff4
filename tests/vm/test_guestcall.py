"""GuestCaller with plain functions that block on events (the real stuck qemu is in
test_libvirt_real.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import libvirt
import pytest

from actors.clock import Clock
from actors.vm.guestcall import GuestCaller
from messaging.errors import GuestCallBusy, GuestCallTimeout, VMError
from tests.vm.helpers import VM_ID


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set in teardown so that no test leaves a thread blocked."""
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.timeout(10)
def test_result_and_exception_pass_through(clock: Clock) -> None:
    caller = GuestCaller(VM_ID, clock=clock)
    assert caller.call("control", lambda: 42, timeout=5) == 42

    def fails() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        caller.call("control", fails, timeout=5)
    assert caller.stuck == 0 and caller.abandoned_total == 0
    assert not caller.busy("control")


@pytest.mark.timeout(10)
def test_runs_off_the_callers_thread(clock: Clock) -> None:
    caller = GuestCaller(VM_ID, clock=clock)
    ran_on = caller.call("control", threading.current_thread, timeout=5)
    assert ran_on is not threading.current_thread()
    assert ran_on.name.startswith(f"guestcall-{VM_ID[:8]}-control")


@pytest.mark.timeout(10)
def test_stuck_call_times_out_is_abandoned_then_frees_its_slot(
    release: threading.Event,
    clock: Clock,
) -> None:
    caller = GuestCaller(VM_ID, clock=clock)
    started = time.monotonic()
    future = caller.submit("control", lambda: release.wait(30), timeout=0.3, name="suspend")
    with pytest.raises(GuestCallTimeout) as err:
        future.result(timeout=5)
    assert 0.25 < time.monotonic() - started < 2
    assert isinstance(err.value, VMError) and err.value.code == 5 and err.value.retryable
    assert "suspend" in err.value.message and VM_ID in err.value.message
    assert caller.stuck == 1 and caller.abandoned_total == 1
    assert caller.busy("control")
    with pytest.raises(GuestCallBusy) as busy:
        caller.call("control", lambda: 1, timeout=1, name="resume")
    assert "resume" in busy.value.message and "suspend" in busy.value.message
    # Another kind is not affected.
    assert caller.call("stats", lambda: "ok", timeout=1) == "ok"
    described = caller.describe()
    assert described["abandonedTotal"] == 1
    assert [(c["call"], c["abandoned"]) for c in described["inFlight"]] == [("suspend", True)]

    release.set()  # qemu answers at last
    deadline = time.monotonic() + 5
    while caller.stuck:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert caller.call("control", lambda: "again", timeout=1) == "again"
    assert caller.abandoned_total == 1


@pytest.mark.timeout(10)
def test_future_resolves_by_the_deadline_for_async_callers(
    release: threading.Event, clock: Clock
) -> None:
    caller = GuestCaller(VM_ID, clock=clock)
    done: list[float] = []
    started = time.monotonic()
    future: Future[bool] = caller.submit("control", lambda: release.wait(30), timeout=0.2)
    future.add_done_callback(lambda f: done.append(time.monotonic() - started))
    deadline = time.monotonic() + 5
    while not done:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert 0.15 < done[0] < 2
    assert isinstance(future.exception(), GuestCallTimeout)


@pytest.mark.timeout(10)
def test_several_outstanding_for_a_bulk_caller(release: threading.Event, clock: Clock) -> None:
    bulk = GuestCaller("host", max_outstanding=2, clock=clock)
    first = bulk.submit("bulk-stats", lambda: release.wait(30), timeout=0.1)
    with pytest.raises(GuestCallTimeout):
        first.result(5)
    second = bulk.submit("bulk-stats", lambda: release.wait(30), timeout=0.1)
    with pytest.raises(GuestCallTimeout):
        second.result(5)
    assert bulk.stuck == 2
    with pytest.raises(GuestCallBusy):
        bulk.submit("bulk-stats", lambda: 1, timeout=0.1)


@pytest.mark.timeout(10)
def test_libvirt_job_timeout_becomes_a_guest_call_timeout(clock: Clock) -> None:
    caller = GuestCaller(VM_ID, clock=clock)

    def job_lock_timeout() -> None:
        error = libvirt.libvirtError("cannot acquire state change lock")
        error.err = (libvirt.VIR_ERR_OPERATION_TIMEOUT, 0, "Timed out", 2, "", None, None, 0, 0)
        raise error

    with pytest.raises(GuestCallTimeout) as err:
        caller.call("control", job_lock_timeout, timeout=5, name="memoryStats")
    assert isinstance(err.value.__cause__, libvirt.libvirtError)

    def other_error() -> None:
        error = libvirt.libvirtError("no domain")
        error.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "no domain", 2, "", None, None, 0, 0)
        raise error

    with pytest.raises(libvirt.libvirtError):
        caller.call("control", other_error, timeout=5)


@pytest.mark.timeout(10)
def test_closed_caller_refuses_new_calls(clock: Clock) -> None:
    caller = GuestCaller(VM_ID, clock=clock)
    caller.close()
    with pytest.raises(RuntimeError, match="closed"):
        caller.submit("control", lambda: 1, timeout=1)
