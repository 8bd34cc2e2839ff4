"""What samples a VM job's progress while libvirt works on it: a hibernation's job
statistics (:class:`~actors.vm.jobprogress.JobProgress`) and the memory image's offset in
bytes (:class:`~actors.vm.imageprogress.ImageProgress`, a save or a restore).

Both sample on threads of their own, inside the VM's blocking operation (on its guest-call
thread), never on the actor. A VM without a job, or an agent that does not run jobs (unit
tests: no migration environment), gets a watch that does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from actors.host.libvirthandle import LibvirtHandle
from actors.vm.imageprogress import ImageProgress, watching
from actors.vm.jobprogress import JobProgress
from actors.vm.migenv import MigrationEnv
from actors.vm.ops import ImageWatch

__all__ = ["image_watch", "save_statistics"]


def image_watch(migration: MigrationEnv | None, vm_id: str, job_id: str | None, *,
                reading: bool) -> ImageWatch:
    """What wraps a save (or a restore, ``reading``) of job ``job_id``: samples QEMU's
    offset on the memory image into the job (bytes written or read)."""
    if job_id is None or migration is None:
        return lambda _path: contextlib.nullcontext()
    jobs, interval = migration.jobs, migration.config.progress_interval
    return lambda path: watching(ImageProgress(vm_id, job_id, path, jobs=jobs,
                                               interval=interval, reading=reading))


@contextlib.contextmanager
def save_statistics(libvirt_handle: LibvirtHandle, migration: MigrationEnv | None, vm_id: str,
                    job_id: str | None) -> Iterator[None]:
    """Sample libvirt's job statistics of a save into job ``job_id`` for the block."""
    if job_id is None or migration is None:
        yield
        return
    progress = JobProgress(vm_id, job_id, libvirt_handle=libvirt_handle, jobs=migration.jobs,
                           interval=migration.config.progress_interval)
    progress.start()
    try:
        yield
    finally:
        progress.finish()
