"""Operations as lists of steps, each with an undo: runnable, abortable, revertible.

A long storage operation (creating a volume) is built by its backend as a list of
:class:`Step` without doing any I/O; the task runner then:

- runs it with :func:`run_steps`, which checks the :class:`Aborter` between steps (and hands
  it to each step, so that a long command is killed) and, on any failure, undoes every
  step that was started, newest first, before re-raising;
- persists the :class:`Progress` it receives through ``journal`` before each step starts and
  after it ends, next to the operation's JSON parameters;
- after a restart, rebuilds the same steps from those parameters and calls
  :func:`revert_steps` with the persisted ``started`` count.

Undo functions are idempotent and must cope with a half-done step (the process may have died
in the middle of it): they remove what exists and ignore what does not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actors.storage.command import Aborter

log = logging.getLogger(__name__)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Aborter], None]
    undo: Callable[[], None] = _nothing


@dataclass(frozen=True)
class Progress:
    """How far an operation got: ``started`` steps began, ``done`` of them finished; for an
    operation that writes data, ``bytes_done`` of ``bytes_total`` bytes (0 of 0: none)."""

    total: int
    started: int = 0
    done: int = 0
    current: str = ""
    bytes_done: int = 0
    bytes_total: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"total": self.total, "started": self.started, "done": self.done,
                               "current": self.current}
        if self.bytes_total:
            out["bytesDone"] = self.bytes_done
            out["bytesTotal"] = self.bytes_total
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(int(data["total"]), int(data["started"]), int(data["done"]),
                   str(data.get("current", "")), int(data.get("bytesDone", 0)),
                   int(data.get("bytesTotal", 0)))


Journal = Callable[[Progress], None]


def run_steps(steps: Sequence[Step], *, abort: Aborter | None = None,
              journal: Journal | None = None) -> None:
    """Run ``steps`` in order; on failure or abort revert the started ones and re-raise."""
    aborter = abort or Aborter()
    note = journal or (lambda _progress: None)
    started = 0
    try:
        for index, step in enumerate(steps):
            aborter.check()
            started = index + 1
            note(Progress(len(steps), started, index, step.name))
            log.debug("step %d/%d: %s", started, len(steps), step.name)
            step.run(aborter)
            note(Progress(len(steps), started, started, step.name))
        aborter.check()
    except Exception as exc:
        log.info("operation failed at step %d/%d (%s): reverting", started, len(steps), exc)
        failures = revert_steps(steps, started)
        for failure in failures:
            exc.add_note(f"revert: {failure!r}")
        note(Progress(len(steps), 0, 0, "reverted"))
        raise


def revert_steps(steps: Sequence[Step], started: int) -> list[Exception]:
    """Undo ``steps[:started]`` newest first; every undo is tried, failures are returned."""
    failures: list[Exception] = []
    for step in reversed(steps[: max(0, min(started, len(steps)))]):
        try:
            step.undo()
        except Exception as e:  # noqa: BLE001 - every undo must get its chance; all reported
            log.error("cannot undo step %s: %s", step.name, e)
            failures.append(e)
    return failures
