"""The fence file: the keeper's writes are seen whole by readers in other processes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from actors.storage.spm import fence as fences
from actors.storage.spm.fence import FenceError, FenceReader, FenceWriter


def test_reader_sees_what_the_writer_published(tmp_path: Path) -> None:
    writer = FenceWriter(tmp_path / "fence", host_id=3)
    reader = FenceReader(tmp_path / "fence")
    assert reader.read().state == fences.NONE
    deadline = time.monotonic_ns() + 5_000_000_000
    writer.publish(fences.SPM, 7, deadline, 1234)
    got = reader.read()
    assert (got.state, got.lver, got.deadline_ns, got.host_id, got.writer_pid) == (
        fences.SPM, 7, deadline, 3, 1234)
    assert got.allows(7)
    assert not got.allows(6)  # another lease version never writes
    assert (tmp_path / "fence").stat().st_mode & 0o777 == 0o600


def test_a_passed_deadline_forbids_writes(tmp_path: Path) -> None:
    writer = FenceWriter(tmp_path / "fence", host_id=1)
    reader = FenceReader(tmp_path / "fence")
    writer.publish(fences.SPM, 2, time.monotonic_ns() - 1, 99)
    assert not reader.read().allows(2)
    writer.publish(fences.FENCED, 2, time.monotonic_ns() + 10**12, 99)
    assert not reader.read().allows(2)  # fenced: never, whatever the deadline


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "fence").write_bytes(b"x" * fences.SIZE)
    with pytest.raises(FenceError):
        FenceReader(tmp_path / "fence").read()


def _hammer(path: str, rounds: int) -> None:
    writer = FenceWriter(Path(path), host_id=5)  # a second keeper over the same file
    for i in range(1, rounds + 1):
        writer.publish(fences.SPM, i, i * 1000, i)


@pytest.mark.timeout(60)
def test_no_torn_read_while_another_process_writes(tmp_path: Path) -> None:
    FenceWriter(tmp_path / "fence", host_id=5)
    reader = FenceReader(tmp_path / "fence")
    proc = multiprocessing.get_context("spawn").Process(
        target=_hammer, args=(str(tmp_path / "fence"), 200_000))
    proc.start()
    seen = busy = 0
    try:
        while proc.is_alive() and seen < 200_000:
            try:
                got = reader.read()
            except FenceError:  # a writer publishing nonstop can starve a reader: it then
                busy += 1       # refuses (the guard refuses the write), never reads torn
                continue
            # every field of one publish belongs together
            assert got.deadline_ns == got.lver * 1000 and got.writer_pid == got.lver
            assert got.host_id == 5
            seen += 1
    finally:
        proc.join(30)
    assert proc.exitcode == 0
    assert seen > 0
