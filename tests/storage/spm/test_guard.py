"""The writer's guard: a write starts only while the fence allows the writer's lver."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors.storage.spm import fence as fences
from actors.storage.spm import journal
from actors.storage.spm.fence import FenceReader, FenceWriter
from actors.storage.spm.guard import FenceGuard
from actors.storage.spm.journal import Journal
from messaging.errors import NotSPM


def _guard(tmp_path: Path, lver: int = 4) -> tuple[FenceWriter, FenceGuard]:
    writer = FenceWriter(tmp_path / "fence", host_id=2)
    guard = FenceGuard(FenceReader(tmp_path / "fence"), sp_uuid="pool", lver=lver,
                       journal=Journal(tmp_path / "journal", 2))
    return writer, guard


def test_a_write_under_a_valid_lease_is_journaled(tmp_path: Path) -> None:
    writer, guard = _guard(tmp_path)
    writer.publish(fences.SPM, 4, time.monotonic_ns() + 10**10, 1)
    done = []
    with guard.write("metadata of x"):
        done.append(True)
    assert done == [True]
    writes = journal.writes(journal.load(tmp_path / "journal"))
    assert len(writes) == 1 and writes[0].lver == 4 and writes[0].end is not None
    assert journal.check(writes) == []


@pytest.mark.parametrize("state,lver,ahead", [
    (fences.SPM, 4, -1),       # the deadline passed
    (fences.SPM, 5, 10**10),   # another lease version: a newer acquisition
    (fences.FENCED, 4, 10**10),
    (fences.NONE, 0, 0),
])
def test_a_write_without_the_lease_is_refused(tmp_path: Path, state: int, lver: int,
                                              ahead: int) -> None:
    writer, guard = _guard(tmp_path)
    writer.publish(state, lver, time.monotonic_ns() + ahead, 1)
    with pytest.raises(NotSPM), guard.write("metadata of x"):
        raise AssertionError("the write ran")
    assert guard.refused == 1
    assert journal.load(tmp_path / "journal") == []  # nothing began
