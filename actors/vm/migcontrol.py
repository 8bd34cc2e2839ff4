"""The migrations of one VM, on its actor's thread: a plain helper of
:class:`~actors.vm.actor.VmActor` (not thread-safe; never blocks).

**Source.** :meth:`MigrationControl.start` hands a checked request to an
:class:`~actors.vm.migrate.OutgoingMigration`, which runs on threads of its own and tells
the actor when it left the queue (the VM is then ``Migration Source``) and when it ended:
the VM is then ``Down`` (exitReason ``migrated``) if the guest runs on the destination, or
back to what libvirt says if it stayed. Cancel and new limits act on libvirt's job through
the VM's GuestCaller (kind ``migration``) once libvirt migrates, and on the request before.
After a restart of the agent, an unfinished outgoing job is :meth:`resumed <resume>`.

**Destination.** An actor started for ``VM.migrationCreate`` (mode ``incoming``) is
``Migration Destination`` from the start. :meth:`prepare` makes the VM ready (volumes,
record, XML, hooks); the guest then arrives by libvirt's lifecycle events: ``Up``
(RESUMED/MIGRATED) ends the incoming job ``done`` (``after_vm_migrate_destination``, the
downtime libvirt measured); ``Down`` before that, or no domain by the deadline (the source's
timeout plus ``[migration] incoming_grace``), drops everything the VM had here and stops
the actor: a failed migration leaves nothing on the destination.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from actors.host.libvirthandle import LibvirtHandle
from actors.jobs.record import ABORTED, DONE, FAILED, MIGRATE_IN, MIGRATE_OUT, RUNNING, Job
from actors.vm.migenv import MigrationEnv
from actors.vm.migops import MigrationOps
from actors.vm.migrate import MigrationEnded, OutgoingMigration
from actors.vm.migspec import MigrationSpec
from actors.vm.params import VmParams
from actors.vm.status import ExitReason, Transition, VmStatus
from messaging.errors import MigrationNotInProgress, VdsmError, VMBusy, VMError

log = logging.getLogger(__name__)

MIGRATION, QUERY, DESTROY = "migration", "query", "destroy"
RETRY = 1.0  # s before a step of an incoming migration that could not start is tried again


class MigrationHost(Protocol):
    """What the VM actor offers its migrations."""

    vm_id: str

    def current_status(self) -> VmStatus: ...

    def current_params(self) -> VmParams: ...

    def current_started(self) -> float | None: ...

    def set_status(self, transition: Transition, *, read: bool = False) -> None: ...

    def submit(self, name: str, kind: str, *, timeout: float, on_ok: Callable[[Any], Any],
               on_error: Callable[[BaseException], None] | None = None,
               work: Callable[[Any], Any]) -> Future[Any]: ...

    def schedule_incoming(self, delay: float) -> None: ...

    def reattach(self) -> None: ...

    def forget_self(self) -> None: ...

    def tell_self(self, message: Any) -> None: ...


class MigrationControl:
    def __init__(self, host: MigrationHost, *, env: MigrationEnv, libvirt: LibvirtHandle,
                 ops: MigrationOps, call_timeout: float, destroy_timeout: float) -> None:
        self._host = host
        self._env = env
        self._libvirt = libvirt
        self._ops = ops
        self._call_timeout = call_timeout
        self._destroy_timeout = destroy_timeout
        self.outgoing: OutgoingMigration | None = None
        self.incoming: str | None = None  # the incoming job, until the guest arrived
        self._incoming_timeout = 0.0
        self._dropping = False
        self._retry = ""  # a drop that could not start yet: why
        self._resume: Job | None = None  # an outgoing migration a restart interrupted

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.outgoing is not None:
            out["outgoingMigration"] = self.outgoing.describe()
        if self.incoming is not None:
            out["incomingMigration"] = self.incoming
        return out

    def busy(self) -> None:
        """VMBusy while a migration runs (other control verbs wait for its end)."""
        if self.outgoing is not None or self.incoming is not None:
            raise VMBusy(vmID=self._host.vm_id, operation="a migration", age=0.0)

    # --- source ----------------------------------------------------------------------------

    def start(self, spec: MigrationSpec) -> None:
        status = self._host.current_status()
        if status not in (VmStatus.UP, VmStatus.PAUSED, VmStatus.POWERING_UP):
            raise VMError(reason=f"VM {self._host.vm_id} is {status}: only a running VM "
                                 "migrates")
        self.busy()
        self._launch(spec, resume=False)

    def resume(self, job: Job, spec: MigrationSpec) -> None:
        """An outgoing migration a restart interrupted: watched (or settled) again; one
        still running in this process (only the actor was restarted) is taken over."""
        if self.outgoing is not None:
            return
        running = self._env.live.get(job.job_id)
        if isinstance(running, OutgoingMigration):
            log.info("VM %s: taking migration %s over", self._host.vm_id, job.job_id)
            self.outgoing = running
            running.rebind(self._host.tell_self)
            return
        log.info("VM %s: resuming migration %s to %s", self._host.vm_id, job.job_id,
                 spec.peer)
        self._launch(spec, resume=True)

    def _launch(self, spec: MigrationSpec, *, resume: bool) -> None:
        host = self._host
        self.outgoing = OutgoingMigration(
            host.current_params(), spec, env=self._env, ops=self._ops, libvirt=self._libvirt,
            notify=host.tell_self, started=host.current_started(), resume=resume)
        self.outgoing.begin()

    def on_started(self) -> None:
        if self._host.current_status() != VmStatus.DOWN:
            self._host.set_status(Transition(VmStatus.MIGRATION_SOURCE))

    def on_ended(self, ended: MigrationEnded) -> None:
        try:
            self._ended(ended)
        finally:
            ended.applied.set()  # the migration's thread records the job's end now

    def _ended(self, ended: MigrationEnded) -> None:
        if self.outgoing is None or self.outgoing.job_id != ended.job_id:
            return
        self.outgoing = None
        if ended.where == "there":
            self._host.set_status(Transition(VmStatus.DOWN, exit_reason=ExitReason.MIGRATED))
        elif ended.where == "gone":
            self._host.set_status(Transition(VmStatus.DOWN, exit_reason=ExitReason.UNKNOWN))
        else:
            if self._host.current_status() == VmStatus.MIGRATION_SOURCE:
                self._host.set_status(Transition(VmStatus.UP))  # until the attach says
            self._host.reattach()

    def cancel(self) -> Future[Any]:
        migration = self._current()
        migration.request_cancel()
        if not migration.in_libvirt:
            return _done(True)  # queued or preparing: it stops before the guest moves
        def abort(_c: Any) -> bool:
            try:
                return bool(self._leased(self._ops.abort))
            except MigrationNotInProgress:
                # libvirt's job is not there yet (or any more): the cancelled migration's
                # monitor aborts it once it is, its thread ends the job either way
                return True

        return self._host.submit("VM.migrateCancel", MIGRATION, timeout=self._call_timeout,
                                 on_ok=_true, work=abort)

    def change(self, bandwidth: int | None, downtime: int | None) -> Future[Any]:
        migration = self._current()
        migration.change(bandwidth=bandwidth, downtime=downtime)
        if not migration.in_libvirt:
            return _done(True)  # applied when libvirt starts migrating
        return self._host.submit(
            "VM.migrateChangeParams", MIGRATION, timeout=self._call_timeout, on_ok=_true,
            work=lambda _c: self._leased(lambda: self._ops.set_limits(bandwidth, downtime)))

    def _current(self) -> OutgoingMigration:
        if self.outgoing is None or self.outgoing.cancelled.is_set():
            raise MigrationNotInProgress(vmID=self._host.vm_id)
        return self.outgoing

    def _leased(self, call: Callable[[], Any]) -> Any:
        with self._libvirt.lease():
            return call()

    # --- after a restart -------------------------------------------------------------------

    def find_interrupted(self) -> None:
        """This VM's migrations a restart of the agent (or of its actor) interrupted."""
        for job in self._env.jobs.unfinished(self._host.vm_id):
            if job.job_type == MIGRATE_OUT:
                self._resume = job
            elif job.job_type == MIGRATE_IN:
                self.expect(job.job_id)

    def recovered_state(self, initial: Transition) -> Transition:
        """The state recovery found, as the VM's migrations see it: a VM whose domain is
        gone left this host (``migrated``) or may have (to be asked)."""
        if initial.status != VmStatus.DOWN:
            return initial
        if self._resume is not None:
            return Transition(VmStatus.MIGRATION_SOURCE)  # where it is: asked on attach
        last = self._env.jobs.last(self._host.vm_id, {MIGRATE_OUT, MIGRATE_IN})
        if last is not None and last.job_type == MIGRATE_OUT and last.status == DONE:
            return Transition(VmStatus.DOWN, exit_reason=ExitReason.MIGRATED)
        return initial

    def on_attached(self, found: Any) -> bool:
        """After a re-attach (``found``: the domain's state, None without a domain):
        whether an interrupted migration took over from there."""
        job, self._resume = self._resume, None
        if job is not None:
            spec = spec_from_job(job, self._env.peers)
            if spec is not None:
                self.resume(job, spec)
                return True
            self._env.jobs.update(job.job_id, status=FAILED, code=VMError.code,
                                  message="interrupted by a restart of vdsmd")
        if self.incoming is None:
            return False
        if found is None:
            self.drop("vdsmd restarted while the guest was arriving, and it is not here")
        elif found.state.status in (VmStatus.UP, VmStatus.PAUSED):
            self._host.set_status(found.state, read=True)
            self.on_status(VmStatus.UP)
        else:
            self._host.set_status(Transition(VmStatus.MIGRATION_DESTINATION))
            self._host.schedule_incoming(self._call_timeout)
        return True

    # --- destination -------------------------------------------------------------------------

    def expect(self, job_id: str) -> None:
        """This VM is the arriving copy of a migration (its job ``job_id``)."""
        self.incoming = job_id

    def prepare(self, xml: str, *, started: float | None, timeout: float,
                prepare_timeout: float) -> Future[Any]:
        """The verb part of VM.migrationCreate: the XML the guest will run with here."""
        params, vm_id = self._host.current_params(), self._host.vm_id
        self._incoming_timeout = timeout + self._env.config.incoming_grace

        def on_ok(dest_xml: str) -> dict[str, Any]:
            self._host.schedule_incoming(self._incoming_timeout)
            return {"vmID": vm_id, "status": str(self._host.current_status()), "xml": dest_xml}

        def work(cancelled: Any) -> str:
            dest_xml = self._ops.prepare_incoming(params, xml, started)
            if cancelled.is_set():  # the source stopped waiting: undo
                self._ops.drop_incoming(params)
                raise VMError(reason="preparing the incoming VM took too long")
            return dest_xml

        return self._host.submit("VM.migrationCreate", "control", timeout=prepare_timeout,
                                 on_ok=on_ok, work=work)

    def on_status(self, status: VmStatus) -> None:
        """After every status change: has the guest arrived, or been lost on the way?"""
        if self.incoming is None or self._dropping:
            return
        if status in (VmStatus.UP, VmStatus.PAUSED):  # a paused VM arrives paused
            self._arrived()
        elif status == VmStatus.DOWN:
            self.drop("the guest stopped before it arrived")

    def _arrived(self) -> None:
        job_id, params = self.incoming, self._host.current_params()
        assert job_id is not None
        jobs, slots = self._env.jobs, self._env.incoming

        def work(_c: Any) -> None:
            # The slot is free before the job says so: a client that sends the next incoming
            # migration as soon as it reads this job's end must not find the slot taken.
            try:
                downtime = self._leased(lambda: self._ops.finish_incoming(params))
            finally:
                slots.release(job_id)
            jobs.update(job_id, status=DONE, progress=100, message="the VM runs here",
                        details={} if downtime is None else {"downtime": downtime})

        if self._submit("incoming migration arrived", QUERY, timeout=self._call_timeout
                        + self._ops.hook_budget("after_vm_migrate_destination"),
                        on_ok=_none, on_error=lambda e: self._end_failed(job_id, e),
                        work=work):
            self.incoming = None

    def _end_failed(self, job_id: str, error: BaseException) -> None:
        log.warning("VM %s: finishing the incoming migration: %s", self._host.vm_id, error)
        self._env.incoming.release(job_id)

    def on_deadline(self) -> None:
        """The incoming deadline: no guest yet? Drop; still arriving? Wait some more. (Also
        the retry of a step that could not start: the VM's calls were busy.)"""
        if self.incoming is None or self._dropping:
            return
        if self._retry:
            self.drop(self._retry)
            return
        if self._host.current_status() in (VmStatus.UP, VmStatus.PAUSED):
            self._arrived()
            return

        def on_ok(present: bool) -> None:
            if self.incoming is None:
                return
            if present:
                log.warning("VM %s: still arriving after its deadline; waiting %g s more",
                            self._host.vm_id, self._env.config.incoming_grace)
                self._host.schedule_incoming(self._env.config.incoming_grace)
            else:
                self.drop("the guest did not arrive in time")

        self._submit("incoming deadline", QUERY, timeout=self._call_timeout, on_ok=on_ok,
                     work=lambda _c: self._leased(self._ops.incoming_present))

    def drop(self, why: str) -> None:
        """The migration did not arrive: nothing of the VM stays on this host."""
        if self.incoming is None or self._dropping:
            return
        job_id, params = self.incoming, self._host.current_params()
        log.warning("VM %s: incoming migration %s failed: %s", self._host.vm_id, job_id, why)
        jobs, slots = self._env.jobs, self._env.incoming

        def undo() -> None:
            self._leased(lambda: self._ops.drop_incoming(params))

        def work(_c: Any) -> None:
            try:
                undo()
            finally:
                slots.release(job_id)  # free before the job's end is visible
                jobs.update(job_id, status=FAILED, code=VMError.code, message=why)

        def done(_result: Any = None) -> None:
            self.incoming = None
            self._host.forget_self()

        self._dropping = self._submit("drop incoming VM", DESTROY,
                                      timeout=self._destroy_timeout, on_ok=done,
                                      on_error=done, work=work)
        self._retry = "" if self._dropping else why

    def _submit(self, name: str, kind: str, *, timeout: float, on_ok: Callable[[Any], Any],
                work: Callable[[Any], Any],
                on_error: Callable[[BaseException], None] | None = None) -> bool:
        """Start a step of the incoming migration; when the VM's calls of that kind are
        busy (stuck), try again in a second (False)."""
        try:
            self._host.submit(name, kind, timeout=timeout, on_ok=on_ok, on_error=on_error,
                              work=work)
        except (VMError, RuntimeError) as e:
            log.warning("VM %s: %s postponed: %s", self._host.vm_id, name, e)
            self._host.schedule_incoming(RETRY)
            return False
        return True

    def destroyed(self) -> Callable[[], None]:
        """Work to run in a VM.destroy's operation: an incoming job ends with it."""
        job_id = self.incoming
        if job_id is None:
            return _none
        self.incoming = None
        jobs, slots = self._env.jobs, self._env.incoming

        def end() -> None:
            slots.release(job_id)  # free before the job's end is visible
            jobs.update(job_id, status=ABORTED, code=VMError.code,
                        message="destroyed before the migration ended")

        return end

    def teardown(self) -> None:
        """The actor stops: an incoming slot it held is free again (its job, if unfinished,
        is settled at the next start: recovery)."""
        if self.incoming is not None:
            self._env.incoming.release(self.incoming)


def spec_from_job(job: Job, peers: Any) -> MigrationSpec | None:
    """The request of an unfinished outgoing migration, from its record."""
    if job.job_type != MIGRATE_OUT or job.status not in ("pending", RUNNING, "aborting"):
        return None
    d = job.details
    try:
        name, peer = peers.resolve(str(d["dst"]))
        return MigrationSpec(job_id=job.job_id, peer=name, endpoint=peer.endpoint,
                             host=peer.host, downtime=int(d["maxDowntime"]),
                             bandwidth=int(d["maxBandwidth"]), timeout=float(d["timeout"]),
                             auto_converge=bool(d.get("autoConverge")),
                             post_copy=bool(d.get("postCopy")))
    except (KeyError, TypeError, ValueError, VdsmError) as e:
        log.error("job %s: cannot resume migration: %s", job.job_id, e)
        return None


def _true(_result: Any) -> bool:
    return True


def _none(*_args: Any) -> None:
    return None


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future
