"""Worker threads for blocking storage work: bounded, daemonic, bounded per domain."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from actors.storage.workers import Lanes, Workers
from messaging.errors import StorageBusy


@pytest.mark.timeout(10)
def test_workers_run_jobs_on_a_bounded_set_of_daemon_threads() -> None:
    pool = Workers("test-pool", 2)
    try:
        assert [pool.submit(lambda x: x * 2, i).result(5) for i in range(10)] == list(
            range(0, 20, 2))
        assert pool.threads() == 1  # sequential jobs reuse one thread
        release = threading.Event()
        blocked = [pool.submit(release.wait, 5) for _ in range(3)]
        assert pool.threads() == 2
        assert pool.busy() == 3
        assert all(t.daemon for t in threading.enumerate() if t.name.startswith("test-pool"))
        release.set()
        assert all(f.result(5) is True for f in blocked)
        failing = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(5)
    finally:
        pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


@pytest.mark.timeout(10)
def test_lanes_refuse_work_on_a_domain_at_its_bound_and_serve_the_others() -> None:
    lanes = Lanes("test-lanes", workers=4, per_key=2)
    hung = threading.Event()
    try:
        stuck = [lanes.submit("frozen", hung.wait, 5) for _ in range(2)]
        with pytest.raises(StorageBusy) as info:
            lanes.submit("frozen", lambda: None, what="storage domain frozen")
        assert info.value.code == 224
        assert info.value.retryable
        assert "storage domain frozen has 2 operation(s)" in info.value.message
        assert lanes.submit("healthy", lambda: "ok").result(5) == "ok"
        assert lanes.inflight() == {"frozen": 2}
        hung.set()
        for future in stuck:
            future.result(5)
        assert lanes.inflight() == {}
        assert lanes.submit("frozen", lambda: "again").result(5) == "again"
    finally:
        hung.set()
        lanes.shutdown()


def on_answer(future: Future[Any], probe: Callable[[], Any], seen: list[Any]) -> None:
    """Record ``probe()`` at the moment ``future`` is given its outcome, on the thread that
    gives it, before any waiter (a verb's ``future.result(timeout)``) wakes up: what a client
    that sends its next request as soon as it has the answer can find."""
    give_result, give_exception = future.set_result, future.set_exception

    def set_result(value: Any) -> None:
        seen.append(probe())
        give_result(value)

    def set_exception(error: BaseException | None) -> None:
        seen.append(probe())
        give_exception(error)

    future.set_result = set_result  # type: ignore[method-assign]
    future.set_exception = set_exception  # type: ignore[method-assign]


@pytest.mark.timeout(10)
def test_a_lane_job_leaves_its_lane_before_its_answer_goes_out() -> None:
    # The lane was released by a done-callback, which runs after the waiters of the future
    # are woken: a verb answered, its client sent the next call on the same domain, and the
    # call was refused (224) by the job that had just answered (per_key 1 here).
    lanes = Lanes("test-answer", workers=2, per_key=1)
    seen: list[Any] = []
    try:
        for outcome in ("ok", "fails"):
            go = threading.Event()

            def job(go: threading.Event = go, fail: bool = outcome == "fails") -> str:
                assert go.wait(5)
                if fail:
                    raise StorageBusy(what="x", pending=0, age=0.0)
                return "done"

            future = lanes.submit("sd", job)
            on_answer(future, lambda: (lanes.inflight(), lanes.workers.busy()), seen)
            go.set()
            if outcome == "ok":
                assert future.result(5) == "done"
            else:
                with pytest.raises(StorageBusy):
                    future.result(5)
            assert lanes.submit("sd", lambda: "next").result(5) == "next"
        assert seen == [({}, 0), ({}, 0)]
    finally:
        lanes.shutdown()


@pytest.mark.timeout(10)
def test_a_job_cancelled_before_it_ran_leaves_its_lane() -> None:
    lanes = Lanes("test-cancel", workers=1, per_key=2)
    hold = threading.Event()
    try:
        first = lanes.submit("sd", hold.wait, 5)
        queued = lanes.submit("sd", lambda: "never")  # behind the first on the one thread
        assert lanes.inflight() == {"sd": 2}
        assert queued.cancel()
        assert lanes.inflight() == {"sd": 1}
        hold.set()
        assert first.result(5) is True
        assert lanes.inflight() == {}
    finally:
        hold.set()
        lanes.shutdown()
