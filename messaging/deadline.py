"""The deadline of the request being served: the one clock every wait under a verb reads.

The API server gives each request a :class:`Deadline` when it accepts it (the verb's timeout
from the schema) and makes it the *current* deadline while the handler runs, so handlers keep
their ``(params)`` signature and read it with :func:`current`. The rules:

- every wait in a handler is bounded by the time left (:meth:`Deadline.clamp`), so no worker
  thread is ever held past its request's deadline;
- a handler that starts an operation with a deadline of its own (a VM operation: its timeout
  plus its hooks' budget; a storage call: its configured timeout) *covers* it
  (:meth:`Deadline.cover`): the wire deadline is then derived from the operation's, and the
  client gets the operation's own outcome, never a wire timeout while the operation runs;
- a deadline is only ever extended, and never past :data:`MAX_EXTENSION` after the request
  was accepted.

Outside a request (tests calling a handler directly, background threads) :func:`current` is
an unbounded deadline. The current deadline is a :class:`contextvars.ContextVar`: per thread,
set and reset by the server around each handler call; it holds no state between requests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: a request's deadline is never extended past this many seconds after it was accepted
MAX_EXTENSION = 3600.0
#: what a covered operation leaves the reply after its own deadline (the actor's answer,
#: the reply's way back through the socket thread)
REPLY_MARGIN = 5.0


class Deadline:
    """A point in monotonic time by which a request must be answered.

    Read from any thread; extended (:meth:`cover`) only by the thread serving the request.
    """

    __slots__ = ("_at", "_limit", "accepted", "client", "label")

    def __init__(self, timeout: float, *, now: float | None = None,
                 limit: float = MAX_EXTENSION, label: str = "", client: str = "") -> None:
        self.accepted = time.monotonic() if now is None else now
        #: names the request in the log lines written while it is served ("req 7 VM.pause")
        self.label = label
        #: who sent the request (:func:`messaging.server.client_id`; "" outside a request)
        self.client = client
        self._at = self.accepted + timeout
        self._limit = self.accepted + max(timeout, limit)

    @property
    def at(self) -> float:
        """The deadline (``time.monotonic()`` seconds)."""
        return self._at

    @property
    def budget(self) -> float:
        """Seconds from acceptance to the deadline (what the client is told on a timeout)."""
        return self._at - self.accepted

    def remaining(self) -> float:
        return max(0.0, self._at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._at

    def clamp(self, timeout: float) -> float:
        """``timeout``, shortened to the time left: for every wait under this request."""
        return min(timeout, self.remaining())

    def cover(self, until: float, margin: float = REPLY_MARGIN) -> None:
        """Extend the deadline so that it ends ``margin`` seconds after ``until`` (monotonic
        time, typically an operation's deadline). Never shortens it."""
        self._at = max(self._at, min(until + margin, self._limit))

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f})"


_current: ContextVar[Deadline | None] = ContextVar("request_deadline", default=None)


def current() -> Deadline:
    """The deadline of the request this thread serves, or an unbounded one."""
    deadline = _current.get()
    return deadline if deadline is not None else Deadline(math.inf)


def label() -> str:
    """The label of the request this thread serves ("" outside a request)."""
    deadline = _current.get()
    return deadline.label if deadline is not None else ""


@contextmanager
def serving(deadline: Deadline) -> Iterator[Deadline]:
    """Make ``deadline`` the current one for the block (the server, around a handler)."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)
