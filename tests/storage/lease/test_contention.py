"""Real processes contending for the SPM lease: one owner per lver, and a contender stopped
with SIGSTOP anywhere in acquire never becomes a second owner."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.storage.lease.delta import DeltaLease
from actors.storage.lease.errors import LeaseHeld
from actors.storage.lease.observer import IdsObserver
from actors.storage.lease.paxos import PaxosLease
from actors.storage.lease.records import LeaderState
from actors.storage.lease.timing import LeaseTiming
from messaging.errors import StorageError
from tests.storage.lease.conftest import Store

ROOT = Path(__file__).resolve().parents[3]
TIMING = LeaseTiming(lease=3.0, renew_interval=0.5, io_timeout=1.0)
TIMING_ARGS = ["--lease", "3", "--renew", "0.5", "--io-timeout", "1"]


class Contender:
    def __init__(self, store: Store, host_id: int, mode: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.storage.lease.contender", str(store.root),
             str(host_id), mode, "--sector-size", str(store.sector_size), *extra],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def next_event(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded by the test's timeout, then the kill
        assert line, f"the contender exited ({self.proc.poll()}) without reporting"
        event: dict[str, Any] = json.loads(line)
        return event

    def outcome(self) -> dict[str, Any]:
        """The next event other than the renewal thread's ``lost``."""
        while (event := self.next_event())["ev"] == "lost":
            pass
        return event

    def events(self, timeout: float) -> list[dict[str, Any]]:
        out, _ = self.proc.communicate(timeout=timeout)
        return [json.loads(line) for line in out.splitlines()]

    def state(self) -> str:
        return Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def contenders() -> Iterator[list[Contender]]:
    started: list[Contender] = []
    yield started
    for c in started:
        c.kill()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_concurrent_processes_one_owner_per_lver(store: Store,
                                                 contenders: list[Contender]) -> None:
    for host_id in range(1, 5):
        contenders.append(Contender(store, host_id, "rounds", *TIMING_ARGS, "--wins", "8",
                                    "--seconds", "90", "--io-timeout", "2", "--lease", "6",
                                    "--renew", "1"))
    wins = []
    for host_id, c in enumerate(contenders, 1):
        events = c.events(timeout=200)
        assert c.proc.returncode == 0, events
        assert not [e for e in events if e["ev"] in ("error", "lost")], events
        wins += [dict(e, host=host_id) for e in events if e["ev"] == "won"]
    assert len(wins) >= 16  # many rounds really happened (8 per contender unless starved)
    lvers = [w["lver"] for w in wins]
    assert len(set(lvers)) == len(lvers), "an lver was won twice"
    ordered = sorted(wins, key=lambda w: w["t0"])
    assert [w["lver"] for w in ordered] == sorted(lvers), "lvers did not grow with time"
    for before, after in itertools.pairwise(ordered):
        held_until = min(before["t1"], before["deadline"])
        assert held_until <= after["t0"], f"{before} and {after} overlap"
    spm = PaxosLease(store.leases, "SPM", 8, 1, TIMING, sector_size=store.sector_size,
                     hosts=8)
    try:
        leader = spm.read_owner()
        assert leader is not None and leader.lver == max(lvers)
        assert leader.state is LeaderState.RELEASED
    finally:
        spm.close()


class Parent:
    """Host 2, in the test process; its host id renewed on a thread, as a keeper does."""

    def __init__(self, store: Store) -> None:
        self.delta = DeltaLease(store.ids, 2, "host-2", TIMING, sector_size=store.sector_size)
        self.delta.acquire()
        self.stop = threading.Event()
        self.renewer = threading.Thread(target=self._renew)
        self.renewer.start()
        self.observer = IdsObserver(store.ids, TIMING, sector_size=store.sector_size, hosts=8)
        self.spm = PaxosLease(store.leases, "SPM", 2, self.delta.generation, TIMING,
                              sector_size=store.sector_size, hosts=8,
                              host_deadline=lambda: self.delta.deadline)
        self.owner = (2, self.delta.generation)

    def _renew(self) -> None:
        while not self.stop.wait(TIMING.renew_interval):
            try:
                self.delta.renew()
            except StorageError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.renewer.join(10)
        self.delta.close()
        self.observer.close()
        self.spm.close()


def stopped(c: Contender, timeout: float = 30) -> bool:
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if c.state() == "T":
            return True
        time.sleep(0.01)
    return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stage", ["checked", "phase1"])
def test_sigstopped_contender_continued_after_another_won_is_refused(
        store: Store, contenders: list[Contender], stage: str) -> None:
    parent = Parent(store)
    try:
        p = Contender(store, 1, "once", *TIMING_ARGS, "--stop-at", stage)
        contenders.append(p)
        assert p.next_event()["ev"] == "ready"
        assert p.next_event() == {"ev": "stopping", "stage": stage}
        assert stopped(p)
        parent.observer.poll()
        assert parent.spm.acquire(parent.observer) == 1
        os.kill(p.proc.pid, signal.SIGCONT)
        outcome = p.outcome()
        assert outcome == {"ev": "refused", "owner": list(parent.owner), "lver": 1}
        leader = parent.spm.read_owner()
        assert leader is not None
        assert (leader.lver, leader.owner, leader.state) == (1, parent.owner, LeaderState.HELD)
    finally:
        parent.close()


@pytest.mark.timeout(120)
def test_winner_stopped_before_its_leader_write_is_replaced_and_never_writes(
        store512: Store, contenders: list[Contender]) -> None:
    """P's value is chosen for lver 1 and P is stopped before writing the leader. Host 2
    finds P's value, waits until P's host id is proven dead, and takes lver 2. P, continued,
    finds its host lease expired: it writes no leader and returns no lver."""
    parent = Parent(store512)
    try:
        p = Contender(store512, 1, "once", *TIMING_ARGS, "--stop-at", "committed")
        contenders.append(p)
        assert p.next_event()["ev"] == "ready"
        assert p.next_event()["ev"] == "stopping"
        assert stopped(p)
        parent.observer.poll()
        with pytest.raises(LeaseHeld) as e:
            parent.spm.acquire(parent.observer)  # P's value was chosen, and P looks alive
        assert e.value.lver == 1 and e.value.owner[0] == 1
        assert parent.spm.read_owner() is None
        deadline = time.monotonic() + 30
        lver = None
        while lver is None and time.monotonic() < deadline:
            try:
                lver = parent.spm.acquire(parent.observer, wait=TIMING.renew_interval)
            except LeaseHeld:
                continue
        assert lver == 2
        os.kill(p.proc.pid, signal.SIGCONT)
        assert p.outcome() == {"ev": "expired", "lver": None}
        leader = parent.spm.read_owner()
        assert leader is not None
        assert (leader.lver, leader.owner, leader.state) == (2, parent.owner, LeaderState.HELD)
    finally:
        parent.close()
