"""Slots: at most ``limit`` jobs of a kind at once on this host, the rest queued in order.

A job's own thread calls :meth:`Slots.acquire` and waits (first come, first served) until a
slot is free, its ``cancelled`` event is set, or its wait times out; :meth:`Slots.release`
frees the slot. :meth:`Slots.try_acquire` never waits (a destination refusing an incoming
migration beyond its limit). Thread-safe; never used on an actor's thread for waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

POLL = 0.2  # how often a waiter looks at its cancelled event


class Slots:
    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._cond = threading.Condition()
        self._holders: list[str] = []
        self._queue: deque[str] = deque()

    def acquire(self, owner: str, cancelled: threading.Event,
                timeout: float | None = None) -> bool:
        """Wait for a slot for ``owner``; False if cancelled or timed out (not queued then)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._queue.append(owner)
            try:
                while not (self._queue[0] == owner and len(self._holders) < self.limit):
                    if cancelled.is_set():
                        return False
                    wait = POLL if deadline is None else min(POLL, deadline - time.monotonic())
                    if wait <= 0:
                        return False
                    self._cond.wait(wait)
                self._holders.append(owner)
                return True
            finally:
                self._queue.remove(owner)
                self._cond.notify_all()

    def try_acquire(self, owner: str) -> bool:
        with self._cond:
            if self._queue or len(self._holders) >= self.limit:
                return False
            self._holders.append(owner)
            return True

    def adopt(self, owner: str) -> None:
        """Count ``owner`` as running, over the limit if need be (a job that already runs,
        found again after a restart)."""
        with self._cond:
            if owner not in self._holders:
                self._holders.append(owner)

    def release(self, owner: str) -> None:
        with self._cond:
            if owner in self._holders:
                self._holders.remove(owner)
            self._cond.notify_all()

    def running(self) -> int:
        with self._cond:
            return len(self._holders)

    def position(self, owner: str) -> int | None:
        """``owner``'s place in the queue (1 is next), None if it is not waiting."""
        with self._cond:
            return list(self._queue).index(owner) + 1 if owner in self._queue else None

    def describe(self) -> dict[str, Any]:
        with self._cond:
            return {"limit": self.limit, "running": list(self._holders),
                    "queued": list(self._queue)}


class Gates:
    """One :class:`Slots` of limit 1 per name, made on first use: e.g. this host's
    migrations take turns, in order, to ask one destination for its preparation."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._lock = threading.Lock()
        self._gates: dict[str, Slots] = {}

    def __getitem__(self, name: str) -> Slots:
        with self._lock:
            gate = self._gates.get(name)
            if gate is None:
                gate = self._gates[name] = Slots(f"{self._what} {name}", 1)
            return gate
