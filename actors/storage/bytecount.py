"""How many bytes an operation has written so far, and how many it will write.

A task that moves bytes (a preallocated volume, a copy) says how many it expects
(:meth:`ByteCount.expect`); while a command of it runs, :func:`~actors.storage.command.run`
reads the bytes the command wrote so far from ``/proc/<pid>/io`` (``wchar``: a local file,
never a read of the storage, so a hung mount cannot stall the count) and reports them
(:meth:`ByteCount.command_wrote`). ``Task.getStatus`` and the ``|jobs|status|`` events show
the count as ``bytesDone`` of ``bytesTotal``.

Written by the thread running the operation, read by any thread: each update replaces a
tuple, and a reader takes a consistent snapshot.
"""

from __future__ import annotations

from pathlib import Path


class ByteCount:
    def __init__(self) -> None:
        self._state = (0, 0, 0)  # done by finished commands, by the running one, total

    def expect(self, total: int) -> None:
        """The operation will write ``total`` more bytes."""
        base, running, whole = self._state
        self._state = (base + running, 0, whole + max(0, total))

    def command_wrote(self, count: int) -> None:
        """The running command has written ``count`` bytes so far."""
        base, _running, whole = self._state
        self._state = (base, max(0, count), whole)

    def finish(self) -> None:
        """What was expected is written (the command ended well)."""
        _base, _running, whole = self._state
        self._state = (whole, 0, whole)

    def mirror(self, done: int, total: int) -> None:
        """Take another process's count as this one (the SPM writer's, relayed)."""
        self._state = (max(0, done), 0, max(0, total))

    def snapshot(self) -> tuple[int, int]:
        """``(done, total)``; done never exceeds total."""
        base, running, whole = self._state
        return min(base + running, whole), whole

    @property
    def expected(self) -> bool:
        return self._state[2] > 0


def written_by(pid: int) -> int | None:
    """Bytes process ``pid`` has written (``wchar`` of /proc/<pid>/io), None if unknown."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "wchar":
            try:
                return int(value)
            except ValueError:
                return None
    return None
