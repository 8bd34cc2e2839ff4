"""``--wait``, ``Task wait`` and ``Job wait``: follow a task or a job to its end, showing its
progress.

A task is polled with ``Task.getStatus``, a job (a VM operation: hibernation, restore,
migration) with ``Host.getJobs`` (events can be lost; a poll cannot). Each change of its
state, step, percent or bytes is printed as one line on stderr::

    task 5d0e... Volume.create: running, step 4/6 (data), 512 MiB of 1 GiB (50%)
    job 8f1c... hibernate of VM 3b2a...: running (saving), 42%, 12 MiB so far
    job 9a0d... restore of VM 3b2a...: running (restoring), 50%, 24 MiB of 48 MiB

A job that ends is forgotten ``[jobs] keep_finished`` after it ended (at once when that is
0): when the poll no longer finds it, its end is read from the ``|jobs|status|<jobID>``
event (the caller subscribes before the job starts), else its outcome is unknown.

The exit code is the outcome: 0 when it succeeded (a task's ``success``, a job's ``done``),
else the code of its error (see :mod:`.exitcodes`; one that failed without a code: 5).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from . import exitcodes

POLL_INTERVAL = 0.25
POLL_MAX = 2.0
JOB_ENDED = ("done", "failed", "aborted")

Call = Callable[[str, dict[str, Any]], Any]
#: the last ``|jobs|status|<jobID>`` event received for the job, if any
LastEvent = Callable[[], dict[str, Any] | None]


class NoSuchJob(LookupError):
    """The agent lists no such job: never started here, or forgotten since it ended."""


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def describe(status: dict[str, Any]) -> str:
    """One line about a task's status."""
    parts = [f"task {status.get('taskID', '?')} {status.get('verb', '')}".rstrip() + ":",
             str(status.get("taskState", "?"))]
    if status.get("taskResult"):
        parts[-1] += f" ({status['taskResult']})"
    progress = status.get("progress") or {}
    total = progress.get("total") or 0
    if total and status.get("taskState") != "finished":
        parts[-1] += f", step {progress.get('started', 0)}/{total}"
        if progress.get("current"):
            parts[-1] += f" ({progress['current']})"
    done, whole = progress.get("bytesDone"), progress.get("bytesTotal")
    if whole:
        parts[-1] += f", {size(done or 0)} of {size(whole)} ({100 * (done or 0) // whole}%)"
    if status.get("taskState") == "finished" and status.get("message"):
        parts[-1] += f": {status['message']}"
    return " ".join(parts)


def outcome(status: dict[str, Any]) -> int:
    """The exit code of a finished task."""
    if status.get("taskResult") == "success":
        return exitcodes.OK
    code = int(status.get("code") or 0)
    return exitcodes.for_error(code) if code else exitcodes.FAILED


def describe_job(job: dict[str, Any]) -> str:
    """One line about a job (an entry of ``Host.getJobs``)."""
    line = f"job {job.get('id', '?')} {job.get('job_type', '?')} of VM {job.get('vmID', '?')}:"
    state = str(job.get("status", "?"))
    error = job.get("error") or {}
    if state == "done":
        return f"{line} done, {int(job.get('progress') or 100)}%{_bytes(job)}"
    if state in JOB_ENDED:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        state += f" (code {code})" if code else ""
        return f"{line} {state}: {message or job.get('description') or 'no reason given'}"
    if job.get("description"):
        state += f" ({job['description']})"
    state += f", {int(job.get('progress') or 0)}%{_bytes(job)}"
    if job.get("dataRemaining"):
        state += f", {size(float(job['dataRemaining']))} to go"
    if job.get("bandwidth"):
        state += f" at {job['bandwidth']} MiB/s"
    return f"{line} {state}"


def _bytes(job: dict[str, Any]) -> str:
    """A hibernation's or a restore's bytes of its memory image written or read."""
    if job.get("bytesDone") is None:
        return ""
    total = job.get("bytesTotal")
    return f", {size(float(job['bytesDone']))}" + \
        (f" of {size(float(total))}" if total else " so far")


def job_outcome(job: dict[str, Any]) -> int:
    """The exit code of an ended job."""
    if job.get("status") == "done":
        return exitcodes.OK
    error = job.get("error")
    code = int(error.get("code") or 0) if isinstance(error, dict) else 0
    return exitcodes.for_error(code) if code else exitcodes.FAILED


def follow(call: Call, task_id: str, out: TextIO, *, timeout: float | None = None,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the task until it is finished (its last status), printing each change on
    ``out``; TimeoutError after ``timeout`` seconds (None: no limit)."""
    def fetch() -> dict[str, Any]:
        status: dict[str, Any] = call("Task.getStatus", {"taskID": task_id})
        return status

    return _poll(fetch, describe, lambda s: s.get("taskState") == "finished", out,
                 what=f"task {task_id}", again=f"vdsm-client Task wait {task_id}",
                 timeout=timeout, clock=clock, sleep=sleep)


def job_from_event(event: dict[str, Any]) -> dict[str, Any]:
    """A job as ``Host.getJobs`` lists it, from its ``|jobs|status|`` event."""
    job: dict[str, Any] = {"id": event.get("jobID"), "job_type": event.get("job_type"),
           "vmID": event.get("vmID"), "status": event.get("status"),
           "progress": event.get("progress", 0), "description": event.get("message", ""),
           **{k: event[k] for k in ("bytesDone", "bytesTotal") if k in event}}
    if job["status"] in ("failed", "aborted"):
        job["error"] = {"code": event.get("code", 0), "message": event.get("message", "")}
    return job


def follow_job(call: Call, job_id: str, out: TextIO, *, timeout: float | None = None,
               last_event: LastEvent | None = None, started: bool = False,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the job until it ended (its last entry of ``Host.getJobs``, or its last event
    when it was forgotten meanwhile), printing each change on ``out``; NoSuchJob when the
    agent does not list it, TimeoutError after ``timeout`` seconds (None: no limit).
    ``started``: the caller started the job (subscribed to its events first), so even a job
    never listed may have ended and been forgotten before the first poll."""
    seen = started

    def fetch() -> dict[str, Any]:
        nonlocal seen
        jobs = call("Host.getJobs", {"job_ids": [job_id]})
        job = jobs.get(job_id) if isinstance(jobs, dict) else None
        event = None if isinstance(job, dict) or last_event is None or not seen \
            else last_event()
        if event is not None and event.get("status") in JOB_ENDED:
            return job_from_event(event)
        if not isinstance(job, dict):
            raise NoSuchJob(
                f"job {job_id} is no longer listed by Host.getJobs and no event of its end "
                "came (--events): its outcome is unknown (a job that ended is forgotten "
                "after [jobs] keep_finished)" if seen else
                f"no job {job_id} on this host (Host.getJobs lists the jobs running and "
                "those ended within [jobs] keep_finished; a storage task: vdsm-client Task "
                "wait)")
        seen = True
        return job

    return _poll(fetch, describe_job, lambda j: j.get("status") in JOB_ENDED, out,
                 what=f"job {job_id}", again=f"vdsm-client Job wait {job_id}",
                 timeout=timeout, clock=clock, sleep=sleep)


def _poll(fetch: Callable[[], dict[str, Any]], line_of: Callable[[dict[str, Any]], str],
          ended: Callable[[dict[str, Any]], bool], out: TextIO, *, what: str, again: str,
          timeout: float | None, clock: Callable[[], float],
          sleep: Callable[[float], None]) -> dict[str, Any]:
    deadline = None if timeout is None else clock() + timeout
    interval, last = POLL_INTERVAL, ""
    while True:
        status = fetch()
        line = line_of(status)
        if line != last:
            print(line, file=out, flush=True)
            last, interval = line, POLL_INTERVAL
        else:
            interval = min(POLL_MAX, interval * 1.5)
        if ended(status):
            return status
        if deadline is not None and clock() + interval > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout:g} s "
                               f"(it goes on: {again})")
        sleep(interval)
