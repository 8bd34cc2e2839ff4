"""What this host remembers about storage across restarts, under ``<state_dir>/storage``.

::

    <state_dir>/storage/
        connections.json        the storage connections to re-establish (connectStorageServer)
        pools/<spUUID>.json     the pools to reconnect: hostID, master domain and version
        tasks/<taskID>.json     every task not yet cleared (see taskstore.py)

Only intentions are kept here (what to reconnect); everything else is read back from the
storage itself. Every write is atomic (temp file, fsync, rename, fsync of the directory), so
a crash leaves the old content or the new one. The state directory is local disk: these
small writes do not hang the way shared storage can.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actors.storage import fileutil
from actors.storage.mount import Connection, ConnectionKind
from actors.storage.sd.records import check_uuid
from messaging.errors import InvalidParams

log = logging.getLogger(__name__)

MAX_STATE_FILE = 1 << 20


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fileutil.write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode() + b"\n")


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None when it is missing, unreadable or corrupt (logged)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_STATE_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        log.error("cannot read %s: %s", path, e)
        return None
    if len(data) > MAX_STATE_FILE:
        log.error("%s is larger than %d bytes: ignored", path, MAX_STATE_FILE)
        return None
    try:
        return json.loads(data)
    except ValueError as e:
        log.error("%s is not valid JSON (%s): ignored", path, e)
        return None


def json_files(directory: Path) -> list[Path]:
    """``*.json`` files of ``directory`` whose stem is a UUID (anything else is ignored)."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.json")):
        try:
            check_uuid(path.stem, "file")
        except InvalidParams:
            continue
        found.append(path)
    return found


class ConnectionStore:
    """The persisted list of storage connections; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> list[Connection]:
        with self._lock:
            return self._load()

    def _load(self) -> list[Connection]:
        data = read_json(self.path)
        found = []
        for entry in data if isinstance(data, list) else []:
            try:
                found.append(Connection(**entry))
            except (TypeError, InvalidParams) as e:
                log.error("ignoring a bad connection in %s: %r (%s)", self.path, entry, e)
        return found

    def add(self, conn: Connection) -> None:
        with self._lock:
            current = [c for c in self._load() if (c.kind, c.spec) != (conn.kind, conn.spec)]
            write_json(self.path, [asdict(c) for c in [*current, conn]])

    def remove(self, kind: ConnectionKind, spec: str) -> None:
        with self._lock:
            current = self._load()
            kept = [c for c in current if (c.kind, c.spec) != (kind, spec)]
            if len(kept) != len(current):
                write_json(self.path, [asdict(c) for c in kept])


@dataclass(frozen=True)
class PoolRecord:
    """A pool this host is connected to (StoragePool.connect's params)."""

    sp_uuid: str
    host_id: int
    master_sd: str
    master_version: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> PoolRecord:
        if not isinstance(data, dict):
            raise ValueError("a pool record is a JSON object")
        return cls(sp_uuid=check_uuid(data["sp_uuid"], "sp_uuid"), host_id=int(data["host_id"]),
                   master_sd=check_uuid(data["master_sd"], "master_sd"),
                   master_version=int(data["master_version"]))


class PoolRecords:
    """``pools/<spUUID>.json``: the pools to reconnect after a restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, record: PoolRecord) -> None:
        write_json(self.directory / f"{record.sp_uuid}.json", record.to_json())

    def remove(self, sp_uuid: str) -> None:
        if fileutil.remove(self.directory / f"{check_uuid(sp_uuid, 'storagepoolID')}.json"):
            fileutil.fsync_dir(self.directory)

    def load(self) -> list[PoolRecord]:
        records = []
        for path in json_files(self.directory):
            try:
                record = PoolRecord.from_json(read_json(path))
            except (KeyError, TypeError, ValueError, InvalidParams) as e:
                log.error("ignoring the bad pool record %s: %s", path, e)
                continue
            if record.sp_uuid == path.stem:
                records.append(record)
        return records
