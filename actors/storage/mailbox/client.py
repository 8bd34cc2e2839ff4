"""The HSM side of a pool's mailbox: this host's requests to the SPM, and their replies.

A :class:`MailClient` owns one thread. Requests (volume extensions) wait in memory and in this
host's outbox slot; while any is pending the thread rewrites the slot when it changed and
reads this host's inbox slot every ``poll`` seconds; a reply resolves the request's future
and the request leaves the slot. Requests for the same volume coalesce (the larger size wins
and satisfies every caller). A request stays until it is answered: across an SPM change (the
new SPM serves what is pending) and while no SPM runs. Nothing here blocks a caller: extend()
returns a future at once. Each I/O is bounded by ``io_timeout``; a failed one is retried at
the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from actors.storage.mailbox.areas import MailArea
from actors.storage.mailbox.format import (
    FAILED,
    MAX_MESSAGES,
    REPLIES,
    REQUESTS,
    Message,
    Slot,
    SlotError,
)
from messaging.errors import StorageBusy, VdsmError, error_from_wire

log = logging.getLogger(__name__)

Paths = Callable[[], tuple[Path, Path]]
"""``() -> (inbox, outbox)`` of the pool's master domain (storage I/O: run on the thread)."""


@dataclass
class _Pending:
    request: Message
    futures: list[Future[Message]] = field(default_factory=list)
    sent: float = 0.0


class MailClient:
    def __init__(self, *, host_id: int, paths: Paths, io_timeout: float, poll: float,
                 name: str = "mailbox") -> None:
        self.host_id = host_id
        self.paths = paths
        self.io_timeout = io_timeout
        self.poll = poll
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: dict[tuple[str, str, str], _Pending] = {}
        self._dirty = False
        self._inbox: MailArea | None = None
        self._outbox: MailArea | None = None
        self.stats = {"requests": 0, "replies": 0, "errors": 0, "polls": 0}
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- callers (any thread) ----------------------------------------------------------

    def extend(self, sd_uuid: str, img_uuid: str, vol_uuid: str, size: int) -> Future[Message]:
        future: Future[Message] = Future()
        key = (sd_uuid, img_uuid, vol_uuid)
        with self._lock:
            pending = self._pending.get(key)
            if pending is not None and pending.request.size >= size:
                pending.futures.append(future)
                return future
            if pending is None and len(self._pending) >= MAX_MESSAGES:
                raise StorageBusy(f"the mailbox of host {self.host_id} already holds "
                                  f"{MAX_MESSAGES} requests waiting for the SPM: try again "
                                  "later")
            request = Message(time.time_ns(), sd_uuid, img_uuid, vol_uuid, size)
            futures = [*pending.futures, future] if pending else [future]
            self._pending[key] = _Pending(request, futures)
            self._dirty = True
            self.stats["requests"] += 1
        self._wake.set()
        return future

    def describe(self) -> dict[str, Any]:
        with self._lock:
            pending = [{"volUUID": p.request.vol_uuid, "size": p.request.size,
                        "seq": p.request.seq, "waiters": len(p.futures)}
                       for p in self._pending.values()]
        return {"pending": pending, **self.stats, "lastError": self.last_error}

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(self.io_timeout * 2 + 1)
        for area in (self._inbox, self._outbox):
            if area is not None:
                area.close()
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        gone = VdsmError("the mailbox was closed before the SPM answered")
        for p in pending:
            for f in p.futures:
                if not f.done():
                    f.set_exception(gone)

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        idle_written = True
        while not self._stop.is_set():
            with self._lock:
                busy = bool(self._pending)
            if not busy and idle_written:
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                self._open()
                idle_written = self._exchange()
            except (VdsmError, OSError, SlotError) as e:
                self.stats["errors"] += 1
                self.last_error = str(e)
                log.warning("mailbox of host %d: %s (retrying)", self.host_id, e)
            self._wake.wait(self.poll)
            self._wake.clear()

    def _open(self) -> None:
        if self._inbox is None or self._outbox is None:
            inbox, outbox = self.paths()
            self._inbox = MailArea(inbox, kind=REPLIES, slots=1, io_timeout=self.io_timeout,
                                   write=False)
            self._outbox = MailArea(outbox, kind=REQUESTS, slots=1,
                                    io_timeout=self.io_timeout, write=True)

    def _exchange(self) -> bool:
        """Write the outbox slot if it changed, read the inbox slot, resolve what is
        answered. Whether the slot on storage now matches an empty queue."""
        assert self._inbox is not None and self._outbox is not None
        with self._lock:
            dirty, self._dirty = self._dirty, False
            requests = tuple(p.request for p in self._pending.values())
        if dirty:
            try:
                self._outbox.write_slot(Slot(self.host_id, REQUESTS, requests,
                                             written_ns=time.monotonic_ns()))
            except BaseException:
                with self._lock:
                    self._dirty = True
                raise
        if not requests:
            return True
        self.stats["polls"] += 1
        replies = self._inbox.read_slot(self.host_id)
        if replies is not None:
            self._resolve(replies.messages)
        return False

    def _resolve(self, replies: tuple[Message, ...]) -> None:
        by_seq = {m.seq: m for m in replies}
        done: list[tuple[_Pending, Message]] = []
        with self._lock:
            for key, pending in list(self._pending.items()):
                reply = by_seq.get(pending.request.seq)
                if reply is not None:
                    del self._pending[key]
                    self._dirty = True
                    done.append((pending, reply))
        for pending, reply in done:
            self.stats["replies"] += 1
            for future in pending.futures:
                if future.done():
                    continue
                if reply.status == FAILED:
                    future.set_exception(error_from_wire(
                        {"code": reply.code, "message": reply.text or "the SPM failed"}))
                else:
                    future.set_result(replace(reply))
