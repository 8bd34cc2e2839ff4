from __future__ import annotations

import pytest

from actors.storage.command import Aborter
from actors.storage.steps import Progress, Step, revert_steps, run_steps
from messaging.errors import TaskAborted


def recording_steps(log: list[str], fail_at: str | None = None,
                    abort_at: tuple[str, Aborter] | None = None) -> list[Step]:
    def make(name: str) -> Step:
        def run(_abort: Aborter) -> None:
            log.append(f"run {name}")
            if abort_at is not None and abort_at[0] == name:
                abort_at[1].abort("stop")
            if name == fail_at:
                raise OSError(f"{name} broke")

        return Step(name, run, lambda: log.append(f"undo {name}"))

    return [make(n) for n in ("a", "b", "c")]


@pytest.mark.timeout(5)
def test_all_steps_run_in_order_and_are_journaled() -> None:
    log: list[str] = []
    journal: list[Progress] = []
    run_steps(recording_steps(log), journal=journal.append)
    assert log == ["run a", "run b", "run c"]
    assert journal[0] == Progress(3, 1, 0, "a")
    assert journal[-1] == Progress(3, 3, 3, "c")
    assert Progress.from_json(journal[-1].to_json()) == journal[-1]


@pytest.mark.timeout(5)
def test_failure_undoes_started_steps_newest_first() -> None:
    log: list[str] = []
    journal: list[Progress] = []
    with pytest.raises(OSError, match="b broke"):
        run_steps(recording_steps(log, fail_at="b"), journal=journal.append)
    assert log == ["run a", "run b", "undo b", "undo a"]
    assert journal[-1].started == 0  # nothing left to revert


@pytest.mark.timeout(5)
def test_abort_between_steps_reverts() -> None:
    log: list[str] = []
    aborter = Aborter("task")
    with pytest.raises(TaskAborted):
        run_steps(recording_steps(log, abort_at=("b", aborter)), abort=aborter)
    assert log == ["run a", "run b", "undo b", "undo a"]


@pytest.mark.timeout(5)
def test_revert_after_restart_tries_every_undo() -> None:
    log: list[str] = []

    def broken_undo() -> None:
        raise RuntimeError("cannot")

    steps = [*recording_steps(log)[:2], Step("x", lambda _a: None, broken_undo)]
    failures = revert_steps(steps, started=3)
    assert [str(f) for f in failures] == ["cannot"]
    assert log == ["undo b", "undo a"]
    assert revert_steps(steps, started=0) == []
    log.clear()
    revert_steps(steps, started=99)
    assert log == ["undo b", "undo a"]
