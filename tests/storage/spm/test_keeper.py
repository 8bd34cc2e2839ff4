"""The keeper and the writer as real processes over a real domain: acquire, write, fence.

Timings are short (lease 3 s, io_timeout 0.5 s, renewals every 0.5 s, vdsmd considered
stalled after 1.5 s without a heartbeat); every wait is bounded by a multiple of them.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.storage import poolmeta
from actors.storage.sd.filedomain import FileDomain
from actors.storage.spm import journal, procutil
from tests.harness import wait_for
from tests.storage.spm.keeperrig import KeeperRig

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[KeeperRig]:
    made = KeeperRig(tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


def _dead(pid: int) -> bool:
    return procutil.start_time(pid) is None


def _check_journal(rig: KeeperRig) -> None:
    found = journal.check(journal.writes(journal.load(rig.journal)))
    assert found == [], found


def test_acquire_then_write_through_the_writer(rig: KeeperRig) -> None:
    keeper = rig.keeper(1)
    keeper.wait_host_id(10)
    keeper.command("acquire")
    state = keeper.wait_spm(10)
    assert state["spm"]["lver"] == 1
    assert keeper.writer_call("Writer.ping")["lver"] == 1
    other = str(uuid.uuid4())
    FileDomain.create(rig.conn, other, name="second")
    pool = keeper.writer_call("Writer.changePool", {"action": "attach", "sdUUID": other})
    assert [other, "Attached"] in pool["domains"]
    read = poolmeta.read_pool(rig.locator, rig.sp_uuid, rig.master, None)
    assert read.statuses[other] == "Attached"
    assert read.lver == 1  # the master carries the writer's fencing token
    assert rig.locator.open(rig.master).read_metadata().get("SPM_LVER") == "1"
    _check_journal(rig)
    assert journal.load(rig.journal), "the guarded write was journaled"


def test_only_one_of_two_keepers_becomes_spm(rig: KeeperRig) -> None:
    a, b = rig.keeper(1), rig.keeper(2)
    a.wait_host_id(10)
    b.wait_host_id(10)
    a.command("acquire")
    b.command("acquire")
    wait_for(lambda: "SPM" in (a.status, b.status) and
             "Contend" not in (a.status, b.status), 20, what="one SPM")
    winner, loser = (a, b) if a.status == "SPM" else (b, a)
    winner.wait_spm(10)
    wait_for(lambda: loser.status == "Free" and "held by host" in loser.state["spm"]["reason"],
             10, what="the loser to be refused")
    # the loser learns who holds it at its next observation
    wait_for(lambda: loser.state["spm"]["spmId"] == winner.config.host_id, 5,
             what="the loser to see the winner")


def test_a_silent_vdsmd_loses_the_role_and_its_writer(rig: KeeperRig) -> None:
    keeper = rig.keeper(1)
    keeper.wait_host_id(10)
    keeper.command("acquire")
    keeper.wait_spm(10)
    writer = keeper.writer_pid
    keeper.beating.clear()  # vdsmd stalls
    wait_for(lambda: keeper.status == "Free", 10, what="the keeper to give the role up")
    assert "did not answer" in keeper.state["spm"]["reason"]
    wait_for(lambda: _dead(writer), 5, what="the writer to die")
    keeper.beating.set()
    wait_for(lambda: not keeper.state["spm"]["releasing"], 5, what="the release")
    # released: another host takes it at once, without waiting for a lease to expire
    other = rig.keeper(2)
    other.wait_host_id(10)
    started = time.monotonic()
    other.command("acquire")
    other.wait_spm(10)
    assert time.monotonic() - started < rig.config(2).lease
    assert other.state["spm"]["lver"] == 2
    _check_journal(rig)


def test_killing_the_keeper_kills_its_writer(rig: KeeperRig) -> None:
    keeper = rig.keeper(1)
    keeper.wait_host_id(10)
    keeper.command("acquire")
    keeper.wait_spm(10)
    writer = keeper.writer_pid
    keeper.signal(signal.SIGKILL)
    wait_for(lambda: _dead(writer), 5, what="the writer to die with its keeper")


def test_a_stopped_keepers_writer_fences_itself(rig: KeeperRig) -> None:
    keeper = rig.keeper(1)
    keeper.wait_host_id(10)
    keeper.command("acquire")
    keeper.wait_spm(10)
    writer = keeper.writer_pid
    keeper.signal(signal.SIGSTOP)  # no renewal, no fencer: only the writer's own watch
    try:
        wait_for(lambda: _dead(writer), rig.config(1).lease + 10,
                 what="the writer to kill itself once its fence's deadline passed")
        other = str(uuid.uuid4())
        FileDomain.create(rig.conn, other, name="late")
        read = poolmeta.read_pool(rig.locator, rig.sp_uuid, rig.master, None)
        assert other not in read.statuses
    finally:
        keeper.signal(signal.SIGCONT)
    wait_for(lambda: keeper.status == "Free", 20, what="the keeper to see it lost the role")
    _check_journal(rig)


def test_a_dead_spm_is_replaced_after_its_lease_ran_out(rig: KeeperRig) -> None:
    a, b = rig.keeper(1), rig.keeper(2)
    a.wait_host_id(10)
    b.wait_host_id(10)
    a.command("acquire")
    a.wait_spm(10)
    writer = a.writer_pid
    a.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: _dead(writer), 5, what="the writer to die")

    def contend() -> bool:  # as a management layer does: spmStart until it sticks
        if b.status == "Free":
            b.command("acquire")
        return b.status == "SPM" and b.writer_ready

    wait_for(contend, 60, interval=0.2, what="host 2 to take over")
    took = time.monotonic() - killed
    cfg = rig.config(2)
    assert b.state["spm"]["lver"] == 2
    # not before the dead holder's lease could have run out (safety); how fast it is, the
    # chaos benchmark measures (a loaded test machine only bounds it loosely)
    assert took > cfg.lease, took
    _check_journal(rig)


def test_a_restarted_keeper_takes_its_host_id_back_at_once(rig: KeeperRig) -> None:
    # A long lease: watching the old record would take over 30 s, taking it back ~1 s.
    first = rig.keeper(1, lease=30.0)
    first.wait_host_id(30)
    generation = first.state["hostId"]["generation"]
    first.signal(signal.SIGKILL)
    first.proc.wait(5)
    first.close()  # its PAIR socket would take the new keeper's only place (as a link's does)
    started = time.monotonic()
    second = rig.keeper(1, lease=30.0)
    second.wait_host_id(30)
    assert second.state["hostId"]["generation"] == generation + 1
    # no watch of the record: the previous keeper was checked dead by its pid file
    assert time.monotonic() - started < 20.0
    assert (rig.config(1).run / "keeper.pid").exists()
