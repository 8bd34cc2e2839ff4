"""The job store: every job's record, in memory for readers, on disk for a restart.

Thread-safe: jobs change on the threads that run them (a migration's own thread, a VM
operation's GuestCaller thread, the API's finisher threads) and are read inline on the API's
socket thread (``Host.getJobs``, ``VM.getMigrationStatus``). A change of status is written
(``<state_dir>/jobs/<jobID>.json``, atomically) before it is visible and published as
``|jobs|status|<jobID>``; progress is kept in memory only (a restart re-reads the world
anyway), published by whoever samples it. A record that cannot be written (a full state
filesystem) raises a storage error when a job is *added*, so the verb fails and nothing
runs; later changes that cannot be written are logged and kept in memory (the job's own
outcome matters more than its file). Finished jobs are forgotten ``keep`` seconds after
they ended (at the next change of any job).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from actors.jobs.record import ENDED, Job
from actors.storage import fileutil
from messaging.errors import InvalidParams, StorageError

log = logging.getLogger(__name__)

MAX_RECORD = 1 << 20


class EventSink(Protocol):
    def publish(self, topic: str, payload: dict[str, Any]) -> None: ...


class JobStore:
    def __init__(self, directory: Path, events: EventSink, *, keep: float = 3600.0) -> None:
        self.directory = directory
        self._events = events
        self._keep = keep
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def _path(self, job_id: str) -> Path:
        return self.directory / f"{uuid.UUID(job_id)}.json"

    # --- at start ----------------------------------------------------------------------------

    def load(self) -> list[Job]:
        """Read the records on disk (a restart); the unfinished ones, oldest first."""
        found: dict[str, Job] = {}
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError as e:
            log.error("cannot list %s: %s", self.directory, e)
            paths = []
        for path in paths:
            try:
                with path.open("rb") as f:
                    job = Job.from_json(json.loads(f.read(MAX_RECORD)))
            except (OSError, KeyError, TypeError, ValueError) as e:
                log.error("ignoring the bad job record %s: %s", path, e)
                continue
            if path.stem == job.job_id:
                found[job.job_id] = job
        with self._lock:
            self._jobs.update(found)
        self._prune()
        return sorted((j for j in found.values() if not j.finished), key=lambda j: j.created)

    # --- writers -----------------------------------------------------------------------------

    def add(self, job_type: str, vm_id: str, *, job_id: str | None = None, message: str = "",
            details: dict[str, Any] | None = None) -> Job:
        """Record a new job (pending); InvalidParams if ``job_id`` is taken, a storage error
        if the record cannot be written (then there is no job)."""
        job = Job(job_id or str(uuid.uuid4()), job_type, vm_id, message=message,
                  details=dict(details or {}))
        with self._lock:
            if job.job_id in self._jobs:
                raise InvalidParams("jobID", f"a job {job.job_id} exists already")
            self._write(job)
            self._jobs[job.job_id] = job
        log.info("job %s (%s of VM %s) recorded", job.job_id, job_type, vm_id)
        self._publish(job)
        return job

    def update(self, job_id: str, *, persist: bool = True, publish: bool = False,
               **changes: Any) -> Job:
        """Change a job; its status changes are persisted (best effort) and published, and
        so is any change with ``publish`` (progress). Details are merged into the job's. A
        finished job changes no more, but for details learnt after its end (a migration's
        downtime)."""
        with self._lock:
            current = self._jobs.get(job_id)
            if current is None:
                raise KeyError(job_id)
            if current.finished and set(changes) != {"details"}:
                return current
            if "details" in changes:
                changes["details"] = {**current.details, **changes["details"]}
            job = current.with_changes(**changes) if not current.finished else \
                replace(current, details=changes["details"])
            self._jobs[job_id] = job
            if persist or job.status != current.status:
                try:
                    self._write(job)
                except StorageError as e:
                    log.error("job %s: cannot record %s: %s", job_id, job.status, e.message)
        if job.status != current.status:
            log.info("job %s (%s of VM %s): %s%s", job_id, job.job_type, job.vm_id,
                     job.status, f": {job.message}" if job.message else "")
            self._publish(job)
            if job.finished:
                self._prune()
        elif publish and job is not current:
            self._publish(job)
        return job

    def _write(self, job: Job) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps(job.to_json(), sort_keys=True).encode() + b"\n"
        fileutil.write_atomic(self._path(job.job_id), data, mode=0o600)

    def _publish(self, job: Job) -> None:
        self._events.publish(f"|jobs|status|{job.job_id}", job.event())

    def _prune(self) -> None:
        horizon = time.time() - self._keep
        with self._lock:
            old = [j.job_id for j in self._jobs.values()
                   if j.status in ENDED and j.ended is not None and j.ended < horizon]
            for job_id in old:
                del self._jobs[job_id]
        for job_id in old:
            try:
                fileutil.remove(self._path(job_id))
            except OSError as e:
                log.warning("cannot remove the record of job %s: %s", job_id, e)

    # --- readers -----------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self, *, types: set[str] | None = None, ids: set[str] | None = None,
             vm_id: str | None = None) -> list[Job]:
        """The jobs that match, oldest first."""
        with self._lock:
            found = [j for j in self._jobs.values()
                     if (types is None or j.job_type in types)
                     and (ids is None or j.job_id in ids)
                     and (vm_id is None or j.vm_id == vm_id)]
        return sorted(found, key=lambda j: j.created)

    def last(self, vm_id: str, types: set[str]) -> Job | None:
        """The VM's newest job of one of ``types``."""
        found = self.jobs(types=types, vm_id=vm_id)
        return found[-1] if found else None

    def unfinished(self, vm_id: str) -> list[Job]:
        return [j for j in self.jobs(vm_id=vm_id) if not j.finished]
