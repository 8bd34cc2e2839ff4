"""The domain monitor actor in-process, over real storage (ext4 on a loop device, fsfreeze)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.base import ActorContext, Runtime
from actors.storage.board import MonitorBoard
from actors.storage.locator import DomainLocator
from actors.storage.monitor import DomainMonitor
from actors.storage.probe import THREAD_PREFIX
from actors.storage.sd.backend import StorageDomainBackend
from actors.storage.sd.filedomain import FileDomain
from tests.harness import wait_for
from tests.storage.conftest import Sink
from tests.storage.helpers import ext4, frozen

INTERVAL, TIMEOUT = 0.5, 1.0


def start_monitor(runtime: Runtime, locator: DomainLocator, board: MonitorBoard,
                  sd: str) -> pykka.ActorRef[DomainMonitor]:
    ctx = ActorContext(path=f"/test/{sd}", runtime=runtime)
    return DomainMonitor.start(ctx, sd_uuid=sd, host_id=2, interval=INTERVAL, timeout=TIMEOUT,
                               locator=locator, board=board)


def events(runtime: Runtime, sd: str) -> list[dict[str, Any]]:
    assert isinstance(runtime.events, Sink)
    return runtime.events.of(f"|storage|domain_status|{sd}")


def checked_after(board: MonitorBoard, sd: str, since: float) -> bool:
    health = board.get(sd)
    return health is not None and health.checked_at > since


def probe_threads(sd: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == f"{THREAD_PREFIX}{sd}")


@pytest.mark.timeout(60)
def test_frozen_domain_turns_invalid_then_valid_and_the_rest_keeps_going(
        tmp: Path, runtime: Runtime) -> None:
    board = MonitorBoard()
    locator = DomainLocator(mnt_root=tmp / "mnt", links_dir=tmp / "links", lvm=False)
    (tmp / "mnt").mkdir()
    (tmp / "local").mkdir()
    (tmp / "mnt" / "local").symlink_to(tmp / "local")
    healthy = FileDomain.create(tmp / "local", str(uuid.uuid4()), name="healthy").sd_uuid
    with ext4(tmp) as mountpoint:
        (tmp / "mnt" / "fs").symlink_to(mountpoint)
        sd = FileDomain.create(mountpoint, str(uuid.uuid4()), name="fs").sd_uuid
        start_monitor(runtime, locator, board, healthy)
        monitor = start_monitor(runtime, locator, board, sd)
        wait_for(lambda: events(runtime, sd) and events(runtime, healthy), 10, what="first")
        assert events(runtime, sd)[0]["valid"] is True
        entry = board.snapshot()[sd]
        assert (entry["valid"], entry["code"], entry["version"], entry["actual"]) == (
            True, 0, 5, True)
        slot = (mountpoint / sd / "dom_md" / "probe").read_bytes()[2 * 4096:3 * 4096]
        assert slot.startswith(b"probe slot=2 ")  # the probe writes this host's slot
        with frozen(mountpoint):
            wait_for(lambda: len(events(runtime, sd)) == 2, INTERVAL + TIMEOUT + 15,
                     what="invalid event")
            event = events(runtime, sd)[1]
            assert (event["valid"], event["code"]) == (False, 215)
            assert event["delay"] >= TIMEOUT  # declared because its probe hung that long
            for _ in range(4):  # the monitor keeps answering; one stuck probe, no pile-up
                since = time.monotonic()
                time.sleep(INTERVAL)
                detail = monitor.proxy().describe().get(timeout=5)
                assert detail["outstanding"] is True
                assert probe_threads(sd) == 1
                wait_for(lambda since=since: checked_after(board, healthy, since), 10,
                         what="the healthy domain checked again")
            stuck = board.snapshot()[sd]
            assert stuck["valid"] is False and stuck["lastCheck"] > TIMEOUT
        wait_for(lambda: len(events(runtime, sd)) == 3, 10, what="valid again")
        assert events(runtime, sd)[2]["valid"] is True
        wait_for(lambda: probe_threads(sd) == 0, 5, what="the stuck probe ended")
        assert len(events(runtime, healthy)) == 1  # never changed
        monitor.stop()
        assert sd not in board.snapshot()  # a deliberate stop: not monitored any more
        wait_for(lambda: probe_threads(sd) == 0, 5, what="no probe left on the filesystem")
    assert healthy in board.snapshot()


@pytest.mark.timeout(30)
def test_a_missing_domain_is_invalid_until_it_appears(tmp: Path, runtime: Runtime) -> None:
    board = MonitorBoard()
    (tmp / "mnt" / "conn").mkdir(parents=True)
    locator = DomainLocator(mnt_root=tmp / "mnt", links_dir=tmp / "links", lvm=False)
    sd = str(uuid.uuid4())
    start_monitor(runtime, locator, board, sd)
    wait_for(lambda: events(runtime, sd), 10, what="first result")
    first = events(runtime, sd)[0]
    assert (first["valid"], first["code"]) == (False, 201)
    assert sd in first["error"]
    FileDomain.create(tmp / "mnt" / "conn", sd, name="late")
    wait_for(lambda: len(events(runtime, sd)) == 2, 10, what="found")
    assert events(runtime, sd)[1]["valid"] is True
    assert board.snapshot()[sd]["valid"] is True


class BuggyLocator(DomainLocator):
    """A test double for a bug in the search (nothing real raises a non-storage error on
    demand): the first ``open`` raises KeyError, the later ones search for real."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.opened = 0

    def open(self, sd_uuid: str) -> StorageDomainBackend:
        self.opened += 1
        if self.opened == 1:
            raise KeyError("a bug in the search")
        return super().open(sd_uuid)


@pytest.mark.timeout(30)
def test_an_unexpected_error_while_finding_the_domain_is_reported_and_retried(
        tmp: Path, runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    board = MonitorBoard()
    (tmp / "mnt" / "conn").mkdir(parents=True)
    locator = BuggyLocator(mnt_root=tmp / "mnt", links_dir=tmp / "links", lvm=False)
    sd = FileDomain.create(tmp / "mnt" / "conn", str(uuid.uuid4()), name="d").sd_uuid
    start_monitor(runtime, locator, board, sd)
    wait_for(lambda: events(runtime, sd), 10, what="first result")
    first = events(runtime, sd)[0]
    assert (first["valid"], first["code"]) == (False, 200)  # a failure, not "still finding"
    assert "KeyError" in first["error"]
    assert any(r.levelname == "ERROR" and r.exc_info and "unexpectedly" in r.getMessage()
               for r in caplog.records)  # logged with its traceback
    wait_for(lambda: len(events(runtime, sd)) == 2, 10, what="found on the next search")
    assert events(runtime, sd)[1]["valid"] is True
    assert locator.opened >= 2
