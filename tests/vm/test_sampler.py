"""The stats sampler in-process, over a scripted connection: re-issue after a stuck call,
confirmation of partial records, results on the board."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import libvirt
import pykka
import pytest

from actors.base import ActorContext, Runtime
from actors.clock import Clock
from actors.directory import ActorDirectory
from actors.vm.board import VmBoard, VmView
from actors.vm.sampler import VmStatsSampler
from actors.vm.status import VmStatus
from tests.harness import wait_for
from tests.libvirthelp import handle_over

A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
RUNNING = {"state.state": libvirt.VIR_DOMAIN_RUNNING, "balloon.current": 131072}
FULL = {**RUNNING, "balloon.rss": 200000, "cpu.time": 1}
PARTIAL = dict(RUNNING)  # the monitor part was skipped: no balloon.rss


@dataclass(frozen=True)
class Dom:
    uuid: str
    conn: Any = None

    def UUIDString(self) -> str:
        return self.uuid

    def connect(self) -> Any:
        return self.conn


@dataclass
class Conn:
    """Answers bulk calls from ``bulk`` (one entry per call, the last one repeats) and
    confirmations from ``confirm``; a call whose answer is None blocks until ``release``."""

    bulk: list[dict[str, dict[str, Any]] | None]
    confirm: dict[str, dict[str, Any]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[str] = field(default_factory=list)

    def getAllDomainStats(self, _stats: int, _flags: int) -> list[tuple[Dom, Any]]:
        self.calls.append("bulk")
        answer = self.bulk.pop(0) if len(self.bulk) > 1 else self.bulk[0]
        if answer is None:
            self.release.wait(30)
            return []
        return [(Dom(k, self), v) for k, v in answer.items()]

    def domainListGetStats(self, doms: list[Dom], _s: int, _f: int) -> list[tuple[Dom, Any]]:
        self.calls.append("confirm")
        return [(d, self.confirm[d.uuid]) for d in doms]


@pytest.fixture
def board() -> VmBoard:
    board = VmBoard()
    board.put(VmView(A, "a", VmStatus.UP))
    board.put(VmView(B, "b", VmStatus.UP))
    return board


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    clock = Clock()
    clock.start()
    try:
        yield Runtime(events=_Sink(), clock=clock, directory=ActorDirectory())
    finally:
        pykka.ActorRegistry.stop_all(block=True, timeout=10)
        clock.stop()


class _Sink:
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        pass


def start(runtime: Runtime, board: VmBoard, conn: Conn) -> pykka.ActorRef[VmStatsSampler]:
    handle = handle_over(conn, "test:///scripted")  # a scripted connection for libvirt's
    ref: pykka.ActorRef[VmStatsSampler] = VmStatsSampler.start(
        ActorContext(path="/vms/sampler", runtime=runtime), libvirt=handle, board=board,
        interval=0.1, timeout=0.3, confirm_delay=0.05,
    )
    return ref


def monitor(board: VmBoard, vm_id: str) -> int | None:
    stats = board.full_stats(vm_id)[0]
    return int(stats["monitorResponse"]) if "statsAge" in stats else None


@pytest.mark.timeout(20)
def test_a_job_busy_for_a_moment_is_not_reported(runtime: Runtime, board: VmBoard) -> None:
    conn = Conn(bulk=[{A: PARTIAL, B: FULL}, {A: FULL, B: FULL}], confirm={A: FULL})
    ref = start(runtime, board, conn)
    wait_for(lambda: monitor(board, A) == 0 and monitor(board, B) == 0, 10)
    detail = ref.proxy().describe().get(timeout=5)
    assert detail["confirmations"] >= 1 and detail["confirmedStuck"] == 0
    assert conn.calls[:2] == ["bulk", "confirm"]


@pytest.mark.timeout(20)
def test_a_stuck_call_is_reissued_and_the_stuck_vm_reported(
    runtime: Runtime, board: VmBoard
) -> None:
    # The first bulk call hangs on A's monitor; the next ones skip A (partial record).
    conn = Conn(bulk=[None, {A: PARTIAL, B: FULL}], confirm={A: PARTIAL})
    try:
        ref = start(runtime, board, conn)
        wait_for(lambda: monitor(board, A) == -1, 10)
        assert monitor(board, B) == 0
        detail = ref.proxy().describe().get(timeout=5)
        assert detail["timeouts"] >= 1 and detail["confirmedStuck"] >= 1
        assert detail["calls"]["abandonedTotal"] == 1
        conn.confirm = {A: FULL}
        conn.bulk = [{A: FULL, B: FULL}]
        wait_for(lambda: monitor(board, A) == 0, 10)
    finally:
        conn.release.set()


@pytest.mark.timeout(20)
def test_other_domains_are_ignored(runtime: Runtime, board: VmBoard) -> None:
    other = "cccccccc-0000-4000-8000-000000000003"
    conn = Conn(bulk=[{A: FULL, other: PARTIAL}])
    start(runtime, board, conn)
    wait_for(lambda: monitor(board, A) == 0, 10)
    assert "confirm" not in conn.calls  # a partial record of another agent's VM
    assert board.full_stats(other) == []
