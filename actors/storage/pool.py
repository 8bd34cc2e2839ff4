"""``/storage/pools/<spUUID>/pool``: one connected pool, and its single metadata writer.

The actor keeps the pool as its master domain describes it (:mod:`actors.storage.poolmeta`)
and is the only code on this host that writes pool or domain metadata of the pool: every
write runs on its one writer thread, in order, each re-reading the master first, and every
write and every SPM-side task (volume creation and deletion, attach, detach) passes
:meth:`PoolActor._check_writable` first. Today that check always passes (this host is the
pool's only writer); the lease issue makes it ask the SPM lease, in that one place.

State is rebuilt from the storage, never from memory: at start (and after a restart) the
actor reads the master domain on its writer and, until that succeeds, pool verbs answer
"recovering" (100); a failed read is retried with a backoff.

Monitors: the actor keeps one :class:`~actors.storage.monitor.DomainMonitor` per active domain
running as a sibling under the pool's supervisor (``/storage/pools/<spUUID>/<sdUUID>``). It
asks its supervisor to start and stop them without waiting (this actor never waits on its
supervisor): its one ``pool-<sp>-ask`` thread reads each answer (bounded) and posts it back,
and a monitor that did not start or stop is logged and retried with a backoff, after
re-reading from the actor directory which monitors really run.

Tasks: :meth:`PoolActor.submit` checks a task and tells the task manager to queue it
(:class:`~actors.storage.tasks.SubmitTask`); the caller (an API worker, which may wait)
gets a future that the task manager resolves with the task id once the task is recorded, or
with the error that kept it from being recorded.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pykka

from actors.base import ActorContext, SupervisedActor
from actors.clock import TimerHandle
from actors.directory import ServiceRef, typed_proxy
from actors.storage import poolmeta
from actors.storage.board import MonitorBoard
from actors.storage.locator import DomainLocator
from actors.storage.poolmeta import ACTIVE, PoolMetadata
from actors.storage.spm.board import LeaseBoard
from actors.storage.spm.writerclient import WriterClient
from actors.storage.state import PoolRecord
from actors.storage.taskrequest import AttachDomain, DetachDomain, TaskRequest
from actors.storage.tasks import SubmitTask, TaskManager
from actors.storage.workers import Workers
from actors.supervisor import ChildExists, ChildSpec, SupervisorProxy
from messaging.errors import (
    ActorUnavailable,
    NotSPM,
    Recovering,
    StorageDomainAttached,
    StorageDomainNotActive,
    StorageDomainNotAttached,
    StorageError,
    VdsmError,
)

log = logging.getLogger(__name__)

POOL_CHILD = "pool"
RETRY_INITIAL = 1.0
RETRY_MAX = 30.0
MONITOR_ASK_TIMEOUT = 60.0
"""How long the ask thread waits for the supervisor to start or stop a monitor."""

MonitorSpec = Callable[[str, int], ChildSpec]


@dataclass(frozen=True)
class _Load:
    pass


@dataclass(frozen=True)
class PoolChanged:
    """The SPM's writer changed the pool (an attach or detach task): its new metadata, as
    :meth:`PoolMetadata.to_record` gives it. Told before the task is reported finished, so a
    client that sees the task done also sees its effect."""

    record: dict[str, Any]


@dataclass(frozen=True)
class _Loaded:
    future: Future[PoolMetadata]


@dataclass(frozen=True)
class _Written:
    future: Future[PoolMetadata]
    outer: Future[bool]


@dataclass(frozen=True)
class _MonitorAnswer:
    """The supervisor's answer to starting (or stopping) the monitor of ``sd_uuid``."""

    sd_uuid: str
    starting: bool
    error: Exception | None


@dataclass(frozen=True)
class _Resync:
    pass


def _post(ref: pykka.ActorRef[Any], message: Any) -> None:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass


class PoolActor(SupervisedActor):
    def __init__(self, ctx: ActorContext, *, record: PoolRecord, locator: DomainLocator,
                 tasks: ServiceRef[TaskManager], monitor_spec: MonitorSpec,
                 board: MonitorBoard, lease_board: LeaseBoard, writer: WriterClient,
                 reload_interval: float, write_timeout: float) -> None:
        super().__init__(ctx)
        self.lease_board = lease_board
        self.writer = writer
        self.reload_interval = reload_interval
        self.write_timeout = write_timeout
        self._reload: TimerHandle | None = None
        self.record = record
        self.sp_uuid = record.sp_uuid
        self.locator = locator
        self.tasks = tasks
        self.monitor_spec = monitor_spec
        self.board = board
        self._writer: Workers | None = None
        self._asker: Workers | None = None
        self._monitor_retry = RETRY_INITIAL
        self._resync_due = False
        self._pool: PoolMetadata | None = None
        self._error: VdsmError | None = None
        self._retry = RETRY_INITIAL
        self._waiters: list[Future[PoolMetadata]] = []
        self._pending: set[Future[bool]] = set()
        self._monitors: set[str] = set()
        self._parent: SupervisorProxy | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def setup(self) -> None:
        self._writer = Workers(f"pool-{self.sp_uuid[:8]}", 1)
        self._asker = Workers(f"pool-{self.sp_uuid[:8]}-ask", 1)
        self._monitors = self._running_monitors()
        self.actor_ref.tell(_Load())

    def _running_monitors(self) -> set[str]:
        """The monitors the actor directory says exist under this pool (the truth)."""
        parent_path = self.ctx.path.rsplit("/", 1)[0]
        return {info.path.rsplit("/", 1)[-1]
                for info in self.ctx.runtime.directory.children(parent_path)
                if info.cls == "DomainMonitor"}

    def teardown(self) -> None:
        if self._reload is not None:
            self._reload.cancel()
        for workers in (self._writer, self._asker):
            if workers is not None:
                workers.shutdown()
        gone = ActorUnavailable(path=self.ctx.path, reason="stopped")
        futures: list[Future[Any]] = [*self._waiters, *self._pending]
        for future in futures:
            if not future.done():
                future.set_exception(gone)

    def describe(self) -> dict[str, Any]:
        pool = self._pool
        return {"spUUID": self.sp_uuid, "hostID": self.record.host_id,
                "state": "ready" if pool else ("error" if self._error else "loading"),
                "error": self._error.message if self._error else None,
                "domains": dict(pool.domains) if pool else {},
                "monitors": sorted(self._monitors)}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Load):
            self._load()
        elif isinstance(message, _Loaded):
            self._loaded(message.future)
        elif isinstance(message, _Written):
            self._written(message)
        elif isinstance(message, PoolChanged):
            self._pool = PoolMetadata.from_record(message.record)
            self._reconcile()
        elif isinstance(message, _MonitorAnswer):
            self._monitor_answer(message)
        elif isinstance(message, _Resync):
            self._resync_due = False
            self._monitors = self._running_monitors()
            self._reconcile()
        else:
            return super().on_receive(message)
        return None

    # --- reading the pool ----------------------------------------------------------------

    def _load(self) -> None:
        rec, locator, me = self.record, self.locator, self.actor_ref
        future = self._write_pool().submit(poolmeta.read_pool, locator, rec.sp_uuid,
                                           rec.master_sd, rec.master_version)
        future.add_done_callback(lambda f: _post(me, _Loaded(f)))

    def _loaded(self, future: Future[PoolMetadata]) -> None:
        error = future.exception()
        waiters, self._waiters = self._waiters, []
        if error is None:
            self._pool = future.result()
            self._error = None
            self._retry = RETRY_INITIAL
            log.info("pool %s loaded: master %s, %d domain(s)", self.sp_uuid,
                     self._pool.master, len(self._pool.domains))
            for waiter in waiters:
                waiter.set_result(self._pool)
            self._reconcile()
            self._schedule_reload()
            return
        self._error = error if isinstance(error, VdsmError) else StorageError(reason=repr(error))
        log.error("pool %s cannot be read from its master %s: %s (retrying in %g s)",
                  self.sp_uuid, self.record.master_sd, self._error.message, self._retry)
        for waiter in waiters:
            waiter.set_exception(self._error)
        me = self.actor_ref
        self.ctx.runtime.clock.call_later(self._retry, lambda: _post(me, _Load()))
        self._retry = min(RETRY_MAX, self._retry * 2)

    def _schedule_reload(self) -> None:
        """Read the master again later: the SPM (maybe another host) changes the pool."""
        if self._reload is not None:
            self._reload.cancel()
        me = self.actor_ref
        self._reload = self.ctx.runtime.clock.call_later(self.reload_interval,
                                                         lambda: _post(me, _Load()))

    def when_loaded(self) -> Future[PoolMetadata]:
        """Resolved with the pool once it is read (or with the error of the next attempt)."""
        future: Future[PoolMetadata] = Future()
        if self._pool is not None:
            future.set_result(self._pool)
        else:
            self._waiters.append(future)
        return future

    def _ready(self) -> PoolMetadata:
        if self._pool is None:
            if self._error is not None:
                raise self._error
            raise Recovering()
        return self._pool

    def info(self) -> dict[str, Any]:
        pool = self._ready()
        info = pool.to_wire()
        spm = self.lease_board.get(self.sp_uuid)
        info.update(spUUID=self.sp_uuid, hostID=self.record.host_id, spm_id=spm.spm_id,
                    lver=spm.spm_lver)
        dominfo = {}
        for sd, status in pool.domains:
            entry: dict[str, Any] = {"status": status, "alerts": [], "isoprefix": ""}
            health = self.board.get(sd)
            if health is not None:
                entry.update(valid=health.valid, code=health.code, version=health.version)
            dominfo[sd] = entry
        return {"info": info, "dominfo": dominfo}

    def check_domain(self, sd_uuid: str, *, active: bool = True) -> None:
        """Raise unless ``sd_uuid`` belongs to the pool (and is active when asked)."""
        status = self._ready().statuses.get(sd_uuid)
        if status is None:
            raise StorageDomainNotAttached(sdUUID=sd_uuid, spUUID=self.sp_uuid)
        if active and status != ACTIVE:
            raise StorageDomainNotActive(sdUUID=sd_uuid, spUUID=self.sp_uuid, status=status)

    # --- writing -------------------------------------------------------------------------

    def _check_writable(self) -> None:
        """The one gate of every metadata write and SPM-side task of this pool: this host
        holds the pool's SPM lease (as its keeper last reported on the lease board), its
        writer serves, and the lease has time left. The writer checks again before each
        write (the fence file), so a lease lost after this check still writes nothing."""
        state = self.lease_board.get(self.sp_uuid)
        if not state.may_write():
            raise NotSPM(spUUID=self.sp_uuid, data={
                "spmId": state.spm_id, "spmStatus": state.to_wire()["spmStatus"],
                "reason": state.reason})

    def activate(self, sd_uuid: str) -> Future[bool]:
        self.check_domain(sd_uuid, active=False)
        return self._change("activate", sd_uuid)

    def deactivate(self, sd_uuid: str) -> Future[bool]:
        pool = self._ready()
        self.check_domain(sd_uuid, active=False)
        if sd_uuid == pool.master:
            raise StorageError(reason=f"{sd_uuid} is the master domain of pool {self.sp_uuid}: "
                               "it cannot be deactivated")
        return self._change("deactivate", sd_uuid)

    def _change(self, action: str, sd_uuid: str) -> Future[bool]:
        """Have the SPM's writer change the pool on its master (it re-reads it first)."""
        self._ready()
        self._check_writable()
        writer, timeout, me = self.writer, self.write_timeout, self.actor_ref
        outer: Future[bool] = Future()
        self._pending.add(outer)

        def write() -> PoolMetadata:
            return PoolMetadata.from_record(writer.call("Writer.changePool",
                                              {"action": action, "sdUUID": sd_uuid},
                                              timeout=timeout))

        future = self._write_pool().submit(write)
        future.add_done_callback(lambda f: _post(me, _Written(f, outer)))
        return outer

    def _written(self, message: _Written) -> None:
        self._pending.discard(message.outer)
        error = message.future.exception()
        if error is not None:
            message.outer.set_exception(error)
            return
        self._pool = message.future.result()
        self._reconcile()
        message.outer.set_result(True)

    # --- SPM-side tasks ------------------------------------------------------------------

    def submit(self, request: TaskRequest) -> Future[str]:
        """Check that the task may run on this pool now and hand it to the task manager;
        the future gets its task id once it is recorded (or why it was not)."""
        pool = self._ready()
        sd_uuid = request.sd_uuid
        status = pool.statuses.get(sd_uuid)
        if request.sp_uuid != self.sp_uuid:
            raise StorageError(reason=f"a task of pool {request.sp_uuid} was handed to pool "
                               f"{self.sp_uuid}")
        if isinstance(request, AttachDomain):
            if status is not None:
                raise StorageDomainAttached(sdUUID=sd_uuid, spUUID=self.sp_uuid)
        elif isinstance(request, DetachDomain):
            self.check_domain(sd_uuid, active=False)
            if sd_uuid == pool.master or status == ACTIVE:
                raise StorageError(reason=f"domain {sd_uuid} is "
                                   f"{'the master' if sd_uuid == pool.master else 'active'}: "
                                   "deactivate it before detaching it")
        else:
            self.check_domain(sd_uuid, active=True)
        self._check_writable()
        # Told, not asked: the pool actor never waits on another actor. The caller waits on
        # ``reply``, which the task manager resolves once the task is on disk (or not).
        reply: Future[str] = Future()
        task_id = str(uuid.uuid4())
        try:
            self.tasks.tell(SubmitTask(request.verb, {**request.to_params(), "taskID": task_id},
                                        task_id, reply))
        except pykka.ActorDeadError:
            raise ActorUnavailable(path=self.tasks.path, reason="stopped") from None
        return reply

    # --- monitors ------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Ask the supervisor for one monitor per active domain (without waiting)."""
        pool = self._pool
        if pool is None or self.ctx.supervisor is None:
            return
        wanted = {sd for sd, status in pool.domains if status == ACTIVE}
        if self._parent is None:
            self._parent = typed_proxy(self.ctx.supervisor, SupervisorProxy)
        for sd in sorted(wanted - self._monitors):
            self._watch(self._parent.start_child(self.monitor_spec(sd, self.record.host_id)),
                        sd, starting=True)
        for sd in sorted(self._monitors - wanted):
            self.board.remove(sd)  # out of repoStats now, not when the monitor is gone
            self._watch(self._parent.stop_child(sd), sd, starting=False)
        self._monitors = wanted

    def _watch(self, answer: pykka.Future[Any], sd_uuid: str, *, starting: bool) -> None:
        """Have the ask thread read the supervisor's answer and post it back."""
        me = self.actor_ref

        def read() -> None:
            error: Exception | None = None
            try:
                answer.get(timeout=MONITOR_ASK_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - every answer goes back to the actor
                error = e
            _post(me, _MonitorAnswer(sd_uuid, starting, error))

        assert self._asker is not None
        self._asker.submit(read)

    def _monitor_answer(self, answer: _MonitorAnswer) -> None:
        error = answer.error
        if error is None or (answer.starting and isinstance(error, ChildExists)):
            self._monitor_retry = RETRY_INITIAL
            return
        what = "start" if answer.starting else "stop"
        log.error("pool %s: the monitor of %s did not %s: %s (checking again in %g s)",
                  self.sp_uuid, answer.sd_uuid, what, str(error) or type(error).__name__,
                  self._monitor_retry)
        if self._resync_due:
            return
        self._resync_due = True
        me = self.actor_ref
        self.ctx.runtime.clock.call_later(self._monitor_retry, lambda: _post(me, _Resync()))
        self._monitor_retry = min(RETRY_MAX, self._monitor_retry * 2)

    def _write_pool(self) -> Workers:
        assert self._writer is not None
        return self._writer
