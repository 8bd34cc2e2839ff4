"""The task manager: long storage operations as tasks that outlive a vdsmd restart.

One actor, ``/storage/tasks``, owns the task records (:mod:`actors.storage.taskstore`) and a
bounded pool of worker threads; the work itself (:mod:`actors.storage.taskwork`) runs on
those threads, never on the actor's. The actor decides every state change, persists it and
publishes it as ``|jobs|status|<taskID>``; a worker only reports what happened (a message)
and journals its steps' progress straight into the store, durably before each step starts.

- ``submit`` queues a task and returns its id at once; the pool actor, which must not wait
  on this actor, tells it a :class:`SubmitTask` instead, whose ``reply`` future gets the id
  once the task is recorded, or the error that kept it from being recorded (a full state
  filesystem: :class:`~messaging.errors.NoSpace`): a client never gets the id of a task that
  does not exist. A request that gave up waiting cancels the reply first, and a cancelled
  hand-over is dropped, so nothing runs that the client was told failed.
- ``stop_task`` aborts it: its :class:`~actors.storage.command.Aborter` kills the running command
  (qemu-img, ...) and the steps already started are undone; the task ends ``failure`` (404).
- ``revert_task`` undoes what a failed or stopped task still left (an undo that failed before).
- When the actor stops (vdsmd stops) the commands of running tasks are killed; at
  start-up every task a restart interrupted is reverted (or, for a deletion, finished) on
  the workers; a revert that fails for a transient reason (a pool still reconnecting, storage
  not answering) is retried with a backoff.
- A state change decided in a told message (a worker's report, a recovery) that the state
  filesystem refuses is kept pending and retried with a backoff: the actor never fails over
  it, and what clients read is always what a restarted vdsmd would find on disk.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import pykka

from actors.base import ActorContext, SupervisedActor
from actors.clock import TimerHandle
from actors.storage.command import Aborter
from actors.storage.steps import Progress
from actors.storage.taskstore import (
    ABORTING,
    CLEAN_FAILURE,
    CLEAN_SUCCESS,
    FAILURE,
    FINISHED,
    QUEUED,
    RECOVERING,
    RUNNING,
    SUCCESS,
    UNFINISHED,
    TaskRecord,
    TaskStore,
)
from actors.storage.taskwork import Builder
from actors.storage.workers import Workers
from messaging.errors import (
    ActorUnavailable,
    NotSPM,
    StorageError,
    TaskAborted,
    TaskNotFinished,
    TaskStateError,
    VdsmError,
)

log = logging.getLogger(__name__)

RECOVERY_ATTEMPTS = 6
RECOVERY_BACKOFF = 1.0
SAVE_RETRY_INITIAL = 1.0
SAVE_RETRY_MAX = 30.0
PROGRESS_INTERVAL = 1.0
"""Seconds between two progress events of a task that counts bytes."""


@dataclass(frozen=True)
class SubmitTask:
    """Queue a task with the id the sender chose; ``reply`` gets the id once the task is
    recorded, or the error that kept it from being recorded. Told, never asked."""

    verb: str
    params: dict[str, Any]
    task_id: str
    reply: Future[str]


@dataclass(frozen=True)
class RecoverPool:
    """This host became the SPM of ``sp_uuid``: finish or undo what earlier SPMs left in
    the pool's task journals, and record the outcomes (told by the lease actor)."""

    sp_uuid: str


@dataclass(frozen=True)
class _Recovered:
    sp_uuid: str
    outcomes: tuple[dict[str, Any], ...]
    error: VdsmError | None = None


@dataclass(frozen=True)
class _ProgressTick:
    """Publish the byte progress of running tasks."""


@dataclass(frozen=True)
class _Started:
    task_id: str


@dataclass(frozen=True)
class _Ended:
    task_id: str
    reverting: bool
    error: VdsmError | None = None
    undo_pending: int = 0


@dataclass(frozen=True)
class _Recover:
    task_id: str
    attempt: int = 0


@dataclass(frozen=True)
class _Flush:
    """Retry persisting the state changes the state filesystem refused."""


def _post(ref: pykka.ActorRef[Any], message: Any) -> None:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        log.info("task manager gone: %r dropped (the next start recovers the task)", message)


def _failure(e: BaseException) -> VdsmError:
    if isinstance(e, VdsmError):
        return e
    log.error("task failed with an unexpected error", exc_info=e)
    return VdsmError(f"internal error: {e!r}")


def _run(ref: pykka.ActorRef[Any], store: TaskStore, record: TaskRecord, builder: Builder,
         abort: Aborter) -> None:
    """A task's work, on a worker thread."""
    _post(ref, _Started(record.task_id))
    last_started = 0

    def journal(progress: Progress) -> None:
        nonlocal last_started
        if progress.started:
            last_started = progress.started
        done, total = abort.bytes.snapshot()
        if total:
            progress = replace(progress, bytes_done=done, bytes_total=total)
        store.update(record.task_id, progress=progress)

    try:
        builder(record.params).run(abort, journal)
    except Exception as e:  # noqa: BLE001 - every failure becomes the task's result
        undo_failed = any(n.startswith("revert:") for n in getattr(e, "__notes__", ()))
        _post(ref, _Ended(record.task_id, False, _failure(e),
                          last_started if undo_failed else 0))
        return
    _post(ref, _Ended(record.task_id, False))


def _revert(ref: pykka.ActorRef[Any], record: TaskRecord, builder: Builder,
            started: int) -> None:
    """Undo a task's first ``started`` steps, on a worker thread."""
    try:
        builder(record.params).revert(started)
    except Exception as e:  # noqa: BLE001 - every failure becomes the task's result
        _post(ref, _Ended(record.task_id, True, _failure(e), started))
        return
    _post(ref, _Ended(record.task_id, True))


class TaskManager(SupervisedActor):
    def __init__(self, ctx: ActorContext, *, store: TaskStore, builders: Mapping[str, Builder],
                 workers: int,
                 spm_recovery: Callable[[str], list[dict[str, Any]]] | None = None) -> None:
        """``spm_recovery(spUUID)``: the outcomes of a pool's journal recovery by its new
        SPM (the writer's ``Writer.recoverTasks``; blocks, run on a worker)."""
        super().__init__(ctx)
        self.store = store
        self.builders = dict(builders)
        self.spm_recovery = spm_recovery
        self.size = workers
        self._workers: Workers | None = None
        self._aborters: dict[str, Aborter] = {}
        self._attempts: dict[str, int] = {}
        self._unsaved: dict[str, dict[str, Any]] = {}
        """Changes decided in told messages that could not be persisted yet, by task id."""
        self._save_retry = SAVE_RETRY_INITIAL
        self._progress_timer: TimerHandle | None = None
        self._bytes_published: dict[str, tuple[int, int]] = {}

    def setup(self) -> None:
        self._workers = Workers("storage-task", self.size)
        for record in self.store.load():
            if record.state in UNFINISHED:
                self.actor_ref.tell(_Recover(record.task_id))

    def teardown(self) -> None:
        if self._progress_timer is not None:
            self._progress_timer.cancel()
        # Kill the commands of running tasks (they run in their own session and would
        # outlive vdsmd) without waiting: the journal lets the next start finish the undo.
        for abort in self._aborters.values():
            abort.abort("vdsmd is stopping")
        if self._workers is not None:
            self._workers.shutdown()

    def describe(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for record in self.store.all():
            states[record.state] = states.get(record.state, 0) + 1
        busy = self._workers.busy() if self._workers else 0
        return {"tasks": states, "workers": self.size, "busy": busy,
                "unsaved": sorted(self._unsaved),
                "progressTicks": self._progress_timer is not None}

    # --- verbs -------------------------------------------------------------------------

    def submit(self, verb: str, params: dict[str, Any], task_id: str | None = None) -> str:
        """Queue a task of kind ``verb`` (with ``task_id`` when the caller chose it); its id."""
        if verb not in self.builders:
            log.error("refusing a task of unknown kind %s", verb)
            raise ValueError(f"no task kind {verb}")
        try:
            record = self._set(TaskRecord(task_id or str(uuid.uuid4()), verb, params))
        except StorageError as e:
            log.error("task %s (%s) not queued: %s", task_id or "-", verb, e.message)
            raise
        abort = Aborter(record.task_id)
        self._aborters[record.task_id] = abort
        self._tick_progress()
        self.store.attach_meter(record.task_id, abort.bytes)
        self._pool().submit(_run, self.actor_ref, self.store, record, self.builders[verb], abort)
        log.info("task %s (%s) queued", record.task_id, verb)
        return record.task_id

    def _hand_over(self, message: SubmitTask) -> None:
        """A :class:`SubmitTask` from the pool actor: its ``reply`` gets the outcome."""
        if not message.reply.set_running_or_notify_cancel():
            log.warning("task %s (%s) not queued: its request gave up waiting", message.task_id,
                        message.verb)
            return
        try:
            task_id = self.submit(message.verb, message.params, task_id=message.task_id)
        except Exception as e:  # every outcome goes to the requester
            if not isinstance(e, VdsmError):
                log.error("task %s (%s) not queued", message.task_id, message.verb, exc_info=e)
            message.reply.set_exception(e)
        else:
            message.reply.set_result(task_id)

    def task_status(self, task_id: str) -> dict[str, Any]:
        return self.store.get(task_id).to_wire()

    def task_statuses(self) -> dict[str, dict[str, Any]]:
        return {r.task_id: r.to_wire() for r in self.store.all()}

    def running(self, sp_uuid: str) -> list[str]:
        """The ids of this pool's SPM tasks that have not finished."""
        return [r.task_id for r in self.store.all()
                if not r.finished and r.params.get("spUUID") == sp_uuid
                and r.verb != "StoragePool.spmStart"]

    def stop_task(self, task_id: str) -> bool:
        record = self.store.get(task_id)
        abort = self._aborters.get(task_id)
        if record.state not in (QUEUED, RUNNING, ABORTING) or abort is None:
            raise TaskStateError(taskID=task_id, action="stop", state=record.state)
        abort.abort("stopped by Task.stop")
        if record.state != ABORTING:
            self._set(record, state=ABORTING)
        return True

    def revert_task(self, task_id: str) -> bool:
        record = self.store.get(task_id)
        if record.state != FINISHED or record.result not in (FAILURE, CLEAN_FAILURE):
            what = record.state if record.state != FINISHED else f"{record.state}/{record.result}"
            raise TaskStateError(taskID=task_id, action="revert", state=what)
        self._start_revert(record, record.undo_pending, record.message)
        return True

    def clear_task(self, task_id: str) -> bool:
        record = self.store.get(task_id)
        if not record.finished:
            raise TaskNotFinished(taskID=task_id, state=record.state)
        self.store.remove(task_id)
        self._aborters.pop(task_id, None)
        self._unsaved.pop(task_id, None)
        return True

    # --- messages from workers and from itself --------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _ProgressTick):
            self._publish_progress()
        elif isinstance(message, SubmitTask):
            self._hand_over(message)
        elif isinstance(message, _Started):
            record = self.store.get(message.task_id)
            if record.state == QUEUED:
                self._save(record, state=RUNNING)
        elif isinstance(message, _Ended):
            self._ended(message)
        elif isinstance(message, _Recover):
            self._recover(message)
        elif isinstance(message, _Flush):
            self._flush()
        elif isinstance(message, RecoverPool):
            self._recover_pool(message.sp_uuid)
        elif isinstance(message, _Recovered):
            self._recovered(message)
        else:
            return super().on_receive(message)
        return None

    def _ended(self, message: _Ended) -> None:
        record = self.store.get(message.task_id)
        self._aborters.pop(record.task_id, None)
        error = message.error
        if not message.reverting:
            if error is None:
                self._save(record, state=FINISHED, result=SUCCESS, code=0, message="done")
            else:
                if isinstance(error, TaskAborted) or record.state == ABORTING:
                    error = TaskAborted(taskID=record.task_id, reason=error.message)
                self._save(record, state=FINISHED, result=FAILURE, code=error.code,
                           message=error.message, undo_pending=message.undo_pending)
            log.info("task %s (%s) finished: %s", record.task_id, record.verb,
                     "success" if error is None else error.message)
            return
        attempt = self._attempts.pop(record.task_id, None)
        if error is None:
            note = "reverted" if not record.message else f"{record.message}; reverted"
            self._save(record, state=FINISHED, result=CLEAN_SUCCESS, message=note,
                       undo_pending=0)
        elif attempt is not None and attempt + 1 < RECOVERY_ATTEMPTS and (
                error.retryable or isinstance(error, ActorUnavailable | NotSPM)):
            delay = RECOVERY_BACKOFF * 2**attempt
            log.warning("recovering task %s failed (%s): retrying in %g s", record.task_id,
                        error.message, delay)
            me, retry = self.actor_ref, _Recover(record.task_id, attempt + 1)
            self.ctx.runtime.clock.call_later(delay, lambda: _post(me, retry))
        else:
            self._save(record, state=FINISHED, result=CLEAN_FAILURE, code=error.code,
                       message=f"revert failed: {error.message}",
                       undo_pending=message.undo_pending)

    def _recover(self, message: _Recover) -> None:
        """Undo a task that a restart interrupted (or retry doing so)."""
        record = self.store.get(message.task_id)
        if message.attempt == 0 and record.state not in UNFINISHED:
            return
        started = max(record.progress.started, record.undo_pending)
        self._attempts[record.task_id] = message.attempt
        note = "interrupted by a restart of vdsmd"
        self._start_revert(record, started, note if message.attempt == 0 else record.message,
                           told=True)

    def _start_revert(self, record: TaskRecord, started: int, note: str, *,
                      told: bool = False) -> None:
        """Undo ``started`` steps on a worker; ``told``: decided in a told message (a failed
        write is then retried rather than raised)."""
        builder = self.builders.get(record.verb)
        if builder is None:
            self._save(record, state=FINISHED, result=CLEAN_FAILURE, code=400,
                       message=f"{note}; unknown task kind {record.verb}: cannot revert")
            return
        if told:
            self._save(record, state=RECOVERING, message=note)
        else:
            record = self._set(record, state=RECOVERING, message=note)
        self._pool().submit(_revert, self.actor_ref, record, builder, started)

    def _recover_pool(self, sp_uuid: str) -> None:
        recovery, me = self.spm_recovery, self.actor_ref
        if recovery is None:
            return

        def run() -> None:
            try:
                outcomes = tuple(recovery(sp_uuid))
            except VdsmError as e:
                _post(me, _Recovered(sp_uuid, (), e))
                return
            _post(me, _Recovered(sp_uuid, outcomes))

        self._pool().submit(run)

    def _recovered(self, message: _Recovered) -> None:
        if message.error is not None:
            log.error("pool %s: recovering the task journals failed: %s", message.sp_uuid,
                      message.error.message)
            return
        for outcome in message.outcomes:
            task_id = str(outcome["taskID"])
            changes = {"state": FINISHED, "result": str(outcome["result"]),
                       "code": int(outcome.get("code", 0)),
                       "message": str(outcome.get("message", ""))}
            try:
                record = self.store.get(task_id)
            except VdsmError:
                record = TaskRecord(task_id, str(outcome["verb"]),
                                    {"spUUID": message.sp_uuid, "taskID": task_id})
                try:
                    record = self._set(record)
                except StorageError as e:
                    log.error("task %s recovered by the SPM but not recorded: %s", task_id,
                              e.message)
                    continue
            if record.finished and record.result in (CLEAN_SUCCESS, CLEAN_FAILURE):
                continue
            self._save(record, **changes)
            log.info("task %s (%s) recovered by this SPM: %s", task_id, record.verb,
                     changes["message"])

    def _tick_progress(self) -> None:
        """Running tasks that count bytes publish their progress once per interval: the tick
        runs from a submission until a tick finds no task left (an idle agent has none)."""
        if self._progress_timer is None:
            me = self.actor_ref
            self._progress_timer = self.ctx.runtime.clock.call_every(
                PROGRESS_INTERVAL, lambda: _post(me, _ProgressTick()))

    def _publish_progress(self) -> None:
        """``|jobs|status|<taskID>`` for each running task whose byte count moved."""
        published = self._bytes_published
        for task_id in set(published) - set(self._aborters):
            del published[task_id]
        if not self._aborters and self._progress_timer is not None:
            self._progress_timer.cancel()
            self._progress_timer = None
            return
        for task_id, abort in self._aborters.items():
            count = abort.bytes.snapshot()
            if not count[1] or published.get(task_id) == count:
                continue
            published[task_id] = count
            try:
                record = self.store.get(task_id)
            except VdsmError:
                continue
            if record.state == RUNNING:
                self.ctx.runtime.events.publish(f"|jobs|status|{task_id}", record.event())

    # --- helpers -----------------------------------------------------------------------

    def _pool(self) -> Workers:
        assert self._workers is not None
        return self._workers

    def _set(self, record: TaskRecord, **changes: Any) -> TaskRecord:
        """Persist, then publish; raises (a storage error) when the write is refused."""
        pending = self._unsaved.pop(record.task_id, None)
        if pending is not None:
            changes = {**pending, **changes}
        try:
            record = self.store.put(record) if not changes else self.store.update(
                record.task_id, **changes)
        except StorageError:
            if pending is not None:
                self._unsaved[record.task_id] = pending
            raise
        self.ctx.runtime.events.publish(f"|jobs|status|{record.task_id}", record.event())
        return record

    def _save(self, record: TaskRecord, **changes: Any) -> None:
        """:meth:`_set` for a change decided in a told message: when the state filesystem
        refuses it, keep it pending (clients keep reading the state on disk) and retry."""
        try:
            self._set(record, **changes)
        except StorageError as e:
            first = not self._unsaved
            self._unsaved[record.task_id] = {**self._unsaved.get(record.task_id, {}),
                                             **changes}
            log.error("task %s (%s): cannot record %s: %s (retrying)", record.task_id,
                      record.verb, changes, e.message)
            if first:
                self._schedule_flush()

    def _schedule_flush(self) -> None:
        me, delay = self.actor_ref, self._save_retry
        self._save_retry = min(SAVE_RETRY_MAX, self._save_retry * 2)
        self.ctx.runtime.clock.call_later(delay, lambda: _post(me, _Flush()))

    def _flush(self) -> None:
        for task_id in list(self._unsaved):
            try:
                record = self.store.get(task_id)
            except VdsmError:
                self._unsaved.pop(task_id, None)  # cleared meanwhile
                continue
            try:
                self._set(record)
            except StorageError:
                continue
            log.info("task %s: state recorded after all", task_id)
        if self._unsaved:
            self._schedule_flush()
        else:
            self._save_retry = SAVE_RETRY_INITIAL

