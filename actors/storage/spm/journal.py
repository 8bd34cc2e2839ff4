"""The safety journal: every guarded write and every kill, on the shared storage.

Each writer appends to ``<journal dir>/<host id>.jsonl`` one line when a write begins and one
when it ends; the keeper appends one when it kills its writer. Lines are small and appended
with ``O_APPEND`` (whole lines from one process never interleave). Times are
``CLOCK_MONOTONIC`` seconds: on one machine every host's clock is the same, so the checker's
comparison is exact there, although the lease never relies on it.

:func:`check` verifies the safety properties over all hosts' journals:

1. writes of different lvers never overlap in time (a write lasts from its begin to its end;
   a write without an end lasts until its writer was killed, or forever when nothing says);
2. a host's lvers only grow;
3. no write began at or after its cutoff (the deadline the keeper published: the lease's end
   minus the kill margin), and none ended after the lease itself ended (``expiry``).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

class Journal:
    """Appends journal lines for one process (thread-safe, cheap)."""

    def __init__(self, directory: Path, host_id: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{host_id}.jsonl"
        self.host_id = host_id
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._seq = 0

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def append(self, entry: Mapping[str, Any]) -> None:
        line = json.dumps({"host": self.host_id, "pid": os.getpid(), **entry},
                          separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())

    def close(self) -> None:
        os.close(self._fd)


class BackgroundJournal:
    """A :class:`Journal` written by its own thread: for the keeper, whose loop must never
    wait on the shared storage (a frozen or hung mount would stop its renewals and fencing).
    Entries carry their own times, taken when they are appended, so a late line is still
    exact. The file is opened by that thread too; entries wait in memory until it can."""

    def __init__(self, directory: Path, host_id: int) -> None:
        self._directory = directory
        self._host_id = host_id
        self._queue: queue.SimpleQueue[Mapping[str, Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._thread.start()

    def append(self, entry: Mapping[str, Any]) -> None:
        self._queue.put(dict(entry))

    def _run(self) -> None:
        journal: Journal | None = None
        while True:
            entry = self._queue.get()
            try:
                if journal is None:
                    journal = Journal(self._directory, self._host_id)
                journal.append(entry)
            except OSError as e:
                log.warning("safety journal %s: entry lost: %s", self._directory, e)


@dataclass(frozen=True)
class Write:
    host: int
    pid: int
    seq: int
    lver: int
    start: float
    end: float | None
    deadline: float  # the cutoff: no write may begin at or after it
    what: str
    expiry: float = float("inf")  # the lease's end: no write may end after it


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str


def load(directory: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill: its begin (if any) has no end
    return entries


def writes(entries: Iterable[Mapping[str, Any]],
           kills: Iterable[tuple[int, float]] = ()) -> list[Write]:
    """Pair begins with ends; a write without an end ends when its process was killed.

    ``kills`` adds (pid, time) of kills the journal cannot know (a whole host killed)."""
    begins: dict[tuple[int, int, int], Mapping[str, Any]] = {}
    ends: dict[tuple[int, int, int], float] = {}
    killed: dict[int, float] = dict(kills)
    for e in entries:
        kind = e.get("ev")
        if kind == "begin":
            begins[(e["host"], e["pid"], e["seq"])] = e
        elif kind == "end":
            ends[(e["host"], e["pid"], e["seq"])] = float(e["t"])
        elif kind == "kill":
            pid = int(e["writer"])
            killed[pid] = min(killed.get(pid, float(e["t"])), float(e["t"]))
    out = []
    for key, b in begins.items():
        end = ends.get(key, killed.get(b["pid"]))
        out.append(Write(b["host"], b["pid"], b["seq"], int(b["lver"]), float(b["t"]),
                         end, float(b["deadline"]), str(b.get("what", "")),
                         float(b.get("expiry", b["deadline"]))))
    return sorted(out, key=lambda w: w.start)


def check(all_writes: list[Write]) -> list[Violation]:
    violations: list[Violation] = []
    for w in all_writes:
        if w.start >= w.deadline:
            violations.append(Violation("expired", f"{w} began after its cutoff"))
        if w.end is not None and w.end > w.expiry:
            violations.append(Violation("expired", f"{w} ended after its lease expired"))
    by_lver: dict[int, tuple[float, float]] = {}
    for w in all_writes:
        end = float("inf") if w.end is None else w.end
        lo, hi = by_lver.get(w.lver, (w.start, end))
        by_lver[w.lver] = (min(lo, w.start), max(hi, end))
    latest_end, latest_lver = float("-inf"), 0
    for lver, (start, end) in sorted(by_lver.items()):
        if start < latest_end:
            violations.append(Violation("overlap", f"lver {lver} wrote at {start:.6f} before "
                                        f"lver {latest_lver} stopped at {latest_end:.6f}"))
        if end > latest_end:
            latest_end, latest_lver = end, lver
    last: dict[int, int] = {}
    for w in sorted(all_writes, key=lambda w: (w.host, w.start)):
        if w.lver < last.get(w.host, 0):
            violations.append(Violation("lver", f"host {w.host} wrote lver {w.lver} after "
                                        f"lver {last[w.host]}"))
        last[w.host] = max(last.get(w.host, 0), w.lver)
    return violations
