"""What the SPM's writer does for vdsmd: every SPM-side change of a pool, guarded.

Each handler runs on one of the writer's worker threads. Every write passes the fence guard
first (refused unless this host still holds the lease), so a writer whose lease ran out stops
by itself even if the keeper could not kill it. Pool changes are serialised by a lock (the
pool's metadata is one record: one change at a time, each re-reading the master first).
Tasks journal their progress on the master domain (:mod:`actors.storage.spm.taskjournal`) so
that the next SPM can finish or undo what a lost lease interrupted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from actors.storage import poolmeta, taskwork
from actors.storage.command import Aborter
from actors.storage.guard import WriteGuard
from actors.storage.locator import DomainLocator
from actors.storage.mailbox.areas import MailArea
from actors.storage.mailbox.format import MAX_MESSAGES, REPLIES, Message, Slot
from actors.storage.poolmeta import ACTIVE, ATTACHED, PoolMetadata
from actors.storage.sd.filedomain import FileDomain
from actors.storage.spm.taskjournal import MasterTasks, TaskEntry
from actors.storage.steps import Progress
from actors.storage.usage import VolumeUsage
from messaging.errors import StorageError, StorageNotSupported, TaskAborted, VdsmError
from messaging.server import Binding

log = logging.getLogger(__name__)


class WriterOps:
    def __init__(self, *, locator: DomainLocator, guard: WriteGuard, usage: VolumeUsage,
                 sp_uuid: str, master_sd: str, lver: int, io_timeout: float = 5.0,
                 mail_hosts: int = 64) -> None:
        self.locator = locator
        self.guard = guard
        self.sp_uuid = sp_uuid
        self.master_sd = master_sd
        self.lver = lver
        self.io_timeout = io_timeout
        self.mail_hosts = mail_hosts
        self._pool_lock = threading.Lock()
        self._mail_lock = threading.Lock()
        self._inbox_area: MailArea | None = None
        self._aborters: dict[str, Aborter] = {}
        self._progress: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.journals = MasterTasks(locator, master_sd, guard)
        env = taskwork.TaskEnv(locator=locator, pool_call=self._pool_call, usage=usage,
                               guard=guard)
        self.builders = taskwork.builders(env)

    # --- pool --------------------------------------------------------------------------

    def _change(self, action: str, sd_uuid: str) -> PoolMetadata:
        changes: dict[str, Callable[[DomainLocator, PoolMetadata], PoolMetadata]] = {
            "attach": lambda loc, p: poolmeta.attach(loc, p, sd_uuid),
            "detach": lambda loc, p: poolmeta.detach(loc, p, sd_uuid),
            "activate": lambda loc, p: poolmeta.set_status(loc, p, sd_uuid, ACTIVE),
            "deactivate": lambda loc, p: poolmeta.set_status(loc, p, sd_uuid, ATTACHED),
        }
        with self._pool_lock:
            current = replace(poolmeta.read_pool(self.locator, self.sp_uuid, self.master_sd,
                                                 None), lver=self.lver)  # stamp the token
            with self.guard.write(f"pool {action} {sd_uuid}"):
                return changes[action](self.locator, current)

    def _pool_call(self, sp_uuid: str, action: str, sd_uuid: str) -> None:
        if sp_uuid != self.sp_uuid:
            raise StorageError(reason=f"this writer serves pool {self.sp_uuid}, not {sp_uuid}")
        self._change(action, sd_uuid)

    def change_pool(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._change(params["action"], params["sdUUID"]).to_record()

    # --- tasks -------------------------------------------------------------------------

    def run_task(self, params: dict[str, Any]) -> dict[str, Any]:
        task_id, verb = params["taskID"], params["verb"]
        builder = self.builders.get(verb)
        if builder is None:
            raise StorageError(reason=f"no task kind {verb}")
        work = builder(params["params"])
        entry = TaskEntry(task_id, verb, params["params"])
        abort = Aborter(task_id)
        with self._lock:
            self._aborters[task_id] = abort
        self.journals.put(entry)

        started = 0

        def journal(progress: Progress) -> None:
            nonlocal started
            with self._lock:
                self._progress[task_id] = progress.to_json()
            if progress.started and progress.started != started:
                started = progress.started
                self.journals.put(TaskEntry(task_id, verb, params["params"], started))

        try:
            work.run(abort, journal)
        except Exception as e:
            undo_failed = any(n.startswith("revert:") for n in getattr(e, "__notes__", ()))
            try:
                if undo_failed:  # the next recovery retries the undo
                    self.journals.put(TaskEntry(task_id, verb, params["params"], 0, started))
                else:
                    self.journals.remove(task_id)
            except VdsmError as journal_error:  # e.g. the lease is gone: the journal stays
                log.warning("task %s: its journal was not updated: %s", task_id,
                            journal_error.message)
            raise
        finally:
            with self._lock:
                self._aborters.pop(task_id, None)
                self._progress.pop(task_id, None)
        self.journals.remove(task_id)
        done, total = abort.bytes.snapshot()
        result: dict[str, Any] = {"taskID": task_id, "bytesDone": done, "bytesTotal": total}
        if verb in ("StorageDomain.attach", "StorageDomain.detach"):
            pool = poolmeta.read_pool(self.locator, self.sp_uuid, self.master_sd, None)
            result["pool"] = pool.to_record()
        return result

    def revert_task(self, params: dict[str, Any]) -> dict[str, Any]:
        builder = self.builders.get(params["verb"])
        if builder is None:
            raise StorageError(reason=f"no task kind {params['verb']}")
        builder(params["params"]).revert(params["started"])
        self.journals.remove(params["taskID"])
        return {"taskID": params["taskID"]}

    def task_progress(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """How far a running task got (its steps), None when it does not run here."""
        with self._lock:
            progress = self._progress.get(params["taskID"])
            abort = self._aborters.get(params["taskID"])
        if progress is None:
            return None
        if abort is not None:
            done, total = abort.bytes.snapshot()
            progress = {**progress, "bytesDone": done, "bytesTotal": total}
        return progress

    def abort_task(self, params: dict[str, Any]) -> bool:
        with self._lock:
            abort = self._aborters.get(params["taskID"])
        if abort is None:
            raise TaskAborted(taskID=params["taskID"], reason="it is not running here")
        abort.abort("stopped by Task.stop")
        return True

    def recover_tasks(self, _params: dict[str, Any]) -> list[dict[str, Any]]:
        """Undo (or finish, for deletions) every task a previous SPM left in the journal."""
        outcomes = []
        for entry in self.journals.pending():
            builder = self.builders.get(entry.verb)
            outcome: dict[str, Any] = {"taskID": entry.task_id, "verb": entry.verb}
            try:
                if builder is None:
                    raise StorageError(reason=f"unknown task kind {entry.verb}")
                builder(entry.params).revert(max(entry.started, entry.undo_pending))
                self.journals.remove(entry.task_id)
                outcome.update(result="cleanSuccess", code=0,
                               message="interrupted by the loss of the SPM; reverted")
            except VdsmError as e:
                outcome.update(result="cleanFailure", code=e.code,
                               message=f"interrupted by the loss of the SPM; revert failed: "
                               f"{e.message}")
            log.info("recovered task %s (%s): %s", entry.task_id, entry.verb,
                     outcome["message"])
            outcomes.append(outcome)
        return outcomes

    # --- volumes -------------------------------------------------------------------------

    def extend_volume(self, params: dict[str, Any]) -> dict[str, Any]:
        backend = self.locator.open(params["sdUUID"])
        with self.guard.write(f"extend {params['volUUID']} to {params['size']}"):
            info = backend.extend_volume(params["imgUUID"], params["volUUID"], params["size"])
        return info.to_wire()

    def serve_mail(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Extend what one host asked for, then write its inbox slot (all guarded)."""
        host = params["hostID"]
        keep = [Message.from_wire(m) for m in params["keep"]]
        replies = []
        for request in (Message.from_wire(m) for m in params["requests"]):
            started = time.monotonic()
            try:
                info = self.extend_volume({"sdUUID": request.sd_uuid,
                                           "imgUUID": request.img_uuid,
                                           "volUUID": request.vol_uuid, "size": request.size})
                reply = request.reply(size=int(info["apparentsize"]),
                                      latency_us=_us(time.monotonic() - started))
            except VdsmError as e:
                reply = request.reply(size=0, latency_us=_us(time.monotonic() - started),
                                      code=e.code, text=e.message)
            replies.append(reply)
        slot = Slot(host, REPLIES, tuple((keep + replies)[-MAX_MESSAGES:]), epoch=self.lver,
                    written_ns=time.monotonic_ns())
        with self._mail_lock, self.guard.write(f"mailbox replies to host {host}"):
            self._inbox().write_slot(slot)
        return [r.to_wire() for r in replies]

    def _inbox(self) -> MailArea:
        if self._inbox_area is None:
            backend = self.locator.open(self.master_sd)
            if not isinstance(backend, FileDomain):
                raise StorageNotSupported(reason="the mailbox needs a file-based master domain "
                                          "here (LVM areas cannot be activated)")
            self._inbox_area = MailArea(backend.layout.dom_md / "inbox", kind=REPLIES,
                                        slots=self.mail_hosts, io_timeout=self.io_timeout,
                                        write=True)
        return self._inbox_area

    def ping(self, _params: dict[str, Any]) -> dict[str, Any]:
        return {"lver": self.lver, "pid": os.getpid(), "spUUID": self.sp_uuid}

    def bindings(self) -> dict[str, Binding]:
        return {
            "Writer.ping": Binding(self.ping),
            "Writer.changePool": Binding(self.change_pool),
            "Writer.runTask": Binding(self.run_task),
            "Writer.revertTask": Binding(self.revert_task),
            "Writer.abortTask": Binding(self.abort_task),
            "Writer.taskProgress": Binding(self.task_progress, inline=True),
            "Writer.recoverTasks": Binding(self.recover_tasks),
            "Writer.extendVolume": Binding(self.extend_volume),
            "Writer.serveMail": Binding(self.serve_mail),
        }


def _us(seconds: float) -> int:
    return max(0, int(seconds * 1e6))
