"""SerialLogs: the logs of VMs no longer known are pruned to the newest few; a failed
start's empty log goes."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from actors.vm.seriallog import SerialLogs

pytestmark = pytest.mark.timeout(10)


def write(path: Path, age: int, text: str = "boot\n") -> None:
    path.write_text(text)
    when = 1_700_000_000 - age
    os.utime(path, (when, when))


def test_prune_keeps_known_vms_and_the_newest_others(tmp_path: Path) -> None:
    logs = SerialLogs(tmp_path / "logs", kept=2)
    logs.prepare()
    assert (tmp_path / "logs").stat().st_mode & 0o077 == 0
    running, *gone = (str(uuid.uuid4()) for _ in range(5))
    write(logs.path(running), age=1000)  # old, but its VM is known
    for age, vm_id in enumerate(gone):  # gone[0] newest
        write(logs.path(vm_id), age=age * 10)
        write(logs.path(vm_id).with_name(f"{vm_id}.log.0"), age=age * 10 + 5)
    other = tmp_path / "logs" / "notes.txt"
    write(other, age=5000)
    removed = logs.prune({running})
    assert sorted(removed) == sorted(gone[2:])
    left = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert left == sorted(["notes.txt", f"{running}.log",
                           *(f"{v}.log{s}" for v in gone[:2] for s in ("", ".0"))])
    assert logs.prune({running}) == []


def test_only_an_empty_log_is_removed_after_a_failed_start(tmp_path: Path) -> None:
    logs = SerialLogs(tmp_path, kept=0)
    empty, spoke = str(uuid.uuid4()), str(uuid.uuid4())
    logs.path(empty).write_text("")
    logs.path(spoke).write_text("Kernel panic\n")
    for vm_id in (empty, spoke, str(uuid.uuid4())):
        logs.remove_if_empty(vm_id)
    assert [p.name for p in tmp_path.iterdir()] == [f"{spoke}.log"]
    with pytest.raises(ValueError):
        logs.path("../../etc/passwd")
