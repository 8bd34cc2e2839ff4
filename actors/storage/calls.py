"""What the storage verb handlers share: the actors' paths, and bounded waits on them.

Every handler runs on an API worker thread (never an actor's). It asks actors through
proxies with a timeout (:func:`ask`); storage I/O comes back as a
:class:`concurrent.futures.Future` from the actor that owns the worker doing it, which the
handler waits on with a bounded timeout (:func:`wait`; past it: 215, and the stuck worker
stays confined to its domain); a task handed to the task manager comes back as a future of
its id (:func:`recorded`).
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import TypeVar

import pykka

from actors.directory import ActorDirectory, ServiceRef
from actors.storage.domains import DomainsActor
from actors.storage.pool import POOL_CHILD, PoolActor
from actors.storage.proxies import PoolProxy
from actors.storage.taskrequest import TaskRequest
from messaging.deadline import current as current_deadline
from messaging.errors import ActorUnavailable, NoSuchStoragePool, StorageTimeout

T = TypeVar("T")

STORAGE = "/storage"
TASKS = f"{STORAGE}/tasks"
CONNECTIONS = f"{STORAGE}/connections"
DOMAINS = f"{STORAGE}/domains"
POOLS = f"{STORAGE}/pools"
ASK_TIMEOUT = 10.0


def wait(future: concurrent.futures.Future[T], timeout: float, what: str) -> T:
    """The result of storage work, or :class:`StorageTimeout` after ``timeout``.

    The request's deadline is extended to cover ``timeout`` (the wire timeout derives from
    the storage call's own), and the wait never outlasts the request's deadline."""
    deadline = current_deadline()
    deadline.cover(time.monotonic() + timeout)
    timeout = deadline.clamp(timeout)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise StorageTimeout(timeout=timeout, reason=what) from None


def ask(future: pykka.Future[T], path: str, timeout: float = ASK_TIMEOUT) -> T:
    """An actor's answer, or :class:`ActorUnavailable` (retryable) if it gives none."""
    timeout = current_deadline().clamp(timeout)
    try:
        return future.get(timeout=timeout)
    except pykka.Timeout:
        raise ActorUnavailable(path=path, reason=f"no answer within {timeout:g} s") from None
    except pykka.ActorDeadError:
        raise ActorUnavailable(path=path, reason="stopped") from None


def recorded(reply: concurrent.futures.Future[str], timeout: float, verb: str) -> str:
    """The id of a task handed to the task manager, once it is recorded; its error if it
    could not be. A hand-over still waiting at ``timeout`` is cancelled (the task manager
    then drops it: no task exists); one being recorded right then is waited for once more."""
    try:
        return reply.result(timeout)
    except concurrent.futures.TimeoutError:
        pass
    if reply.cancel():
        raise ActorUnavailable(path=TASKS, reason=f"{verb} was not queued within "
                               f"{timeout:g} s (nothing was started)")
    try:
        return reply.result(timeout)
    except concurrent.futures.TimeoutError:
        raise StorageTimeout(timeout=2 * timeout, reason=f"recording the {verb} task (ask "
                             "Host.getAllTasksStatuses whether it exists)") from None


class StorageCalls:
    """The actors the handlers talk to, with the bounded waits above."""

    def __init__(self, *, directory: ActorDirectory, call_timeout: float) -> None:
        self.directory = directory
        self.call_timeout = call_timeout
        self.domains: ServiceRef[DomainsActor] = ServiceRef(directory, DOMAINS)

    def pool(self, sp_uuid: str) -> PoolProxy:
        path = f"{POOLS}/{sp_uuid}/{POOL_CHILD}"
        if self.directory.get(path) is None:
            raise NoSuchStoragePool(spUUID=sp_uuid)
        ref: ServiceRef[PoolActor] = ServiceRef(self.directory, path)
        return ref.proxy(PoolProxy)

    def io(self, call: pykka.Future[concurrent.futures.Future[T]], what: str,
           timeout: float | None = None) -> T:
        """Domain I/O on ``/storage/domains``' lanes, waited on for ``call_timeout``."""
        return wait(ask(call, DOMAINS), timeout or self.call_timeout, what)

    def member(self, sp_uuid: str, sd_uuid: str, *, active: bool,
               ) -> PoolProxy:
        """The pool's actor, once it says ``sd_uuid`` is its member (and active)."""
        pool = self.pool(sp_uuid)
        ask(pool.check_domain(sd_uuid, active=active), "pool")
        return pool

    def submit(self, pool: PoolProxy, request: TaskRequest) -> str:
        """Have the pool hand the task to the task manager; its id once it is recorded."""
        reply: concurrent.futures.Future[str] = ask(pool.submit(request), "pool")
        return recorded(reply, self.call_timeout, request.verb)
