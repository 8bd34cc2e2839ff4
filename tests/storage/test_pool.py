"""The pool actor in-process under its own supervisor, over a real file domain."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pykka
import pytest
import zmq

from actors.base import ActorContext, Ping, Runtime
from actors.directory import ServiceRef
from actors.storage import pool as pool_module
from actors.storage import poolmeta
from actors.storage.board import MonitorBoard
from actors.storage.handle import VolumeHandle
from actors.storage.locator import DomainLocator
from actors.storage.monitor import DomainMonitor
from actors.storage.pool import PoolActor
from actors.storage.sd.filedomain import FileDomain
from actors.storage.spm.board import LeaseBoard, LeaseState
from actors.storage.spm.writerclient import WriterClient
from actors.storage.state import PoolRecord
from actors.storage.taskrequest import DeleteVolume
from actors.supervisor import ChildSpec, RestartPolicy, Supervisor
from messaging.errors import ActorUnavailable
from tests.harness import wait_for


def new_id() -> str:
    return str(uuid.uuid4())


def one_domain_pool(tmp: Path) -> tuple[DomainLocator, str, str]:
    """A pool whose master is a new localfs domain under ``tmp``: (locator, sp, sd)."""
    locator = DomainLocator(mnt_root=tmp / "mnt", links_dir=tmp / "links", lvm=False)
    (tmp / "mnt").mkdir()
    (tmp / "local").mkdir()
    (tmp / "mnt" / "local").symlink_to(tmp / "local")
    sd = FileDomain.create(tmp / "local", new_id(), name="d").sd_uuid
    sp = new_id()
    poolmeta.create_pool(locator, sp_uuid=sp, name="p", master_sd=sd, master_version=1,
                         domain_list=[sd])
    return locator, sp, sd


def start_pool(runtime: Runtime, locator: DomainLocator, sp: str, sd: str, *,
               board: MonitorBoard, monitor_spec: Callable[[str, int], ChildSpec],
               lease_board: LeaseBoard | None = None) -> pykka.ActorRef[Supervisor]:
    record = PoolRecord(sp, 1, sd, 1)
    leases = lease_board or LeaseBoard()
    writer = WriterClient(board=leases, sp_uuid=sp, context=zmq.Context.instance())
    pool = ChildSpec("pool", lambda ctx: PoolActor.start(
        ctx, record=record, locator=locator, tasks=ServiceRef(runtime.directory, "/none"),
        monitor_spec=monitor_spec, board=board, lease_board=leases, writer=writer,
        reload_interval=5.0, write_timeout=10.0), cls="PoolActor")
    sup = Supervisor.start(ActorContext(f"/storage/pools/{sp}", runtime),
                           policy=RestartPolicy(5, 60, 0.05, 0.1), children=[pool])
    sup.ask(Ping(), timeout=10)
    return sup


@pytest.mark.timeout(60)
def test_a_monitor_that_does_not_start_is_logged_and_started_later(
        tmp: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(pool_module, "RETRY_INITIAL", 0.1)
    locator, sp, sd = one_domain_pool(tmp)
    board = MonitorBoard()
    refusals = [2]

    def monitor_spec(sd_uuid: str, host_id: int) -> ChildSpec:
        def factory(ctx: ActorContext) -> pykka.ActorRef[DomainMonitor]:
            # A test double for a monitor that cannot be built (a bug, a resource limit):
            # nothing real makes DomainMonitor.start fail on demand.
            if refusals[0]:
                refusals[0] -= 1
                raise RuntimeError("injected: no monitor this time")
            return DomainMonitor.start(ctx, sd_uuid=sd_uuid, host_id=host_id, interval=0.5,
                                       timeout=2, locator=locator, board=board)

        return ChildSpec(sd_uuid, factory, cls="DomainMonitor")

    start_pool(runtime, locator, sp, sd, board=board, monitor_spec=monitor_spec)
    health = wait_for(lambda: (h := board.get(sd)) is not None and h.actual and h, 30,
                      what="the monitor started at last and checked the domain")
    assert health.valid is True
    assert refusals == [0]
    failures = [r for r in caplog.records
                if r.levelname == "ERROR" and "did not start" in r.getMessage()]
    assert len(failures) == 2, [r.getMessage() for r in failures]
    assert "injected" in failures[0].getMessage()
    pool = ServiceRef[PoolActor](runtime.directory, f"/storage/pools/{sp}/pool").ref().proxy()
    assert pool.describe().get(timeout=5)["monitors"] == [sd]


@pytest.mark.timeout(60)
def test_a_task_for_a_stopped_task_manager_is_refused_at_once(
        tmp: Path, runtime: Runtime) -> None:
    locator, sp, sd = one_domain_pool(tmp)
    board = MonitorBoard()

    def no_monitor(sd_uuid: str, host_id: int) -> ChildSpec:
        return ChildSpec(sd_uuid, lambda ctx: DomainMonitor.start(
            ctx, sd_uuid=sd_uuid, host_id=host_id, interval=5, timeout=2, locator=locator,
            board=board), cls="DomainMonitor")

    # A test double for the lease: this test is about the hand-over to the task manager, so
    # the board says this host is the SPM (the keeper and its writer are tested elsewhere).
    leases = LeaseBoard()
    leases.put(LeaseState(sp, status="SPM", lver=1, deadline=time.monotonic() + 3600,
                          writer_endpoint="ipc:///nonexistent", writer_ready=True))
    start_pool(runtime, locator, sp, sd, board=board, monitor_spec=no_monitor,
               lease_board=leases)
    pool = ServiceRef[PoolActor](runtime.directory, f"/storage/pools/{sp}/pool").ref().proxy()
    wait_for(lambda: pool.describe().get(timeout=5)["state"] == "ready", 20, what="loaded")
    with pytest.raises(ActorUnavailable):
        pool.submit(DeleteVolume(VolumeHandle(sp, sd, new_id(), new_id()))).get(timeout=5)
