"""The SPM side of a pool's mailbox: serve every host's requests, once each.

While this host is SPM, a :class:`MailServer` thread reads the first ``hosts`` outbox slots in
one O_DIRECT read every ``poll`` seconds (and does nothing more when the bytes did not change).
Each request it has not served yet goes to ``serve`` (the writer: it extends the volume and
writes that host's inbox slot with the replies, all under the SPM lease) on a small pool of
threads, one host at a time. What was served is known from the replies in the inbox slots,
which live on the shared storage: a new SPM reads them when it starts serving, so a request
that a previous SPM already answered is not done again, and one it had not answered is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from actors.storage.mailbox.areas import MailArea, OutboxPoller
from actors.storage.mailbox.format import (
    MAX_MESSAGES,
    REPLIES,
    REQUESTS,
    SLOT,
    Message,
    Slot,
    SlotError,
)
from actors.storage.workers import Workers
from messaging.errors import VdsmError

log = logging.getLogger(__name__)

Serve = Callable[[int, list[Message], list[Message]], list[Message]]
"""``(host, new requests, replies to keep) -> the replies written`` (the writer's job)."""
Paths = Callable[[], tuple[Path, Path]]

BURST = 10.0
"""Seconds after the last request during which the server polls at its full rate. A thin VM
writing fast asks for an extension every few seconds, and it is then that an extension's
latency matters (a chunk's headroom is running out): its requests keep finding the full rate
(bench/thinp.py --mib 256, extensions through the mailbox 2-4 s apart: p50 430-520 ms with a
2 s burst, each request waiting for an idle poll; 73-130 ms with 10 s). A slow writer's
requests, further apart, may wait for an idle poll, which its headroom covers; an idle pool
is polled at the idle pace."""


class PollPace:
    """How long the server waits between two polls.

    ``poll`` while requests come (the last one less than ``burst`` seconds ago:
    :data:`BURST`); then twice the last wait after each idle poll, up to ``idle_poll``. Every
    poll is a real O_DIRECT read of shared storage and two thread wake-ups (measured on the
    2-core VM of docs/mailbox.md: 0.3-1 ms of CPU each in vdsmd, ~0.07 ms in a bare loop:
    most of it is waking a cold thread), so an idle pool polled 10-20 times a second cost
    0.5-0.7 % of a core; at ``idle_poll`` 0.5 s it costs 0.1-0.2 %. The price is the first
    request after a quiet spell: it waits at most ``idle_poll`` for the poll that sees it
    (never more: the wait is capped), and the requests after it are polled at the full rate
    again."""

    def __init__(self, poll: float, idle_poll: float, *, burst: float = BURST,
                 now: float | None = None) -> None:
        self.poll = poll
        self.idle_poll = max(poll, idle_poll)
        self.burst = burst
        self._last = time.monotonic() if now is None else now
        self.interval = poll

    def request(self, now: float) -> None:
        """A request was seen at ``now``: back to the full rate."""
        self._last = now
        self.interval = self.poll

    def next(self, now: float) -> float:
        """The wait before the next poll, after a poll at ``now``."""
        if now - self._last <= self.burst:
            self.interval = self.poll
        else:
            self.interval = min(self.idle_poll, self.interval * 2)
        return self.interval


class MailServer:
    def __init__(self, *, paths: Paths, hosts: int, io_timeout: float, poll: float,
                 serve: Serve, name: str = "mailserver",
                 live: Callable[[], int] | None = None, idle_poll: float | None = None,
                 pace: PollPace | None = None) -> None:
        """``hosts``: the slots there are; ``live()``: how many of them to read now (the
        highest live host id, from the keeper's observations): fewer bytes per poll.
        ``idle_poll``: the longest wait between two polls once requests stopped coming
        (default ``2 * poll``); ``pace`` replaces the :class:`PollPace` made of both."""
        self.paths = paths
        self.hosts = hosts
        self.live = live
        self.io_timeout = io_timeout
        self.poll = poll
        self.serve = serve
        self.name = name
        self._lock = threading.Lock()
        self._active = threading.Event()
        self._stop = threading.Event()
        self._served: dict[int, list[Message]] = {}
        self._busy: set[int] = set()
        self._last_raw = b""
        self._recheck = False  # look at the slots again even if their bytes did not change
        self._pace = pace or PollPace(poll, 2 * poll if idle_poll is None else idle_poll)
        self._outbox: OutboxPoller | None = None
        self._workers = Workers(f"{name}-serve", 2)
        self.stats = {"polls": 0, "served": 0, "failed": 0, "errors": 0}
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def activate(self) -> None:
        """This host became SPM: learn what was served, then serve."""
        with self._lock:
            self._served = {}
            self._recheck = True
        self._active.set()

    def deactivate(self) -> None:
        self._active.clear()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            served = {h: len(r) for h, r in self._served.items() if r}
        return {"active": self._active.is_set(), **self.stats, "interval": self._pace.interval,
                "repliesKept": served,
                "busyHosts": sorted(self._busy), "lastError": self.last_error}

    def close(self) -> None:
        self._stop.set()
        self._active.set()
        self._thread.join(self.io_timeout * 2 + 1)
        self._workers.shutdown()
        if self._outbox is not None:
            self._outbox.close()

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        learned = False
        while not self._stop.is_set():
            if not self._active.is_set():
                learned = False
                self._active.wait()
                continue
            try:
                if not learned:
                    self._learn()
                    learned = True
                self._poll()
            except (VdsmError, OSError) as e:
                self.stats["errors"] += 1
                self.last_error = str(e)
                log.warning("%s: %s (retrying)", self.name, e)
            self._stop.wait(self._pace.next(time.monotonic()))

    def _areas(self) -> OutboxPoller:
        if self._outbox is None:
            _inbox, outbox = self.paths()
            self._outbox = OutboxPoller(outbox, slots=self.hosts)
        return self._outbox

    def _learn(self) -> None:
        """Read every host's replies: what a previous SPM (or this one) already served."""
        inbox_path, _outbox = self.paths()
        inbox = MailArea(inbox_path, kind=REPLIES, slots=self.hosts,
                         io_timeout=self.io_timeout, write=False)
        try:
            raw = inbox.read_raw()
        finally:
            inbox.close()
        served: dict[int, list[Message]] = {}
        for host in range(1, self.hosts + 1):
            try:
                slot = inbox.decode(raw, host)
            except SlotError as e:
                log.warning("%s: inbox slot %d unreadable (%s): treated as empty", self.name,
                            host, e)
                continue
            if slot is not None:
                served[host] = list(slot.messages)
        with self._lock:
            self._served = served

    def _poll(self) -> None:
        count = self.hosts
        if self.live is not None:
            count = max(1, min(self.hosts, self.live()))
        raw = self._areas().read_raw(count)
        self.stats["polls"] += 1
        with self._lock:
            if raw == self._last_raw and not self._recheck:
                return
            self._recheck = False
            self._last_raw = raw
        for host in range(1, len(raw) // SLOT + 1):
            try:
                slot = Slot.decode(raw[(host - 1) * SLOT:host * SLOT], host_id=host,
                                   kind=REQUESTS)
            except SlotError as e:
                log.debug("%s: outbox slot %d: %s (read again next time)", self.name, host, e)
                with self._lock:
                    self._recheck = True  # a torn write: look again even if the bytes stay
                continue
            if slot is None or not slot.messages:
                continue
            self._pace.request(time.monotonic())
            self._offer(host, list(slot.messages))

    def _offer(self, host: int, requests: list[Message]) -> None:
        with self._lock:
            if host in self._busy:
                return  # looked at again once this host's batch is done
            served = {m.seq for m in self._served.get(host, [])}
            new = [m for m in requests if m.seq not in served]
            if not new:
                return
            asked = {m.seq for m in requests}
            keep = [m for m in self._served.get(host, []) if m.seq in asked]
            self._busy.add(host)
        started = time.monotonic()
        future: Future[list[Message]] = self._workers.submit(self.serve, host, new, keep)
        future.add_done_callback(lambda f: self._served_one(host, keep, new, f, started))

    def _served_one(self, host: int, keep: list[Message], new: list[Message],
                    future: Future[list[Message]], started: float) -> None:
        error = future.exception()
        with self._lock:
            self._busy.discard(host)
            self._recheck = True
            if error is None:
                replies = future.result()
                self._served[host] = (keep + replies)[-MAX_MESSAGES:]
        if error is None:
            self.stats["served"] += len(new)
            log.debug("%s: served %d request(s) of host %d in %.3f s", self.name, len(new),
                      host, time.monotonic() - started)
        else:
            self.stats["failed"] += 1
            self.last_error = str(error)
            log.warning("%s: serving host %d failed: %s (retried)", self.name, host, error)
