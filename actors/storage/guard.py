"""The write guard: SPM-side work passes through one before each step that writes.

Task steps, pool metadata changes, deletions and extensions are bracketed by
``with guard.write(what): ...``. In vdsmd nothing is guarded (:data:`UNGUARDED`: vdsmd itself
writes only domains that belong to no pool yet, at domain and pool creation). In the SPM's
writer process the guard is :class:`~actors.storage.spm.guard.FenceGuard`, which refuses to
start a write unless this host holds the SPM lease, and journals every write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from actors.storage.command import Aborter
from actors.storage.steps import Step


class WriteGuard(Protocol):
    def write(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Raise if a write may not start now; otherwise bracket it."""
        ...


class _Unguarded:
    @contextlib.contextmanager
    def write(self, what: str) -> Iterator[None]:
        yield

    def __repr__(self) -> str:
        return "UNGUARDED"


UNGUARDED: WriteGuard = _Unguarded()


def guarded_steps(steps: Sequence[Step], guard: WriteGuard) -> list[Step]:
    """The same steps, each run and each undo passing ``guard`` first."""
    if guard is UNGUARDED:
        return list(steps)

    def run(step: Step) -> Callable[[Aborter], None]:
        def call(abort: Aborter) -> None:
            with guard.write(step.name):
                step.run(abort)

        return call

    def undo(step: Step) -> Callable[[], None]:
        def call() -> None:
            with guard.write(f"undo {step.name}"):
                step.undo()

        return call

    return [Step(s.name, run(s), undo(s)) for s in steps]
