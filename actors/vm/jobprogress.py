"""A job's progress from libvirt's statistics of the domain job it runs (a save), sampled on
a thread of its own (``jobprogress-<vm>``) for as long as the job's operation runs.

``jobStats`` takes no domain job, so sampling never waits behind the save it watches. The
progress goes into the job's record in memory (``Host.getJobs``); the job's end sets 100.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import libvirt

from actors.host.libvirthandle import LibvirtHandle
from actors.jobs.store import JobStore
from actors.vm.migspec import active, sample
from messaging.errors import LibvirtUnavailable

log = logging.getLogger(__name__)


class JobProgress:
    def __init__(self, vm_id: str, job_id: str, *, libvirt_handle: LibvirtHandle,
                 jobs: JobStore, interval: float) -> None:
        self.vm_id = vm_id
        self.job_id = job_id
        self._libvirt = libvirt_handle
        self._jobs = jobs
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"jobprogress-{vm_id[:8]}")

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        progress = 0
        previous: dict[str, Any] | None = None
        try:
            with self._libvirt.lease() as conn:
                dom = conn.lookupByUUIDString(self.vm_id)
                while not self._stop.wait(self._interval):
                    stats = dom.jobStats()
                    if not active(stats):
                        continue
                    progress = sample(stats, progress, previous)["progress"]
                    previous = stats
                    self._jobs.update(self.job_id, persist=False, progress=progress)
        except (libvirt.libvirtError, LibvirtUnavailable) as e:
            log.debug("VM %s: no more progress of job %s: %s", self.vm_id, self.job_id, e)
        except KeyError:
            pass  # the job is gone (forgotten)
