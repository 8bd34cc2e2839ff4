"""``--wait`` and ``Task wait``: follow a task to its end, showing its progress.

The task is polled with ``Task.getStatus`` (events can be lost; a poll cannot), and each
change of its state, step or bytes is printed as one line on stderr::

    task 5d0e... Volume.create: running, step 4/6 (data), 512 MiB of 1 GiB (50%)

The exit code is the task's outcome: 0 when it succeeded, else the code of its error (see
:mod:`.exitcodes`; a task that failed without a code: 5).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from . import exitcodes

POLL_INTERVAL = 0.25
POLL_MAX = 2.0

Call = Callable[[str, dict[str, Any]], Any]


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


def follow(call: Call, task_id: str, out: TextIO, *, timeout: float | None = None,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the task until it is finished (its last status), printing each change on
    ``out``; TimeoutError after ``timeout`` seconds (None: no limit)."""
    deadline = None if timeout is None else clock() + timeout
    interval, last = POLL_INTERVAL, ""
    while True:
        status: dict[str, Any] = call("Task.getStatus", {"taskID": task_id})
        line = describe(status)
        if line != last:
            print(line, file=out, flush=True)
            last, interval = line, POLL_INTERVAL
        else:
            interval = min(POLL_MAX, interval * 1.5)
        if status.get("taskState") == "finished":
            return status
        if deadline is not None and clock() + interval > deadline:
            raise TimeoutError(f"task {task_id} did not finish within {timeout:g} s "
                               f"(it goes on: vdsm-client Task wait {task_id})")
        sleep(interval)
