"""The connections seam: a verb's connectionParams become typed requests before the actor is
asked (refused entries included, each answered alone), and the jobs connect real localfs
links under a temporary mount root."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.storage.connections import ConnectionJobs, ConnectionRequest, parse_requests
from actors.storage.mount import Connection, Connector
from actors.storage.state import ConnectionStore
from messaging.errors import InvalidParams, StorageNotSupported

pytestmark = pytest.mark.timeout(30)


def test_entries_become_typed_requests_and_refusals_stay_per_entry(tmp_path: Path) -> None:
    data = tmp_path / "data"
    requests = parse_requests("localfs", [
        {"id": "good", "connection": str(data), "mnt_options": "ro"},
        {"id": "dots", "connection": f"{data}/../etc"},
        {"id": "relative", "connection": "data"},
    ])
    assert [r.conn_id for r in requests] == ["good", "dots", "relative"]
    good, dots, relative = requests
    assert good == ConnectionRequest("good", Connection("localfs", str(data), mnt_options="ro"),
                                     shown=str(data))
    for refused in (dots, relative):
        assert refused.connection is None and isinstance(refused.refused, InvalidParams)
    [iscsi] = parse_requests("iscsi", [{"id": "i", "connection": "x"}])
    assert iscsi.connection is None and isinstance(iscsi.refused, StorageNotSupported)


def test_the_jobs_answer_each_request_and_connect_only_the_accepted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    jobs = ConnectionJobs(Connector(tmp_path / "mnt"), ConnectionStore(tmp_path / "conns.json"))
    requests = parse_requests("localfs", [{"id": "bad", "connection": "/x/../y"},
                                          {"id": "good", "connection": str(data)}])
    results = jobs.run(requests, connect=True)
    assert [(r["id"], r["status"]) for r in results] == [("bad", -32602), ("good", 0)]
    assert "'..' component" in results[0]["message"]
    links = list((tmp_path / "mnt").iterdir())
    assert [link.resolve() for link in links] == [data.resolve()]
    assert [c.spec for c in jobs.store.load()] == [str(data)]
    assert jobs.run(requests, connect=False)[1] == {"id": "good", "status": 0}
    assert list((tmp_path / "mnt").iterdir()) == [] and jobs.store.load() == []
