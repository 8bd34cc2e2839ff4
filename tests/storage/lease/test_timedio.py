"""TimedIO: one call at a time on a worker that can be abandoned, with a deadline.

The blocking call here is a wait on an Event the test controls, standing in for a syscall
stuck in the kernel (test_sectorfile.py does the same with a really frozen filesystem).
"""

from __future__ import annotations

import threading
import time

import pytest

from actors.storage.lease.errors import IoBusy, IoTimeout
from actors.storage.lease.timedio import TimedIO
from tests.storage.lease.conftest import FakeClock


def test_runs_call_and_stamps_issue_and_completion() -> None:
    io = TimedIO("t", timeout=5)
    try:
        before = time.monotonic()
        got = io.run(lambda: 42)
        assert got.value == 42
        assert before <= got.issued <= got.completed <= time.monotonic()
        assert io.run(lambda: "again").value == "again"
        assert io.calls == 2
        assert io.busy_since is None
    finally:
        assert io.close(5)


def test_error_of_the_call_is_raised_in_the_caller() -> None:
    io = TimedIO("t", timeout=5)

    def fail() -> None:
        raise OSError(5, "Input/output error")

    try:
        with pytest.raises(OSError, match="Input/output"):
            io.run(fail)
        assert io.run(lambda: 1).value == 1
    finally:
        io.close(5)


@pytest.mark.timeout(30)
def test_stuck_call_is_abandoned_and_new_calls_fail_at_once_until_it_returns() -> None:
    io = TimedIO("stuck", timeout=0.2)
    gate = threading.Event()
    try:
        with pytest.raises(IoTimeout, match=r"stuck: no answer within 0\.2 s"):
            io.run(gate.wait)
        assert io.busy_since is not None
        for _ in range(3):
            start = time.monotonic()
            with pytest.raises(IoBusy, match="still running"):
                io.run(lambda: 1)
            assert time.monotonic() - start < 0.2  # refused at once, not after a wait
        assert [t.name for t in threading.enumerate()].count("io-stuck") == 1
        gate.set()
        deadline = time.monotonic() + 10
        while io.busy_since is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert io.run(lambda: "back").value == "back"
        assert io.late == 1
        assert io.timeouts == 1
    finally:
        gate.set()
        assert io.close(5)


def test_call_completing_past_the_timeout_on_the_clock_counts_as_timed_out() -> None:
    clock = FakeClock()
    io = TimedIO("slow", timeout=1.0, clock=clock)
    try:
        with pytest.raises(IoTimeout):
            io.run(lambda: clock.advance(1.5))
        assert io.run(lambda: clock.advance(1.0)).value is None  # exactly the timeout: fine
    finally:
        io.close(5)


def test_closed_io_refuses_calls_and_validates_timeout() -> None:
    io = TimedIO("c", timeout=1)
    assert io.close()  # never started a worker
    with pytest.raises(RuntimeError, match="closed"):
        io.run(lambda: 1)
    with pytest.raises(ValueError, match="positive"):
        TimedIO("x", timeout=0)
