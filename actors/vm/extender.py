"""The VM actor's thin provisioning: "a running VM should keep running".

:class:`Extender` is a component of :class:`~actors.vm.actor.VmActor` (like its guest agent):
its state lives on the actor's thread, its blocking steps (:mod:`actors.vm.thinwork`) run on
threads of its own :class:`~actors.vm.guestcall.GuestCaller`, each with a deadline, one per
drive at a time, and their outcomes come back as messages the actor hands to
:meth:`Extender.receive`. It never waits.

- When the VM runs (started, or re-attached after a restart) it finds the thin drives and
  sets each one's block threshold (:class:`~actors.vm.thin.ThinDrive`).
- A threshold event (one-shot: set again after every extension) asks for one chunk more;
  requests for a drive coalesce: while a job runs, one more (at most) follows it.
- The job has the SPM extend the volume (this host's writer when it is the SPM, the mailbox
  otherwise: ``VolumeProvider.extend_volume``), checks that the device shows the new size and
  sets the next threshold. A failed job is tried again with a backoff; one that only waited
  for an absent SPM is asked again at once (the mailbox request keeps waiting).
- A VM paused with ENOSPC on a thin drive gets the same extension, and is resumed once every
  drive that ran out has room again; one that ran out on anything else is left paused.
- A VM paused with EIO is resumed when the storage domains of its volumes turn valid again
  (the storage monitors tell the VM subsystem, which tells the actors).
- Every ``[thin] check_interval`` a slow check re-reads every idle drive (a lost threshold
  event, a failed job) and the EIO condition.

Each drive's physical size, threshold and extension count go to the VM's stats
(``VM.getStats`` ``disks``) and to ``Actors.inspect``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from actors.clock import Clock, NamedTimers, TimerHandle
from actors.config import ThinConfig
from actors.host.libvirtconn import DomainEvent
from actors.storage.handle import VolumeHandle
from actors.vm.board import VmBoard
from actors.vm.domxml import disk_targets
from actors.vm.guestcall import GuestCaller
from actors.vm.params import VmParams
from actors.vm.status import PauseCode, VmStatus, is_io_error_pause, pause_code_from_io_error
from actors.vm.thin import ChunkPolicy, ThinDrive, needs_room
from actors.vm.thinwork import Job, Outcome, Scan, ThinWork, Wanted
from messaging.errors import StorageTimeout, VdsmError

log = logging.getLogger(__name__)

SCAN = "thin-scan"
SCAN_TIMEOUT = 120.0  # the disks, then each candidate volume's size from storage
LIBVIRT_MARGIN = 30.0  # a job's libvirt calls, on top of its wait for the SPM
RESUME_RETRY = 1.0  # s: when a resume could not start (another operation ran)
PART = "thin"  # the VM board part of the stats
WATCHED = frozenset({VmStatus.UP, VmStatus.PAUSED, VmStatus.POWERING_UP,
                     VmStatus.POWERING_DOWN})


@dataclass(frozen=True)
class ThinMessage:
    """A message of the VM's thin provisioning; the actor hands it to its Extender."""


@dataclass(frozen=True)
class _Scanned(ThinMessage):
    serial: int
    future: Future[Scan]


@dataclass(frozen=True)
class _JobDone(ThinMessage):
    target: str
    serial: int
    job: Job
    future: Future[Outcome]
    checked: bool  # only the slow check asked for it


@dataclass(frozen=True)
class _Tick(ThinMessage):
    pass


@dataclass(frozen=True)
class _Retry(ThinMessage):
    target: str


@dataclass(frozen=True)
class _ResumeCheck(ThinMessage):
    pass


@dataclass(frozen=True)
class DomainHealthChanged(ThinMessage):
    """A storage domain turned valid or invalid (told to every VM actor)."""

    sd_uuid: str
    valid: bool


Status = Callable[[], tuple[VmStatus, PauseCode | None]]


class Extender:
    def __init__(
        self,
        vm_id: str,
        *,
        work: ThinWork,
        config: ThinConfig,
        clock: Clock,
        board: VmBoard,
        tell: Callable[[ThinMessage], None],
        status: Status,
        resume: Callable[[str], bool],
        domain_valid: Callable[[str], bool | None],
        who: str = "",
    ) -> None:
        self.vm_id = vm_id
        self.who = who or vm_id
        self._work = work
        self._config = config
        self._policy = ChunkPolicy(config)
        self._clock = clock
        self._board = board
        self._tell = tell
        self._status = status
        self._resume = resume
        self._domain_valid = domain_valid
        self._caller = GuestCaller(vm_id, clock=clock)
        self._drives: dict[str, ThinDrive] = {}
        self._wanted: tuple[Wanted, ...] = ()
        self._domains: frozenset[str] = frozenset()
        self._scan_serial = 0
        self._scanned = False
        self._rescan = False
        self._job_serial = 0
        self._serials: dict[str, int] = {}
        self._ticker: TimerHandle | None = None
        # a drive's retry, the resume check
        self._timers: NamedTimers[ThinMessage] = NamedTimers(clock, tell)
        self._starved: set[str] = set()  # thin drives that ran out (ENOSPC), until they have room
        self._foreign_enospc = False  # an ENOSPC on something that is not a thin drive
        self._eio_seen_invalid = False
        self.resumes = 0
        self.enospc_pauses = 0

    # --- what the actor tells it ---------------------------------------------------------

    def track(self, params: VmParams) -> None:
        """The VM runs with ``params`` (started, or found again): find its thin drives."""
        targets = disk_targets(params)
        self._wanted = tuple(
            Wanted(targets[d.index], VolumeHandle(d.volume.pool_id, d.volume.domain_id,
                                                  d.volume.image_id, d.volume.volume_id),
                   d.threshold_mib)
            for d in params.drives
            if d.volume is not None and d.device == "disk" and not d.readonly
            and d.format == "cow")
        self._domains = frozenset(d.volume.domain_id for d in params.drives
                                  if d.volume is not None)
        if not self._domains:
            return  # nothing of the agent's storage: nothing to watch
        if self._ticker is None:
            interval = self._config.check_interval
            self._ticker = self._clock.call_every(interval, lambda: self._tell(_Tick()))
        self._scan()

    def on_threshold(self, event: DomainEvent) -> None:
        dev, _path, threshold, excess = event.args
        drive = self._drives.get(str(dev).split("[", 1)[0])
        if drive is None:
            log.debug("VM %s: threshold event of %s, not a thin drive", self.who, dev)
            return
        drive.threshold = 0  # one-shot: it fired
        drive.events += 1
        drive.allocation = max(drive.allocation, int(threshold) + int(excess))
        drive.rate.sample(event.time, drive.allocation)
        self._request(drive, event.time, known=True)

    def on_io_error(self, event: DomainEvent) -> None:
        src, alias, action, reason = event.args
        if not is_io_error_pause(action):
            return
        code = pause_code_from_io_error(reason)
        if code != PauseCode.ENOSPC:
            log.info("VM %s: paused on an I/O error of %s (%r: %s)", self.who, src or alias,
                     reason, code)
            self._eio_seen_invalid = self._eio_seen_invalid or self._any_invalid()
            return
        drive = next((d for d in self._drives.values()
                      if src in (d.source, d.volume.vol) or (alias and alias == d.alias)), None)
        if drive is None:
            self._foreign_enospc = True
            log.warning("VM %s: out of space on %s (%s), which is not a thin drive: it stays "
                        "paused", self.who, src or alias, reason)
            return
        self.enospc_pauses += 1
        log.info("VM %s: %s ran out of space: extending it", self.who, drive.target)
        drive.allocation = max(drive.allocation, drive.physical)  # it wrote past the end
        self._starved.add(drive.target)
        self._request(drive, event.time, force=not drive.busy, known=True)

    def on_status(self) -> None:
        """The VM's status changed (the actor calls this after every change)."""
        status, code = self._status()
        if status == VmStatus.DOWN:
            self._forget()
        elif status == VmStatus.UP:
            self._starved.clear()
            self._foreign_enospc = False
            self._eio_seen_invalid = False
        elif status == VmStatus.PAUSED and code == PauseCode.ENOSPC:
            self._maybe_resume()
        elif status == VmStatus.PAUSED and code == PauseCode.EIO:
            self._eio_seen_invalid = self._eio_seen_invalid or self._any_invalid()
            self._eio_check()

    def receive(self, message: ThinMessage) -> None:
        if isinstance(message, _Scanned):
            self._on_scanned(message)
        elif isinstance(message, _JobDone):
            self._on_job_done(message)
        elif isinstance(message, _Tick):
            self._on_tick()
        elif isinstance(message, _Retry):
            drive = self._drives.get(message.target)
            if drive is not None and not drive.busy:
                self._submit(drive)
        elif isinstance(message, _ResumeCheck):
            self._maybe_resume()
            self._eio_check()
        elif isinstance(message, DomainHealthChanged):
            self._on_domain(message)

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"drives": {t: d.describe(now) for t, d in sorted(self._drives.items())},
                "scanned": self._scanned, "starved": sorted(self._starved),
                "foreignEnospc": self._foreign_enospc, "enospcPauses": self.enospc_pauses,
                "resumes": self.resumes, "calls": self._caller.describe()}

    def close(self) -> None:
        self._forget()
        self._caller.close()

    def _forget(self) -> None:
        """Stop watching (the VM is down, or the actor stops); jobs in flight finish alone."""
        if self._ticker is not None:
            self._ticker.cancel()
        self._ticker = None
        self._timers.cancel_all()
        self._drives.clear()
        self._serials.clear()
        self._wanted, self._domains = (), frozenset()
        self._scan_serial += 1  # a scan in flight is stale

    # --- finding the drives --------------------------------------------------------------

    def _scan(self) -> None:
        if not self._wanted:
            self._scanned = True
            return
        self._scan_serial += 1
        serial, wanted, work = self._scan_serial, self._wanted, self._work
        try:
            future = self._caller.submit(SCAN, lambda: work.scan(wanted), timeout=SCAN_TIMEOUT,
                                         name="finding the thin drives")
        except (VdsmError, RuntimeError) as e:
            log.warning("VM %s: cannot look for thin drives now (%s): at the next check",
                        self.who, e)
            self._rescan = True
            return
        self._rescan = False
        future.add_done_callback(lambda f: self._tell(_Scanned(serial, f)))

    def _on_scanned(self, message: _Scanned) -> None:
        if message.serial != self._scan_serial:
            return
        error = message.future.exception()
        if error is not None:
            log.warning("VM %s: finding its thin drives failed (%s): again at the next check",
                        self.who, error)
            self._rescan = True
            return
        scan = message.future.result()
        drives: dict[str, ThinDrive] = {}
        for found in scan.found:
            disk = found.disk
            drive = self._drives.get(disk.target)
            if drive is None or drive.volume != found.volume:
                drive = ThinDrive(disk.target, disk.node, found.volume, disk.source,
                                  disk.alias, found.capacity, found.limit, found.physical,
                                  found.allocation, found.watermark_mib)
                log.info("VM %s: %s is thin (volume %s: %d of at most %d bytes)", self.who,
                         disk.target, found.volume.vol, found.physical, found.limit)
            else:
                drive.node, drive.source, drive.alias = disk.node, disk.source, disk.alias
                drive.capacity, drive.limit = found.capacity, found.limit
                drive.physical, drive.allocation = found.physical, found.allocation
            drives[disk.target] = drive
        self._drives = drives
        self._scanned = True
        self._starved = (self._starved & drives.keys()) | (scan.no_space & drives.keys())
        self._foreign_enospc = self._foreign_enospc or bool(scan.no_space - drives.keys())
        self._publish()
        now = time.monotonic()
        for drive in drives.values():
            self._request(drive, now, force=drive.target in self._starved)

    # --- extending -----------------------------------------------------------------------

    def _request(self, drive: ThinDrive, since: float, *, force: bool = False,
                 known: bool = False, check: bool = False) -> None:
        """Have a job look after ``drive``; ``known``: an event said how far the guest wrote
        (the job need not ask qemu); ``check``: the slow check asks."""
        drive.checked = check and drive.since is None and not drive.busy
        drive.since = since if drive.since is None else min(drive.since, since)
        drive.forced = drive.forced or force
        drive.known = drive.known or known
        if drive.busy:
            drive.again = True
            return
        self._submit(drive)

    def _submit(self, drive: ThinDrive) -> None:
        now = time.monotonic()
        if drive.failures and now < drive.retry_at:
            return  # its retry is scheduled
        chunk = self._policy.chunk(drive.rate.rate)
        known = (drive.allocation, drive.physical) if drive.known else None
        job = Job(drive.target, drive.node, drive.source, drive.volume, known, drive.forced,
                  chunk, self._policy.watermark(chunk, drive.watermark_mib), drive.limit,
                  drive.since if drive.since is not None else now,
                  self._config.extend_timeout)
        work = self._work
        try:
            future = self._caller.submit(f"thin-{drive.target}", lambda: work.ensure(job),
                                         timeout=job.timeout + LIBVIRT_MARGIN,
                                         name=f"extending {drive.target}")
        except (VdsmError, RuntimeError) as e:  # a stuck job of the drive, or closed
            self._failed(drive, e)
            return
        self._job_serial += 1
        serial = self._serials[drive.target] = self._job_serial
        checked, drive.checked = drive.checked, False
        drive.busy, drive.again, drive.forced, drive.known = True, False, False, False
        target = drive.target
        future.add_done_callback(
            lambda f: self._tell(_JobDone(target, serial, job, f, checked)))

    def _on_job_done(self, message: _JobDone) -> None:
        drive = self._drives.get(message.target)
        if drive is None or self._serials.get(message.target) != message.serial:
            return  # the drives were found again meanwhile
        drive.busy = False
        error = message.future.exception()
        if error is not None:
            drive.forced = drive.forced or message.job.force
            drive.known = drive.known or message.job.known is not None
            self._failed(drive, error)
        else:
            self._extended(drive, message.job, message.future.result(), message.checked)
        self._publish()
        if drive.again and not drive.busy:
            self._submit(drive)
        self._maybe_resume()

    def _extended(self, drive: ThinDrive, job: Job, outcome: Outcome, checked: bool) -> None:
        drive.failures, drive.last_error = 0, ""
        # What the job knew when it started, or what requests that came meanwhile said (a
        # threshold event, ENOSPC), whichever is further: the follow-up goes by that.
        drive.allocation = max(drive.allocation, outcome.allocation)
        drive.physical = outcome.physical
        drive.threshold = outcome.threshold
        drive.rate.sample(outcome.sampled_at, outcome.allocation)
        if outcome.asked:
            drive.extensions += 1
            if outcome.latency is not None:
                drive.latencies.append(outcome.latency)
            log.info("VM %s: %s extended to %d bytes in %.3f s (threshold %d)", self.who,
                     drive.target, outcome.physical, outcome.latency or 0.0, outcome.threshold)
            if checked:
                drive.missed += 1
                log.warning("VM %s: %s was written up to %d bytes and no threshold event "
                            "said so (lost?): the slow check extended it", self.who,
                            drive.target, outcome.allocation)
        if not drive.again:
            drive.since = None
        if drive.allocation < outcome.physical:
            self._starved.discard(drive.target)
        elif drive.full:
            log.error("VM %s: %s is out of space at its largest size (%d bytes)", self.who,
                      drive.target, drive.physical)
        if outcome.asked and not drive.full and \
                needs_room(drive.allocation, outcome.physical, job.watermark):
            drive.again = True  # the guest writes faster than one chunk per extension

    def _failed(self, drive: ThinDrive, error: BaseException) -> None:
        drive.failures += 1
        drive.last_error = str(error)
        if isinstance(error, StorageTimeout):
            delay = 0.0  # it only waited for the SPM: wait again (the request stays queued)
        else:
            delay = min(self._config.retry_max, 0.5 * 2 ** min(drive.failures, 10))
        drive.retry_at = time.monotonic() + delay
        log.warning("VM %s: extending %s failed (%s); again in %.1f s", self.who,
                    drive.target, error, delay)
        self._later(f"retry-{drive.target}", delay, _Retry(drive.target))

    # --- resuming ------------------------------------------------------------------------

    def _maybe_resume(self) -> None:
        status, code = self._status()
        if status != VmStatus.PAUSED or code != PauseCode.ENOSPC:
            return
        if not self._scanned or self._foreign_enospc or self._starved:
            return
        if self._resume("its thin volumes were extended"):
            self.resumes += 1
        else:
            self._later("resume", RESUME_RETRY, _ResumeCheck())

    def _on_domain(self, message: DomainHealthChanged) -> None:
        if message.sd_uuid not in self._domains:
            return
        if not message.valid:
            self._eio_seen_invalid = True
            return
        self._eio_check()

    def _eio_check(self) -> None:
        status, code = self._status()
        if status != VmStatus.PAUSED or code != PauseCode.EIO or not self._eio_seen_invalid:
            return
        if not all(self._domain_valid(sd) for sd in self._domains):
            return
        if self._resume("its storage domains are valid again"):
            self.resumes += 1
            self._eio_seen_invalid = False
        else:
            self._later("resume", RESUME_RETRY, _ResumeCheck())

    def _any_invalid(self) -> bool:
        return any(self._domain_valid(sd) is False for sd in self._domains)

    # --- the slow check ------------------------------------------------------------------

    def _on_tick(self) -> None:
        status, code = self._status()
        if status not in WATCHED:
            return
        if self._rescan:
            self._scan()
        now = time.monotonic()
        for drive in self._drives.values():
            if not drive.busy and (not drive.failures or now >= drive.retry_at):
                self._request(drive, now, check=True)
        if status == VmStatus.PAUSED and code == PauseCode.EIO:
            self._eio_seen_invalid = self._eio_seen_invalid or self._any_invalid()
            self._eio_check()
        self._maybe_resume()

    # --- helpers -------------------------------------------------------------------------

    def _later(self, name: str, delay: float, message: ThinMessage) -> None:
        """Tell ``message`` after ``delay`` s (replacing the timer of that name)."""
        self._timers.set(name, delay, message)

    def _publish(self) -> None:
        self._board.set_part(self.vm_id, PART, {
            "disks": {t: d.stats() for t, d in self._drives.items()}})
