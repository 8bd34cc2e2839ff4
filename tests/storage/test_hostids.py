"""HostIds: whether a host id is alive, from what the pools' keepers last reported.

The keeper's reports are plain data on the LeaseBoard; here they are written as a keeper
writes them (its ``snapshot()`` keys), with a clock the test moves. The keepers themselves
observing real hosts are in tests/integration/test_fencing.py (the policy test).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from actors.config import SpmConfig
from actors.directory import ActorDirectory, ActorInfo
from actors.storage.hostids import HostIds
from actors.storage.spm.board import LeaseBoard, LeaseState
from actors.storage.state import PoolRecord, PoolRecords

pytestmark = pytest.mark.timeout(30)

SPM = SpmConfig(lease_time=3.0, renew_interval=0.5, io_timeout=0.5, agent_timeout=2.0,
                heartbeat_interval=0.2)
SP, MASTER, MEMBER = (str(uuid.uuid4()) for _ in range(3))


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.now = 1000.0
        self.records = PoolRecords(tmp / "pools")
        self.records.put(PoolRecord(SP, 1, MASTER, 1))
        self.board = LeaseBoard()
        self.directory = ActorDirectory()
        self.ids = HostIds(records=self.records, lease_board=self.board,
                           directory=self.directory, spm=SPM, clock=lambda: self.now)

    def report(self, *, live: tuple[int, ...] = (1, 2), own: str = "live",
               since: float = 900.0, observed: float | None = None) -> None:
        detail: dict[str, Any] = {
            "ev": "state", "hostId": {"state": own}, "liveHosts": list(live),
            "observingSince": since, "observedAt": self.now if observed is None else observed}
        self.board.put(LeaseState(SP, status="Free", detail=detail))

    def state(self, sd: str, host_id: int) -> str:
        return self.ids.liveness(sd, host_id).state


def test_alive_dead_and_unknown(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.state(MASTER, 2) == "unknown"  # no report yet
    rig.report()
    answer = rig.ids.liveness(MASTER, 2)
    assert (answer.state, answer.sp_uuid) == ("alive", SP)
    assert "renewed within the last 3.5 s" in answer.reason
    assert rig.state(MASTER, 3) == "dead"
    assert rig.state(MASTER, 1) == "alive"  # this host's own id
    assert rig.state(str(uuid.uuid4()), 2) == "unknown"  # a domain of no pool of ours


def test_a_domain_of_the_pool_answers_while_its_monitor_runs(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.report()
    assert rig.state(MEMBER, 2) == "unknown"
    rig.directory.put(ActorInfo(path=f"/storage/pools/{SP}/{MEMBER}", cls="DomainMonitor",
                                state="running", ref=None, supervisor=f"/storage/pools/{SP}"))
    assert rig.state(MEMBER, 2) == "alive"


def test_no_answer_without_a_current_view(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.report(own="acquiring")
    assert "does not hold its own host id" in rig.ids.liveness(MASTER, 2).reason
    rig.report(observed=rig.now - 10)  # the keeper's reads of the ids area fail
    assert rig.ids.liveness(MASTER, 2).state == "unknown"
    rig.report(since=rig.now - 1)  # the keeper just started watching: a dead host looks alive
    young = rig.ids.liveness(MASTER, 2)
    assert young.state == "unknown" and "for 1 s only" in young.reason
    rig.report(since=rig.now - 3.6)
    assert rig.state(MASTER, 2) == "alive"
