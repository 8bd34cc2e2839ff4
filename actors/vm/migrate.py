"""An outgoing migration: the job, run on a thread of its own (``migrate-<vm>``).

1. wait for one of this host's outgoing slots (``[migration] max_outgoing``; first come,
   first served; a cancel leaves the queue);
2. ``before_vm_migrate_source``, then ask the destination's agent to prepare
   (``VM.migrationCreate``: its actor, volumes and hooks exist before the guest arrives; it
   answers with the XML the guest will run with there). This host's migrations ask one
   destination in turn (first come, first served), and a destination at its incoming limit
   is asked again, with a backoff, for as long as the migration's timeout (at least
   ``prepare_timeout``): the one that waits longest goes first;
3. libvirt's peer-to-peer live migration (``migrateToURI3``), blocking this thread, while a
   :class:`~actors.vm.migmonitor.MigrationMonitor` reports progress and enforces the limits
   and the timeout on a second thread;
4. the outcome, checked against the world rather than trusted from the call's return: when
   the call failed and the domain still runs here, the guest stayed (the destination is told
   to drop what it prepared: it never ran there); when the domain is gone from here, the
   destination is asked whether the guest runs there.

The actor is told :class:`MigrationStarted` when the migration leaves the queue (its VM is
then ``Migration Source``) and :class:`MigrationEnded` with where the guest is. The job's
record (:class:`~actors.jobs.store.JobStore`) says the rest; its end is recorded once the
actor applied the outcome (or did not within ``APPLY_ATTEMPTS`` x ``APPLY_WAIT``): a client
that reads the job's end finds the VM's status settled and may migrate it again at once.
A migration whose agent was restarted while libvirt went on migrating is *resumed*
(``resume=True``): no queue, no preparation, only steps 3 (watching libvirt's job instead of
calling it) and 4.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from actors.host.libvirthandle import LibvirtHandle
from actors.jobs.record import ABORTED, DONE, FAILED, RUNNING
from actors.vm.migenv import MigrationEnv
from actors.vm.migmonitor import MigrationMonitor
from actors.vm.migops import MigrationOps
from actors.vm.migspec import MigrationSpec, libvirt_flags, libvirt_params
from actors.vm.params import VmParams
from messaging.deadline import REPLY_MARGIN
from messaging.errors import (
    ActorUnavailable,
    LibvirtUnavailable,
    MigrationError,
    MigrationLimit,
    MigrationNotInProgress,
    PeerError,
    PeerUnreachable,
    Recovering,
    VdsmError,
)

log = logging.getLogger(__name__)

Where = Literal["here", "there", "gone", "unknown"]
LIMIT_BACKOFF = 0.5  # the first wait for a destination at its incoming limit (doubling)
APPLY_WAIT = 1.0  # s: for the VM's actor to apply a migration's outcome, before telling again
APPLY_ATTEMPTS = 3  # then the job's end is recorded anyway (the actor is gone or stuck)
LIMIT_BACKOFF_MAX = 2.0
#: answers of a destination worth asking again, and what the job says meanwhile
AGAIN = {MigrationLimit.code: "{peer} runs as many incoming migrations as it allows: waiting",
         Recovering.code: "{peer} is recovering after a restart: waiting",
         ActorUnavailable.code: "{peer}'s VM service is restarting: waiting"}
ASK_ATTEMPTS = 50  # asking the destination whether the guest arrived (every 0.2 s)


@dataclass(frozen=True)
class MigrationStarted:
    """Told to the VM actor: the migration left the queue."""

    job_id: str


@dataclass(frozen=True)
class MigrationEnded:
    """Told to the VM actor: the migration is over; ``where`` the guest runs now."""

    job_id: str
    status: str  # done, failed or aborted
    where: Where
    error: VdsmError | None = None
    applied: threading.Event = field(default_factory=threading.Event, compare=False,
                                     repr=False)
    """Set by the actor once it applied this outcome (or found it was not its migration's)."""


class OutgoingMigration:
    def __init__(self, params: VmParams, spec: MigrationSpec, *, env: MigrationEnv,
                 ops: MigrationOps, libvirt: LibvirtHandle, notify: Callable[[Any], None],
                 started: float | None = None, resume: bool = False) -> None:
        self.vm_id = params.vm_id
        self._params = params
        self._spec = spec
        self._env = env
        self._ops = ops
        self._libvirt = libvirt
        self._notify = notify
        self._started = started
        self._resume = resume
        self._lock = threading.Lock()
        self.cancelled = threading.Event()
        self.in_libvirt = resume
        self.left_queue = False
        self._created = False  # the destination prepared the VM (drop it if we fail)
        self._monitor: MigrationMonitor | None = None

    @property
    def job_id(self) -> str:
        return self._spec.job_id

    @property
    def spec(self) -> MigrationSpec:
        with self._lock:
            return self._spec

    # --- asked by the actor (never blocking) ------------------------------------------------

    def begin(self) -> None:
        self._env.live.add(self.job_id, self)
        threading.Thread(target=self._main, name=f"migrate-{self.vm_id[:8]}",
                         daemon=True).start()

    def rebind(self, notify: Callable[[Any], None]) -> None:
        """Tell another actor from now on (the VM's actor was restarted)."""
        self._notify = notify
        if self.left_queue:
            notify(MigrationStarted(self.job_id))

    def request_cancel(self) -> None:
        self.cancelled.set()

    def change(self, *, bandwidth: int | None, downtime: int | None) -> None:
        """New limits: the monitor applies (and records) them, also to a migration that is
        still queued once it starts."""
        with self._lock:
            self._spec = self._spec.with_limits(bandwidth=bandwidth, downtime=downtime)

    def describe(self) -> dict[str, Any]:
        return {"jobID": self.job_id, "dst": self.spec.peer, "inLibvirt": self.in_libvirt,
                "cancelled": self.cancelled.is_set()}

    # --- the job's thread -------------------------------------------------------------------

    def _main(self) -> None:
        try:
            ended = self._resumed() if self._resume else self._run()
        except Exception as e:
            log.exception("VM %s: migration %s failed unexpectedly", self.vm_id, self.job_id)
            ended = MigrationEnded(self.job_id, FAILED, "unknown",
                                   MigrationError(vmID=self.vm_id, reason=repr(e)))
        finally:
            self._env.outgoing.release(self.job_id)
        self._hand_over(ended)
        self._record(ended)
        self._env.live.remove(self.job_id, self)
        self._report(ended)

    def _hand_over(self, ended: MigrationEnded) -> None:
        """Tell the actor the outcome and wait until it applied it (its VM's status, no
        migration running), before the job's end is recorded: the job's end must not show
        while ``VM.migrate`` would still be refused as a migration in progress. Told again
        after each ``APPLY_WAIT`` (an actor restarted meanwhile took this migration over:
        it is still in ``live``, so its new incarnation is told)."""
        for _ in range(APPLY_ATTEMPTS):
            self._notify(ended)
            if ended.applied.wait(APPLY_WAIT):
                return
        log.warning("VM %s: its actor did not apply the end of migration %s: recorded anyway",
                    self.vm_id, self.job_id)

    def _run(self) -> MigrationEnded:
        jobs, spec = self._env.jobs, self.spec
        jobs.update(self.job_id, message="waiting for a free outgoing migration slot")
        if not self._env.outgoing.acquire(self.job_id, self.cancelled):
            return self._aborted("cancelled while waiting for a free migration slot")
        self.left_queue = True
        self._notify(MigrationStarted(self.job_id))
        jobs.update(self.job_id, status=RUNNING, message=f"preparing {spec.peer}")
        try:
            with self._libvirt.lease():
                xml = self._ops.source_xml(self._params)
            if self.cancelled.is_set():
                return self._aborted("cancelled before the guest moved")
            dest_xml = self._prepare_destination(xml)
            if self.cancelled.is_set():
                self._drop_destination()
                return self._aborted("cancelled before the guest moved")
        except VdsmError as e:
            if self.cancelled.is_set():
                return self._aborted("cancelled before the guest moved")
            return self._failed(e, "here")
        jobs.update(self.job_id, message=f"migrating to {spec.peer}")
        error: VdsmError | None = None
        spec = self.spec  # the limits as they are now: the monitor applies later changes
        self._start_monitor(called_with=spec.bandwidth)
        self.in_libvirt = True
        called = time.monotonic()
        try:
            cfg = self._env.config
            with self._libvirt.lease():
                self._ops.migrate(
                    cfg.libvirt_uri.format(host=spec.host),
                    libvirt_params(spec, dest_xml=dest_xml, migrate_uri=cfg.migrate_uri),
                    libvirt_flags(spec, unsafe=cfg.unsafe))
        except VdsmError as e:
            error = e
        finally:
            self.in_libvirt = False
            log.info("VM %s: libvirt's migration call returned after %.3f s%s", self.vm_id,
                     time.monotonic() - called, f" ({error.message})" if error else "")
            self._stop_monitor()
        if error is None:
            try:
                with self._libvirt.lease():
                    self._ops.after_source(self._params, xml)
            except VdsmError as e:  # the guest runs there whatever the hook does
                log.warning("VM %s: after_vm_migrate_source not run: %s", self.vm_id, e)
            return MigrationEnded(self.job_id, DONE, "there")
        return self._outcome(error)

    def _resumed(self) -> MigrationEnded:
        """After a restart of this agent: libvirt still migrates; watch it to its end."""
        self._env.outgoing.adopt(self.job_id)
        self.left_queue = True
        self._notify(MigrationStarted(self.job_id))
        self._env.jobs.update(self.job_id, status=RUNNING, message=f"migrating to "
                              f"{self.spec.peer} (watched again after a restart of vdsmd)")
        self._created = True
        self._start_monitor()
        try:
            while not self.cancelled.wait(self._env.config.progress_interval):
                with self._libvirt.lease():
                    if not self._ops.migrating():
                        break
        except VdsmError as e:
            log.warning("VM %s: watching the migration: %s", self.vm_id, e)
        finally:
            self._stop_monitor()
        return self._outcome(None)

    # --- the destination --------------------------------------------------------------------

    def _prepare_destination(self, xml: str) -> str:
        """Ask the destination to prepare, in turn with this host's other migrations to it."""
        gate = self._env.gates[self.spec.peer]
        if gate.running():
            self._env.jobs.update(self.job_id, message=f"waiting its turn to ask {self.spec.peer}")
        if not gate.acquire(self.job_id, self.cancelled):
            raise MigrationError(vmID=self.vm_id, reason="cancelled before the guest moved")
        try:
            return self._ask_destination(xml)
        finally:
            gate.release(self.job_id)

    def _ask_destination(self, xml: str) -> str:
        spec, cfg = self.spec, self._env.config
        client = self._env.peers.client(spec.peer)
        params = {"vmID": self.vm_id, "vmParams": self._params.to_dict(), "xml": xml,
                  "jobID": self.job_id, "timeout": int(spec.timeout) + 1,
                  "prepareTimeout": int(cfg.prepare_timeout)}
        if self._started is not None:
            params["started"] = self._started
        deadline = time.monotonic() + max(cfg.prepare_timeout, spec.timeout)
        backoff = LIMIT_BACKOFF
        while True:
            try:
                reply = client.call("VM.migrationCreate", params,
                                    timeout=cfg.prepare_timeout + 2 * REPLY_MARGIN)
            except PeerUnreachable as e:
                raise MigrationError(vmID=self.vm_id, reason=e.message) from None
            except PeerError as e:
                if e.peer_code in AGAIN and time.monotonic() < deadline \
                        and not self.cancelled.wait(backoff):
                    self._env.jobs.update(self.job_id, message=AGAIN[e.peer_code].format(
                        peer=spec.peer))
                    backoff = min(backoff * 2, LIMIT_BACKOFF_MAX)
                    continue
                raise MigrationError(vmID=self.vm_id, reason=f"{spec.peer} refused it: "
                                     f"{e.peer_message} (code {e.peer_code})") from None
            if not isinstance(reply, dict) or not isinstance(reply.get("xml"), str):
                raise MigrationError(vmID=self.vm_id,
                                     reason=f"{spec.peer} answered VM.migrationCreate "
                                            "without the domain XML")
            self._created = True
            return str(reply["xml"])

    def _drop_destination(self) -> None:
        """The guest never ran there: the destination forgets what it prepared."""
        if not self._created:
            return
        try:
            self._env.peers.client(self.spec.peer).call(
                "VM.destroy", {"vmID": self.vm_id}, timeout=60.0 + REPLY_MARGIN)
        except PeerError as e:
            if e.peer_code != 1:  # NoSuchVM: it dropped it itself already
                log.warning("VM %s: %s could not drop its incoming copy: %s", self.vm_id,
                            self.spec.peer, e.message)
        except PeerUnreachable as e:
            log.warning("VM %s: cannot tell %s to drop its incoming copy (it drops it by "
                        "itself when the guest does not come): %s", self.vm_id,
                        self.spec.peer, e.message)

    def _destination_job(self) -> dict[str, Any] | None:
        """The destination's record of this migration once it ended there (asked a few
        times while it is still finishing); {} if it has no such VM; None if it cannot be
        asked or does not say."""
        client = self._env.peers.client(self.spec.peer)
        for attempt in range(ASK_ATTEMPTS):
            if attempt:
                time.sleep(0.2)
            try:
                status = client.call("VM.getMigrationStatus", {"vmID": self.vm_id},
                                     timeout=self._env.config.connect_timeout)
            except PeerError as e:
                return {} if e.peer_code in (1, MigrationNotInProgress.code) else None
            except PeerUnreachable as e:
                log.warning("VM %s: cannot ask %s about the guest: %s", self.vm_id,
                            self.spec.peer, e.message)
                return None
            if not isinstance(status, dict) or status.get("jobID") != self.job_id:
                return {}
            if status.get("status") in (DONE, FAILED, ABORTED):
                return status
        return None

    # --- outcomes ----------------------------------------------------------------------------

    def _outcome(self, error: VdsmError | None) -> MigrationEnded:
        """Where the guest is after the migration call ended (or libvirt's job, resumed)."""
        try:
            with self._libvirt.lease():
                here = self._ops.migrating() is not None
        except (LibvirtUnavailable, VdsmError) as e:
            return self._failed(error or e, "unknown")
        if here:
            self._drop_destination()
            if self._monitor is not None and self._monitor.timed_out:
                reason = f"not done within its timeout of {self.spec.timeout:g} s"
                return self._failed(MigrationError(vmID=self.vm_id, reason=reason), "here")
            if self.cancelled.is_set():
                return self._aborted("cancelled: the VM stays on this host")
            return self._failed(error or MigrationError(
                vmID=self.vm_id, reason="libvirt's migration ended without moving the VM"),
                "here")
        there = self._destination_job()
        arrived = None if there is None else there.get("status") == DONE
        if arrived:
            return MigrationEnded(self.job_id, DONE, "there")
        reason = "the VM is on neither host" if arrived is False else \
            f"the VM left this host and {self.spec.peer} cannot say whether it runs there"
        if error is not None:
            reason += f" ({error.message})"
        return self._failed(MigrationError(vmID=self.vm_id, reason=reason),
                            "gone" if arrived is False else "unknown")

    def _aborted(self, why: str) -> MigrationEnded:
        return MigrationEnded(self.job_id, ABORTED, "here",
                              MigrationError(vmID=self.vm_id, reason=why))

    def _failed(self, error: VdsmError, where: Where) -> MigrationEnded:
        if not isinstance(error, MigrationError):
            error = MigrationError(vmID=self.vm_id, reason=error.message)
        return MigrationEnded(self.job_id, FAILED, where, error)

    def _record(self, ended: MigrationEnded) -> None:
        """The job's outcome, at once (the guest runs there: done)."""
        message = ended.error.message if ended.error else f"the VM runs on {self.spec.peer}"
        progress = 100 if ended.status == DONE else \
            (self._monitor.progress if self._monitor else 0)
        # done: nothing remains (the last sample may predate the end by a whole interval)
        done: dict[str, Any] = {"details": {"dataRemaining": 0}} if ended.status == DONE else {}
        self._env.jobs.update(self.job_id, status=ended.status, message=message,
                              code=ended.error.code if ended.error else 0, progress=progress,
                              **done)

    def _report(self, ended: MigrationEnded) -> None:
        """The last ``VM_migration_status``: with the downtime the destination measured."""
        details: dict[str, Any] = {}
        if ended.status == DONE:
            downtime = self._downtime()
            if downtime is not None:
                details["downtime"] = downtime
                self._env.jobs.update(self.job_id, details=details)
        job = self._env.jobs.get(self.job_id)
        if job is None:
            return
        self._env.publish(f"|virt|VM_migration_status|{self.vm_id}",
                          {"vmID": self.vm_id, "jobID": self.job_id, "status": job.status,
                           "progress": job.progress, **details,
                           **({"error": job.message} if ended.error else {})})

    def _downtime(self) -> int | None:
        """The guest's pause at the switch-over, as the destination measured it."""
        status = self._destination_job()
        value = status.get("downtime") if status else None
        return value if isinstance(value, int) else None

    # --- the monitor -------------------------------------------------------------------------

    def _start_monitor(self, *, called_with: int | None = None) -> None:
        """``called_with``: the bandwidth the migration call got (None: unknown, resumed)."""
        self._monitor = MigrationMonitor(
            self.vm_id, libvirt_handle=self._libvirt, jobs=self._env.jobs,
            publish=self._env.publish, interval=self._env.config.progress_interval,
            spec=lambda: self.spec, cancelled=self.cancelled, bandwidth=called_with)
        self._monitor.start()

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.finish()
