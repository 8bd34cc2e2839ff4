"""The directory of live actors: what ``Actors.list`` shows, readable from any thread.

Supervisors write it as they start, restart, stop and give up on children; readers (the API
handlers, the console) never have to ask an actor, so a stuck actor cannot stall the list.
It also resolves a path to the *current* ActorRef: a restarted child has a new ref, so
long-lived callers keep a :class:`ServiceRef` (a path) rather than a ref.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar, cast

import pykka

from messaging.errors import ActorUnavailable

A = TypeVar("A", bound=pykka.Actor)
P = TypeVar("P")

# States an entry can be in.
STARTING = "starting"
RUNNING = "running"
RESTARTING = "restarting"
GAVE_UP = "gave-up"
STOPPING = "stopping"


class MessageCount:
    """How many messages the actor at a path has handled (over its restarts): written by
    the actor's thread only, read by any."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def add(self) -> None:
        self.value += 1  # one writer: the actor's own thread


@dataclass(frozen=True)
class ActorInfo:
    path: str
    cls: str
    state: str
    ref: pykka.ActorRef[Any] | None
    supervisor: str | None
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    last_failure: str | None = None
    last_failure_at: float | None = None
    policy: dict[str, Any] | None = None
    counter: MessageCount | None = field(default=None, compare=False, repr=False)

    def mailbox(self) -> int:
        if self.ref is None:
            return 0
        qsize = getattr(self.ref.actor_inbox, "qsize", None)  # a queue.Queue for threads
        return int(qsize()) if qsize is not None else 0

    def to_wire(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        entry: dict[str, Any] = {
            "path": self.path,
            "class": self.cls,
            "state": self.state,
            "mailbox": self.mailbox(),
            "restarts": self.restarts,
            "uptime": round(now - self.started_at, 3) if self.state == RUNNING else 0.0,
            "supervisor": self.supervisor,
            "messages": self.counter.value if self.counter is not None else 0,
        }
        if self.last_failure is not None:
            entry["lastFailure"] = self.last_failure
            entry["lastFailureAgo"] = round(now - (self.last_failure_at or now), 3)
        return entry


class ActorDirectory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, ActorInfo] = {}
        self._counters: dict[str, MessageCount] = {}

    def counter(self, path: str) -> MessageCount:
        """The message count of the actor at ``path`` (kept over its restarts)."""
        with self._lock:
            return self._counters.setdefault(path, MessageCount())

    def put(self, info: ActorInfo) -> None:
        with self._lock:
            counter = self._counters.setdefault(info.path, MessageCount())
            self._entries[info.path] = replace(info, counter=counter)

    def update(self, path: str, **changes: Any) -> ActorInfo | None:
        with self._lock:
            info = self._entries.get(path)
            if info is None:
                return None
            info = replace(info, **changes)
            self._entries[path] = info
            return info

    def remove(self, path: str) -> None:
        """Remove ``path`` and everything below it."""
        prefix = path.rstrip("/") + "/"
        with self._lock:
            for key in [k for k in self._entries if k == path or k.startswith(prefix)]:
                del self._entries[key]
            for key in [k for k in self._counters if k == path or k.startswith(prefix)]:
                del self._counters[key]

    def get(self, path: str) -> ActorInfo | None:
        with self._lock:
            return self._entries.get(path)

    def children(self, path: str) -> list[ActorInfo]:
        with self._lock:
            return [i for i in self._entries.values() if i.supervisor == path]

    def __iter__(self) -> Iterator[ActorInfo]:
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda i: i.path)
        return iter(entries)

    def ref(self, path: str) -> pykka.ActorRef[Any]:
        """The running actor at ``path``, or ActorUnavailable saying why not."""
        info = self.get(path)
        if info is None:
            raise ActorUnavailable(path=path, reason="not started")
        if info.state != RUNNING or info.ref is None or not info.ref.is_alive():
            raise ActorUnavailable(path=path, reason=info.state)
        return info.ref


class ServiceRef(Generic[A]):
    """A typed, restart-proof handle on the actor at ``path``."""

    def __init__(self, directory: ActorDirectory, path: str) -> None:
        self.directory = directory
        self.path = path

    def ref(self) -> pykka.ActorRef[A]:
        return cast(pykka.ActorRef[A], self.directory.ref(self.path))

    def proxy(self, kind: type[P]) -> P:
        """The actor's proxy, typed as ``kind`` (see :func:`typed_proxy`)."""
        return typed_proxy(self.ref(), kind)

    def tell(self, message: Any) -> None:
        self.ref().tell(message)


def typed_proxy(ref: pykka.ActorRef[Any], kind: type[P]) -> P:
    """``ref``'s proxy, typed as ``kind``: a class that names each method callers may ask
    for with :func:`pykka.typing.proxy_method` (``pause = proxy_method(VmActor.pause)``).

    pykka's own ``ActorProxy`` resolves attributes at run time, so to mypy every proxy call
    is ``Any``. ``kind`` is never instantiated: it only tells mypy the arguments each
    method takes and the future it returns, and that no other attribute exists (it does not
    inherit ``ActorProxy.__getattr__``). The actor's methods run on its thread as before."""
    return cast(P, ref.proxy())
