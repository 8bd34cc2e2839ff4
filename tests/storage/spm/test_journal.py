"""The safety checker finds each kind of violation, and passes a clean history."""

from __future__ import annotations

from pathlib import Path

from actors.storage.spm import journal
from actors.storage.spm.journal import Journal


def _write(j: Journal, lver: int, start: float, end: float | None, deadline: float) -> None:
    seq = j.next_seq()
    j.append({"ev": "begin", "seq": seq, "lver": lver, "t": start, "deadline": deadline})
    if end is not None:
        j.append({"ev": "end", "seq": seq, "t": end})


def _check(tmp_path: Path, kills: tuple[tuple[int, float], ...] = ()) -> list[str]:
    found = journal.check(journal.writes(journal.load(tmp_path), kills))
    return [v.kind for v in found]


def test_a_clean_history_passes(tmp_path: Path) -> None:
    a, b = Journal(tmp_path, 1), Journal(tmp_path, 2)
    _write(a, 1, 10.0, 10.1, 20.0)
    _write(a, 1, 11.0, 11.2, 20.0)
    _write(b, 2, 30.0, 30.5, 40.0)
    assert _check(tmp_path) == []


def test_overlapping_lvers_are_found(tmp_path: Path) -> None:
    a, b = Journal(tmp_path, 1), Journal(tmp_path, 2)
    _write(a, 1, 10.0, 15.0, 20.0)
    _write(b, 2, 14.0, 14.5, 40.0)
    assert "overlap" in _check(tmp_path)


def test_a_write_after_its_deadline_is_found(tmp_path: Path) -> None:
    _write(Journal(tmp_path, 1), 1, 10.0, 21.0, 20.0)
    assert _check(tmp_path) == ["expired"]


def test_an_unfinished_write_lasts_until_its_writer_was_killed(tmp_path: Path) -> None:
    a, b = Journal(tmp_path, 1), Journal(tmp_path, 2)
    _write(a, 1, 10.0, None, 20.0)  # killed in the middle
    _write(b, 2, 25.0, 25.1, 40.0)
    assert "overlap" in _check(tmp_path)  # nothing says when it ended: forever
    import os
    a.append({"ev": "kill", "writer": os.getpid(), "t": 12.0})
    assert _check(tmp_path) == []


def test_lvers_that_go_back_are_found(tmp_path: Path) -> None:
    a = Journal(tmp_path, 1)
    _write(a, 3, 10.0, 10.1, 20.0)
    _write(a, 2, 11.0, 11.1, 20.0)
    assert "lver" in _check(tmp_path)


def test_a_write_killed_between_its_cutoff_and_the_leases_end_is_safe(tmp_path: Path) -> None:
    """The keeper kills its writer at the cutoff (the lease's end minus the kill margin): a
    write cut then ended before the lease did, which is all that other hosts rely on."""
    a = Journal(tmp_path, 1)
    seq = a.next_seq()
    a.append({"ev": "begin", "seq": seq, "lver": 1, "t": 10.0, "deadline": 20.0,
              "expiry": 21.0})
    a.append({"ev": "end", "seq": seq, "t": 20.5})
    assert _check(tmp_path) == []
    seq = a.next_seq()
    a.append({"ev": "begin", "seq": seq, "lver": 1, "t": 11.0, "deadline": 20.0,
              "expiry": 21.0})
    a.append({"ev": "end", "seq": seq, "t": 21.5})
    assert _check(tmp_path) == ["expired"]
