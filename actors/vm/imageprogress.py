"""A hibernation's or a restore's progress in bytes: how far QEMU has written or read its
memory image, sampled on a thread of its own (``imageprogress-<vm>``) while libvirt saves or
restores.

libvirt opens the image and hands it to QEMU (a restore reads it through its ``fd:``
migration stream), or to its ``libvirt_iohelper`` that writes what QEMU sends (a save), so
the offset of that process's descriptor on the image, in ``/proc/<pid>/fdinfo``, is the
number of bytes written or read so far. The descriptor is looked for among the processes
with those names until it is found, then only its offset is read.

The figures go into the job's details (``Host.getJobs``) as ``bytesDone`` and, for a
restore, ``bytesTotal`` (the image's size; the percent follows it), and each change is
published as a ``|jobs|status|<jobID>`` event. When the operation succeeded,
:meth:`ImageProgress.finish` records its whole size: a save's ``bytesDone`` and
``bytesTotal`` are then the bytes of the image written, a restore's its size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from actors.jobs.store import JobStore

log = logging.getLogger(__name__)

PROC = Path("/proc")
MAX_PROCESSES = 100_000  # a bound on one scan of /proc
#: the processes that move a memory image's bytes (their names as /proc/<pid>/comm begins)
MOVERS = ("qemu", "libvirt_iohelp")


def find_reader(path: str, *, proc: Path = PROC,
                comm_prefix: tuple[str, ...] = MOVERS) -> tuple[int, int] | None:
    """(pid, fd) of a process whose name begins with one of ``comm_prefix`` that holds
    ``path`` open, if any."""
    wanted = os.path.realpath(path)
    try:
        pids = [e.name for e in os.scandir(proc) if e.name.isdigit()][:MAX_PROCESSES]
    except OSError:
        return None
    for pid in pids:
        try:
            if not (proc / pid / "comm").read_text().startswith(comm_prefix):
                continue
            for entry in os.scandir(proc / pid / "fd"):
                with contextlib.suppress(OSError):
                    if str(Path(entry.path).readlink()) == wanted:
                        return int(pid), int(entry.name)
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return None


def position(pid: int, fd: int, *, proc: Path = PROC) -> int | None:
    """The offset of ``fd`` of ``pid`` (None once it is closed or the process is gone)."""
    try:
        text = (proc / str(pid) / "fdinfo" / str(fd)).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "pos":
            return int(value.strip())
    return None


class ImageProgress:
    """Samples QEMU's offset on ``path`` every ``interval`` s into job ``job_id``."""

    def __init__(self, vm_id: str, job_id: str, path: str, *, jobs: JobStore,
                 interval: float, reading: bool, proc: Path = PROC,
                 comm_prefix: tuple[str, ...] = MOVERS) -> None:
        self.vm_id = vm_id
        self.job_id = job_id
        self.path = path
        self._jobs = jobs
        self._interval = interval
        self._proc = proc
        self._comm = comm_prefix
        self._total: int | None = None
        if reading:
            with contextlib.suppress(OSError):
                self._total = _size(path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"imageprogress-{vm_id[:8]}")
        self.last: int | None = None

    def start(self) -> None:
        self._thread.start()

    def finish(self, *, succeeded: bool, timeout: float = 5.0) -> None:
        """Stop sampling; when the operation succeeded, record the image's whole size."""
        self._stop.set()
        self._thread.join(timeout)
        if not succeeded:
            return
        total = self._total
        if total is None:  # a save: what it wrote
            with contextlib.suppress(OSError):
                total = _size(self.path)
        if total:
            self._report(total, total)

    def _run(self) -> None:
        found: tuple[int, int] | None = None
        try:
            while not self._stop.wait(self._interval):
                if found is None:
                    found = find_reader(self.path, proc=self._proc, comm_prefix=self._comm)
                    if found is None:
                        continue
                done = position(*found, proc=self._proc)
                if done is None:
                    found = None  # closed: it may be opened again (a new QEMU)
                    continue
                if done != self.last:
                    self._report(done, self._total)
        except KeyError:
            pass  # the job is gone (forgotten)
        except Exception:
            log.exception("VM %s: sampling the progress of job %s failed", self.vm_id,
                          self.job_id)

    def _report(self, done: int, total: int | None) -> None:
        self.last = done
        details = {"bytesDone": done}
        changes: dict[str, object] = {}
        if total:
            details["bytesTotal"] = total
            changes["progress"] = min(99, 100 * min(done, total) // total)
        self._jobs.update(self.job_id, persist=False, publish=True, details=details,
                          **changes)


def _size(path: str) -> int:
    """The size of a file, or of a block device (a volume)."""
    with open(path, "rb") as f:
        return f.seek(0, os.SEEK_END)


@contextlib.contextmanager
def watching(progress: ImageProgress | None) -> Iterator[None]:
    """Sample ``progress`` (if any) for the block; record the whole size if it succeeds."""
    if progress is None:
        yield
        return
    progress.start()
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        progress.finish(succeeded=succeeded)
