"""``/storage/connections``: connecting storage (mounts, links) off the actor thread.

``StoragePool.connectStorageServer`` and ``disconnectStorageServer`` run on the actor's small
worker pool: a mount can hang in the kernel, and every ``mount``/``umount`` is bounded by
its command timeout (the command is killed past it, see command.py). Each connection answers
for itself (``{"id", "status"}``, status 0 or an error code, plus ``message``), as vdsm's
verb does. Connections of the same storage are serialised.

What is connected is remembered in ``<state>/storage/connections.json``; the actor
re-establishes it at start (idempotent: a mount still in place is kept), so a restarted or
rebooted host finds its storage again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, cast

from actors.base import ActorContext, SupervisedActor
from actors.storage.mount import Connection, ConnectionKind, Connector
from actors.storage.state import ConnectionStore
from actors.storage.workers import Workers
from messaging.errors import StorageNotSupported, VdsmError

log = logging.getLogger(__name__)

KINDS: dict[str, ConnectionKind] = {"localfs": "localfs", "loop": "localfs",
                                    "posixfs": "posixfs", "nfs": "nfs"}


@dataclass(frozen=True)
class _Restore:
    pass


@dataclass(frozen=True)
class ConnectionRequest:
    """One ``connectionParams`` entry, checked by the verb's handler before the actor is
    asked: its id and the connection, or why it is refused (answered for that entry
    alone, as every entry answers for itself)."""

    conn_id: str
    connection: Connection | None
    refused: VdsmError | None = None
    shown: str = ""  # the connection as the client gave it (for the log)


def parse_requests(domain_type: str, entries: Sequence[Mapping[str, Any]],
                   ) -> list[ConnectionRequest]:
    """The typed requests of a connect/disconnect verb's ``connectionParams``."""
    kind = KINDS.get(domain_type)
    requests = []
    for entry in entries:
        conn_id, shown = str(entry.get("id", "")), str(entry.get("connection", ""))
        try:
            if kind is None:
                raise StorageNotSupported(reason=f"{domain_type} connections (iSCSI login, "
                                          "FC zoning) are not handled by this host")
            requests.append(ConnectionRequest(conn_id, Connection.from_params(kind, entry),
                                              shown=shown))
        except VdsmError as e:
            requests.append(ConnectionRequest(conn_id, None, e, shown))
    return requests


class ConnectionJobs:
    """The blocking part: connect and disconnect, one connection at a time per storage."""

    def __init__(self, connector: Connector, store: ConnectionStore) -> None:
        self.connector = connector
        self.store = store
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def _lock(self, spec: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(spec, threading.Lock())

    def run(self, requests: Sequence[ConnectionRequest], *, connect: bool,
            ) -> list[dict[str, Any]]:
        results = []
        for request in requests:
            result: dict[str, Any] = {"id": request.conn_id, "status": 0}
            error = request.refused
            if error is None and request.connection is not None:
                try:
                    if connect:
                        self.connect(request.connection)
                    else:
                        self.disconnect(request.connection)
                except VdsmError as e:
                    error = e
            if error is not None:
                log.warning("%s %s: %s", "connecting" if connect else "disconnecting",
                            request.shown, error.message)
                result.update(status=error.code, message=error.message)
            results.append(result)
        return results

    def connect(self, conn: Connection, *, remember: bool = True) -> None:
        with self._lock(conn.spec):
            self.connector.connect(conn)
            if remember:
                self.store.add(conn)

    def disconnect(self, conn: Connection) -> None:
        with self._lock(conn.spec):
            self.connector.disconnect(conn, force=True)
            self.store.remove(conn.kind, conn.spec)

    def restore(self, conn: Connection) -> None:
        try:
            self.connect(conn, remember=False)
        except VdsmError as e:
            log.error("cannot restore the connection %s (%s): %s", conn.spec, conn.kind,
                      e.message)


class ConnectionsActor(SupervisedActor):
    def __init__(self, ctx: ActorContext, *, connector: Connector, store: ConnectionStore,
                 workers: int = 4) -> None:
        super().__init__(ctx)
        self.jobs = ConnectionJobs(connector, store)
        self.size = workers
        self._workers: Workers | None = None

    def setup(self) -> None:
        self._workers = Workers("storage-connect", self.size)
        self.actor_ref.tell(_Restore())

    def teardown(self) -> None:
        if self._workers is not None:
            self._workers.shutdown()

    def describe(self) -> dict[str, Any]:
        return {"remembered": [{"kind": c.kind, "connection": c.spec}
                               for c in self.jobs.store.load()],
                "busy": self._workers.busy() if self._workers else 0}

    def connect(self, requests: Sequence[ConnectionRequest],
                ) -> Future[list[dict[str, Any]]]:
        return self._pool().submit(self.jobs.run, requests, connect=True)

    def disconnect(self, requests: Sequence[ConnectionRequest],
                   ) -> Future[list[dict[str, Any]]]:
        return self._pool().submit(self.jobs.run, requests, connect=False)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Restore):
            for conn in self.jobs.store.load():
                self._pool().submit(self.jobs.restore, conn)
            return None
        return super().on_receive(message)

    def _pool(self) -> Workers:
        return cast(Workers, self._workers)
