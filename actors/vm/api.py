"""Handlers of the VM verbs (and of Host.getVMList / Host.getAllVmStats).

They run on the API server's worker threads, never on an actor's. A lifecycle verb asks
the VM's actor (a proxy call, answered at once) for a future of the operation: the blocking
part runs on the VM's GuestCaller thread with a deadline. The request's deadline is extended
to cover the operation's (the wire timeout is derived from the operation's deadline, hooks
included), and the handler returns the operation's future: the server replies when it
resolves, and no worker waits for it. ``VM.create`` and ``VM.destroy`` act after their
operation too, on a ``vm-finish`` thread (two; stopping an actor is quick) before the reply:
``VM.create`` starts the actor under ``/vms`` first, and when the start fails it stops the
actor before answering, so the client never sees a half-started VM; ``VM.destroy`` stops and
removes the actor once the domain is gone.

Every path a client names (drives, kernel, initrd, restoreState, a CD/floppy image, the
hibernation file) is checked and resolved by :class:`~actors.vm.paths.PathPolicy` here,
before any actor is asked. A ``VM.create`` for a vmID the agent knows (on the board or in
the registry, whether or not its actor runs) is refused with ``VMExists`` before anything
is touched. A known VM whose actor is not running (being restarted, or given up and
waiting for the next recovery pass) answers ``ActorUnavailable`` (102, retryable), never
``NoSuchVM``.

Reads (``VM.getStats``, ``Host.getVMList``, ``Host.getAllVmStats``) come from the
:class:`~actors.vm.board.VmBoard` and run inline on the API server's socket thread: no
actor is asked, no libvirt call is made, no worker is needed, so they answer even when every
worker is busy.

``VM.hibernate`` and a restore (``VM.create`` with ``restoreState``) are **jobs**: the verb
answers once the job is recorded (:class:`~actors.jobs.store.JobStore`) and the operation
has started; the job ends ``done`` or ``failed`` with the operation (on a finisher thread),
and a failed restore leaves nothing, as a failed create. So a client is never told "did not
finish" about an operation that then succeeds: the verb waits for nothing long, and the
outcome is the job's (``Host.getJobs``, ``|jobs|status|<jobID>``).

Until the first recovery pass after the agent started, every handler answers
``Recovering`` (code 100).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, Protocol, TypeVar

import pykka

from actors.config import GuestAgentConfig
from actors.directory import ActorDirectory, ServiceRef, typed_proxy
from actors.jobs.record import DONE, FAILED, HIBERNATE, RESTORE, RUNNING
from actors.jobs.store import JobStore
from actors.supervisor import (
    ChildExists,
    ChildSpec,
    ChildStartError,
    Supervisor,
    SupervisorProxy,
)
from actors.vm import agentapi, qosapi
from actors.vm.actor import Mode
from actors.vm.board import VmBoard
from actors.vm.inflight import OpFuture
from actors.vm.ops import check_unused
from actors.vm.params import VmParams, check_plain_text
from actors.vm.paths import PathPolicy
from actors.vm.proxies import VmProxy
from actors.vm.registry import VmRegistry
from actors.vm.seriallog import SerialLogs
from messaging.deadline import current as current_deadline
from messaging.errors import (
    ActorUnavailable,
    NoSuchVM,
    Recovering,
    VdsmError,
    VMError,
    VMExists,
)
from messaging.server import Binding

log = logging.getLogger(__name__)

T = TypeVar("T")

ASK_TIMEOUT = 5.0  # an actor answers a proxy call at once: it never blocks
SUPERVISOR_TIMEOUT = 30.0  # starting or stopping one VM actor
FINISHERS = 2  # threads that stop the actors of destroyed VMs and of failed starts


class SpecFactory(Protocol):
    def __call__(self, params: VmParams, mode: Mode = "create", *,
                 incoming: str | None = None) -> ChildSpec: ...


class VmApi:
    def __init__(
        self,
        *,
        directory: ActorDirectory,
        board: VmBoard,
        registry: VmRegistry,
        paths: PathPolicy,
        logs: SerialLogs,
        vms_path: str,
        spec: SpecFactory,
        ready: threading.Event,
        jobs: JobStore | None = None,
        guest_agent: GuestAgentConfig | None = None,
    ) -> None:
        self._directory = directory
        self.board = board
        self.registry = registry
        self.paths = paths
        self.spec = spec
        self._jobs = jobs
        self._logs = logs
        self._vms_path = vms_path
        self._vms: ServiceRef[Supervisor] = ServiceRef(directory, vms_path)
        self._ready = ready
        self._guest_agent = guest_agent or GuestAgentConfig()
        # Acts after an operation (stops an actor: asks its supervisor): off the workers.
        self._finisher = ThreadPoolExecutor(FINISHERS, thread_name_prefix="vm-finish")

    def bindings(self) -> dict[str, Binding]:
        return {
            "VM.create": Binding(self.create),
            "VM.destroy": Binding(self.destroy),
            "VM.pause": Binding(lambda p: self.verb(p, lambda vm: vm.pause())),
            "VM.cont": Binding(lambda p: self.verb(p, lambda vm: vm.cont())),
            "VM.reset": Binding(lambda p: self.verb(p, lambda vm: vm.reset())),
            "VM.shutdown": Binding(lambda p: self.verb(p, lambda vm: vm.shutdown(
                p["delay"], p["message"], p["reboot"], p["force"]))),
            "VM.setTicket": Binding(
                lambda p: self.verb(p, lambda vm: vm.set_ticket(
                    check_plain_text(p["password"], "password"), p["ttl"]))
            ),
            "VM.changeCD": Binding(self._media("cdrom")),
            "VM.changeFloppy": Binding(self._media("floppy")),
            "VM.hibernate": Binding(self._hibernate),
            "VM.getStats": Binding(self.get_stats, inline=True),
            "Host.getVMList": Binding(self.get_vm_list, inline=True),
            "Host.getAllVmStats": Binding(self.get_all_vm_stats, inline=True),
            **agentapi.bindings(self, self._guest_agent),
            **qosapi.bindings(self),
        }

    # --- lifecycle -------------------------------------------------------------------------

    def create(self, params: dict[str, Any]) -> Future[Any] | dict[str, Any]:
        self.check_ready()
        vm_id = params["vmID"]
        vm = self.paths.check_params(VmParams.from_dict(vm_id, params["vmParams"]))
        if self.board.get(vm_id) is not None or vm_id in self.registry:
            raise VMExists(vmID=vm_id)  # running, or its actor restarting: touch nothing
        job = None
        if vm.restore_state is not None and self._jobs is not None:
            check_unused(self.registry, vm.restore_state)  # refused now, not as a job
            job = self._jobs.add(RESTORE, vm_id, job_id=params.get("jobID"),
                                 message="restoring")
        try:
            self.start_actor(self.spec(vm))
            launched = self._launch(vm_id, None if job is None else job.job_id)
        except BaseException as e:
            if job is not None:
                self._end_job(job.job_id, e)
            raise
        if job is None:
            return self.after(launched, on_error=lambda _e: self.drop_failed(vm_id))
        self._run_job(job.job_id, launched, on_error=lambda: self.drop_failed(vm_id))
        return {"vmID": vm_id, "status": "Restoring state"}

    def start_actor(self, spec: ChildSpec) -> None:
        """Start a VM's actor under /vms (its setup is quick)."""
        try:
            self._vms.proxy(SupervisorProxy).start_child(spec).get(
                timeout=current_deadline().clamp(SUPERVISOR_TIMEOUT))
        except ChildExists:
            raise VMExists(vmID=spec.name) from None
        except ChildStartError as e:
            self.board.remove(spec.name)
            raise VMError(reason=f"cannot start the actor of VM {spec.name}: {e}") from None
        except (pykka.Timeout, pykka.ActorDeadError):
            raise ActorUnavailable(path=self._vms_path, reason="it did not answer") from None

    def _launch(self, vm_id: str, job_id: str | None = None) -> Future[Any]:
        try:
            return self.operation(self.proxy(vm_id).launch(job_id))
        except BaseException:
            # This create's own actor and board entry; the start removed what it made.
            self._stop_actor(vm_id)
            self.board.remove(vm_id)
            raise

    def destroy(self, params: dict[str, Any]) -> Future[Any]:
        vm_id = params["vmID"]
        return self.after(self.verb(params, lambda vm: vm.destroy()),
                          on_ok=lambda: self._forget(vm_id))

    def drop_failed(self, vm_id: str) -> None:
        """After a failed start: this create's own actor and board entry (the start itself
        removed what it made: its registry entry, its volumes)."""
        self._stop_actor(vm_id)
        self.board.remove(vm_id)

    def _forget(self, vm_id: str) -> None:
        """After a destroy: the VM is gone from the agent (on a finisher thread)."""
        self.registry.remove(vm_id)  # first: a recovery pass meanwhile must not revive it
        self._stop_actor(vm_id)
        self.board.remove(vm_id)
        self._logs.prune(self.registry.ids() | self.board.ids())

    def _media(self, device: Literal["cdrom", "floppy"]) -> Callable[[dict[str, Any]], Any]:
        def handler(p: dict[str, Any]) -> Any:
            return self.verb(p, lambda vm: vm.change_media(device, self.paths.media(p["path"])))

        return handler

    def _hibernate(self, p: dict[str, Any]) -> Any:
        """A job: answers once the save has started; the job ends with it."""
        self.check_ready()
        vm_id = p["vmID"]
        proxy = self.proxy(vm_id)
        target = self.paths.hibernation_target(p["hiberVolHandle"])
        if self._jobs is None:
            return self.verb(p, lambda vm: vm.hibernate(target))
        check_unused(self.registry, target)  # refused now, not as a job
        job = self._jobs.add(HIBERNATE, vm_id, job_id=p.get("jobID"), message="saving")
        try:
            saving = self.operation(proxy.hibernate(target, job.job_id), cover=False)
        except BaseException as e:
            self._end_job(job.job_id, e)
            raise
        self._run_job(job.job_id, saving)
        return True

    # --- jobs --------------------------------------------------------------------------------

    def _run_job(self, job_id: str, operation: Future[Any], *,
                 on_error: Callable[[], None] | None = None) -> None:
        """The job runs with ``operation`` and ends with it (on a finisher thread)."""
        assert self._jobs is not None
        self._jobs.update(job_id, status=RUNNING)

        def settle(done: Future[Any]) -> None:
            error = done.exception() if not done.cancelled() else VMError(reason="cancelled")
            if error is not None and on_error is not None:
                try:
                    on_error()
                except Exception:
                    log.exception("cleaning up after job %s failed", job_id)
            self._end_job(job_id, error)

        operation.add_done_callback(lambda done: self._finisher.submit(settle, done))

    def _end_job(self, job_id: str, error: BaseException | None) -> None:
        assert self._jobs is not None
        if error is None:
            self._jobs.update(job_id, status=DONE, progress=100, message="done")
            return
        code = error.code if isinstance(error, VdsmError) else -32603
        message = error.message if isinstance(error, VdsmError) else repr(error)
        self._jobs.update(job_id, status=FAILED, code=code, message=message)

    # --- reads -------------------------------------------------------------------------------

    def get_stats(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.check_ready()
        stats = self.board.full_stats(params["vmID"])
        if not stats:
            raise NoSuchVM(vmID=params["vmID"])
        return stats

    def get_vm_list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.check_ready()
        if params.get("fullStatus"):
            return self.board.full_stats()
        return [{"vmID": v.vm_id, "vmName": v.name, "status": str(v.status)}
                for v in self.board.views()]

    def get_all_vm_stats(self, _params: dict[str, Any]) -> list[dict[str, Any]]:
        self.check_ready()
        return self.board.full_stats()

    # --- helpers -----------------------------------------------------------------------------

    def check_ready(self) -> None:
        if not self._ready.is_set():
            raise Recovering()

    def proxy(self, vm_id: str) -> VmProxy:
        path = f"{self._vms_path}/{vm_id}"
        info = self._directory.get(path)
        if info is None:
            raise self._absent(vm_id)
        ref = self._directory.ref(info.path)  # ActorUnavailable while it restarts
        return typed_proxy(ref, VmProxy)

    def _absent(self, vm_id: str) -> VdsmError:
        """The error for a VM without an actor: retryable if the agent knows the VM."""
        if self.board.get(vm_id) is not None:
            return ActorUnavailable(path=f"{self._vms_path}/{vm_id}",
                                    reason="its actor is being restarted; try again shortly")
        return NoSuchVM(vmID=vm_id)

    def verb(self, params: dict[str, Any], call: Callable[[VmProxy], pykka.Future[Future[T]]],
             ) -> Future[T]:
        """Ask the VM's actor for an operation; its future (the server replies from it).
        ``call`` may first check more params: the VM's existence is checked before them."""
        self.check_ready()
        vm_id = params["vmID"]
        try:
            asked = call(self.proxy(vm_id))
        except pykka.ActorDeadError:
            raise self._absent(vm_id) from None
        return self.operation(asked)

    def ask(self, asked: pykka.Future[T]) -> T:
        """The answer of a proxy call that the actor answers at once (bounded)."""
        try:
            return asked.get(timeout=current_deadline().clamp(ASK_TIMEOUT))
        except pykka.Timeout:
            raise ActorUnavailable(path=self._vms_path, reason="the VM actor did not answer") \
                from None
        except pykka.ActorDeadError:
            raise ActorUnavailable(path=self._vms_path, reason="the VM actor stopped") from None

    def operation(self, asked: pykka.Future[Future[T]], *, cover: bool = True) -> Future[T]:
        """The operation's future: ``asked`` is the proxy call's pykka future, which resolves
        (at once) to it. The request's deadline is extended to cover the operation's (unless
        the verb does not wait for it: a job)."""
        operation = self.ask(asked)
        if cover and isinstance(operation, OpFuture):
            current_deadline().cover(operation.deadline)
        return operation

    def after(
        self,
        operation: Future[Any],
        *,
        on_ok: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> Future[Any]:
        """The operation's outcome, once ``on_ok`` or ``on_error`` ran on a finisher thread
        (no worker waits for the operation). The request's deadline covers both."""
        if isinstance(operation, OpFuture):
            current_deadline().cover(operation.deadline + SUPERVISOR_TIMEOUT)
        reply: Future[Any] = Future()

        def settle(done: Future[Any]) -> None:
            error = done.exception() if not done.cancelled() else VMError(reason="cancelled")
            try:
                if error is not None and on_error is not None:
                    on_error(error)
                elif error is None and on_ok is not None:
                    on_ok()
            except Exception:
                log.exception("acting after a VM operation failed")
            if error is not None:
                reply.set_exception(error)
            else:
                reply.set_result(done.result())

        operation.add_done_callback(lambda done: self._finisher.submit(settle, done))
        return reply

    def _stop_actor(self, vm_id: str) -> None:
        """Stop and forget the VM's actor (its VM is gone or never started)."""
        try:
            self._vms.proxy(SupervisorProxy).stop_child(vm_id).get(
                timeout=max(1.0, current_deadline().clamp(SUPERVISOR_TIMEOUT)))
        except (pykka.Timeout, pykka.ActorDeadError, VdsmError) as e:
            log.error("cannot stop the actor of VM %s: %s", vm_id, e)
