"""Worker threads for blocking storage work: bounded, daemonic, bounded per domain."""

from __future__ import annotations

import threading

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
