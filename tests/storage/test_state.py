"""What the host remembers about storage: connections, pools, tasks; atomic and validated."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from actors.storage.mount import Connection
from actors.storage.state import ConnectionStore, PoolRecord, PoolRecords, read_json
from actors.storage.steps import Progress
from actors.storage.taskstore import FINISHED, RUNNING, TaskRecord, TaskStore
from messaging.errors import NoSuchTask


@pytest.mark.timeout(10)
def test_connections_are_remembered_once_each(tmp: Path) -> None:
    store = ConnectionStore(tmp / "state" / "connections.json")
    assert store.load() == []
    local = Connection("localfs", "/srv/a")
    posix = Connection("posixfs", "/dev/loop7", vfs_type="ext4", mnt_options="noatime")
    store.add(local)
    store.add(posix)
    store.add(local)
    assert store.load() == [posix, local]
    store.remove("posixfs", "/dev/loop7")
    assert store.load() == [local]
    assert not list((tmp / "state").glob(".*tmp*"))  # atomic writes leave no temp file


@pytest.mark.timeout(10)
def test_bad_state_files_are_ignored_not_fatal(tmp: Path) -> None:
    (tmp / "c.json").write_text("{not json")
    assert read_json(tmp / "c.json") is None
    (tmp / "c.json").write_text('[{"kind": "localfs", "spec": "relative"}, 7]')
    assert ConnectionStore(tmp / "c.json").load() == []
    pools = tmp / "pools"
    records = PoolRecords(pools)
    good = PoolRecord(str(uuid.uuid4()), 3, str(uuid.uuid4()), 2)
    records.put(good)
    (pools / f"{uuid.uuid4()}.json").write_text('{"sp_uuid": "x"}')
    (pools / "not-a-uuid.json").write_text("{}")
    assert records.load() == [good]
    records.remove(good.sp_uuid)
    assert records.load() == []


@pytest.mark.timeout(10)
def test_task_records_survive_a_new_store(tmp: Path) -> None:
    store = TaskStore(tmp / "tasks")
    task_id = str(uuid.uuid4())
    store.put(TaskRecord(task_id, "Volume.create", {"a": 1}))
    store.update(task_id, state=RUNNING, progress=Progress(6, 4, 3, "data"))
    again = TaskStore(tmp / "tasks")
    (loaded,) = again.load()
    assert (loaded.state, loaded.progress, loaded.params) == (RUNNING, Progress(6, 4, 3, "data"),
                                                              {"a": 1})
    again.update(task_id, state=FINISHED, result="success")
    assert again.get(task_id).to_wire()["taskResult"] == "success"
    again.remove(task_id)
    assert TaskStore(tmp / "tasks").load() == []
    with pytest.raises(NoSuchTask):
        again.get(task_id)
