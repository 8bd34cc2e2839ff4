"""The progress monitor of an outgoing migration, on a thread of the migration's own.

Every ``[migration] progress_interval`` it reads libvirt's job statistics of the domain
(``jobStats``: no domain job is taken, so it never waits behind the migration), and:

- publishes ``|virt|VM_migration_status|<vmID>`` (progress %, bytes remaining, bandwidth,
  iteration) and keeps the same in the job's record (in memory);
- applies the limits the request (or ``VM.migrateChangeParams``) set: the downtime once
  libvirt's job exists, a changed bandwidth or downtime whenever they change;
- at the migration's timeout, switches to post-copy when the request allowed it (once),
  or else aborts the migration (``timed_out`` is then set). libvirt's job exists before
  QEMU migrates (the destination is still being prepared, its hooks run), and QEMU refuses
  the switch until then: a refused switch is tried again at every sample, for at most
  another timeout (at least ``POST_COPY_GRACE``), and then the migration is aborted;
- aborts a migration that was cancelled (``VM.migrateCancel``) while libvirt's job did not
  exist yet, as soon as it does.

It stops when told (the migration call returned) or when libvirt's job is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import libvirt

from actors.host.libvirthandle import LibvirtHandle
from actors.jobs.store import JobStore
from actors.vm.migenv import Publish
from actors.vm.migspec import UNLIMITED_BANDWIDTH, MigrationSpec, active, sample
from messaging.errors import LibvirtUnavailable

log = logging.getLogger(__name__)

POST_COPY_GRACE = 30.0  # s a refused switch to post-copy is retried past the timeout (least)


class MigrationMonitor:
    def __init__(self, vm_id: str, *, libvirt_handle: LibvirtHandle, jobs: JobStore,
                 publish: Publish, interval: float, spec: Callable[[], MigrationSpec],
                 cancelled: threading.Event, bandwidth: int | None = None) -> None:
        self.vm_id = vm_id
        self._libvirt = libvirt_handle
        self._jobs = jobs
        self._publish = publish
        self._interval = interval
        self._spec = spec  # the current request (its limits may change meanwhile)
        self._cancelled = cancelled
        self._bandwidth = bandwidth  # what libvirt's job was started with (None: unknown)
        self._aborted = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.timed_out = False
        self.post_copy = False
        self._switch_refused = False
        self.progress = 0
        self.samples = 0
        self._previous: dict[str, Any] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"migrate-{self.vm_id[:8]}-monitor")
        self._thread.start()

    def finish(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            with self._libvirt.lease() as conn:
                dom = conn.lookupByUUIDString(self.vm_id)
                self._watch(dom)
        except (libvirt.libvirtError, LibvirtUnavailable) as e:
            log.warning("VM %s: the migration's monitor stopped: %s", self.vm_id, e)
        except Exception:
            log.exception("VM %s: the migration's monitor failed", self.vm_id)

    def _watch(self, dom: libvirt.virDomain) -> None:
        applied: tuple[int | None, int | None] = (self._bandwidth, None)
        began: float | None = None
        wait = min(0.2, self._interval)  # the first look comes early: set the downtime
        while not self._stop.wait(wait):
            wait = self._interval
            try:
                stats = dom.jobStats()
            except libvirt.libvirtError as e:
                log.debug("VM %s: no job statistics: %s", self.vm_id, e)
                continue
            if not active(stats):
                if began is not None:
                    return  # libvirt's job ended: the migration call returns
                continue
            began = began or time.monotonic()
            if self._cancelled.is_set() and not self._aborted:
                self._abort(dom, "it was cancelled")
            spec = self._spec()
            if (spec.bandwidth, spec.downtime) != applied:
                applied = self._apply(dom, spec, applied)
            self._report(spec, stats)
            elapsed = time.monotonic() - began
            if elapsed > spec.timeout:
                self._on_timeout(dom, spec, elapsed)

    def _apply(self, dom: libvirt.virDomain, spec: MigrationSpec,
               applied: tuple[int | None, int | None]) -> tuple[int | None, int | None]:
        """Set the limits that differ from those in force (the first downtime always; the
        first bandwidth went with the migration call), and record them in the job."""
        bandwidth, downtime = applied
        try:
            if spec.downtime != downtime:
                dom.migrateSetMaxDowntime(spec.downtime, 0)
                downtime = spec.downtime
            if spec.bandwidth != bandwidth:
                dom.migrateSetMaxSpeed(spec.bandwidth or UNLIMITED_BANDWIDTH, 0)
                bandwidth = spec.bandwidth
        except libvirt.libvirtError as e:
            log.warning("VM %s: cannot apply the migration's limits: %s", self.vm_id, e)
        self._jobs.update(spec.job_id, details=spec.details())
        return bandwidth, downtime

    def _report(self, spec: MigrationSpec, stats: dict[str, Any]) -> None:
        now = sample(stats, self.progress, self._previous)
        self._previous = stats
        self.progress = now["progress"]
        self.samples += 1
        details = {k: v for k, v in now.items() if k != "progress"}
        if self.post_copy:
            details["postCopyActive"] = True
        job = self._jobs.update(spec.job_id, persist=False, progress=self.progress,
                                details=details)
        self._publish(f"|virt|VM_migration_status|{self.vm_id}",
                      {"vmID": self.vm_id, "jobID": spec.job_id, "status": job.status,
                       **now})

    def _on_timeout(self, dom: libvirt.virDomain, spec: MigrationSpec, elapsed: float) -> None:
        if spec.post_copy and not self.timed_out:
            if self.post_copy:
                return
            if not self._switch_refused:
                log.warning("VM %s: migration not done after %g s: switching to post-copy",
                            self.vm_id, spec.timeout)
            try:
                dom.migrateStartPostCopy(0)
                self.post_copy = True
                # recorded at once: the rest may move before the monitor looks again
                self._jobs.update(spec.job_id, details={"postCopyActive": True})
                log.info("VM %s: the migration runs in post-copy", self.vm_id)
                return
            except libvirt.libvirtError as e:
                if elapsed <= spec.timeout + max(spec.timeout, POST_COPY_GRACE):
                    if not self._switch_refused:
                        log.warning("VM %s: cannot switch to post-copy yet (%s): trying "
                                    "again at every sample", self.vm_id, e)
                    self._switch_refused = True
                    return
                log.warning("VM %s: cannot switch to post-copy (%s): aborting", self.vm_id, e)
        if self.timed_out:
            return
        self.timed_out = True
        self._abort(dom, f"it was not done after {spec.timeout:g} s")

    def _abort(self, dom: libvirt.virDomain, why: str) -> None:
        log.warning("VM %s: aborting the migration: %s", self.vm_id, why)
        self._aborted = True
        try:
            dom.abortJob()
        except libvirt.libvirtError as e:
            log.warning("VM %s: cannot abort the migration: %s", self.vm_id, e)
