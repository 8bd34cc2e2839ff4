"""Handlers of the migration verbs and of ``Host.getJobs`` (run on the API's threads).

``VM.migrate`` (source): the destination must be one of ``[peers]`` and its agent must
answer a ``Host.ping`` over CURVE within ``[migration] connect_timeout`` (a destination
that is down or refuses this host's key is a clear error at once: code 10, the VM
untouched); then the job is recorded and the VM's actor starts it. The verb answers
``true`` there: the migration is a job (``Host.getJobs``), its progress is published as
``|virt|VM_migration_status|<vmID>`` and read by ``VM.getMigrationStatus``.

``VM.migrationCreate`` (destination, called by the source's agent): the VM's params are
checked as at ``VM.create`` (paths by the same policy), the incoming limit is taken (else
``MigrationLimit``, 48, retryable: the source asks again), the job recorded under the
source's job id, an actor started in ``incoming`` mode and asked to prepare; the answer is
the XML the guest will run with here. A failed preparation leaves nothing: actor, board
entry, volumes, record; the job says why.

``VM.getMigrationStatus`` and ``Host.getJobs`` read the job store inline: no actor is
asked, so they answer while a migration keeps the VM's actor busy (and on the destination
after a failed migration removed its VM).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from actors.jobs.record import FAILED, MIGRATE_IN, MIGRATE_OUT, RUNNING, Job
from actors.jobs.store import JobStore
from actors.vm.api import VmApi
from actors.vm.migenv import MigrationEnv
from actors.vm.migspec import MigrationSpec, default_timeout
from actors.vm.params import VmParams
from actors.vm.status import VmStatus
from messaging.deadline import current as current_deadline
from messaging.errors import (
    InvalidParams,
    MigrationLimit,
    MigrationNotInProgress,
    NoSuchVM,
    PeerError,
    PeerUnreachable,
    VdsmError,
    VMError,
    VMExists,
)
from messaging.server import Binding

log = logging.getLogger(__name__)

MIGRATABLE = (VmStatus.UP, VmStatus.PAUSED, VmStatus.POWERING_UP)
SHOWN = ("dst", "dataRemaining", "bandwidth", "iteration", "elapsed", "downtime",
         "postCopyActive", "maxDowntime", "maxBandwidth", "timeout")


class MigrationApi:
    def __init__(self, *, vms: VmApi, env: MigrationEnv) -> None:
        self._vms = vms
        self._env = env
        self._jobs: JobStore = env.jobs

    def bindings(self) -> dict[str, Binding]:
        return {
            "VM.migrate": Binding(self.migrate),
            "VM.getMigrationStatus": Binding(self.status, inline=True),
            "VM.migrateCancel": Binding(
                lambda p: self._vms.verb(p, lambda vm: vm.migrate_cancel())),
            "VM.migrateChangeParams": Binding(self.change),
            "VM.migrationCreate": Binding(self.create),
            "Host.getJobs": Binding(self.jobs, inline=True),
        }

    # --- source --------------------------------------------------------------------------

    def migrate(self, p: dict[str, Any]) -> bool:
        self._vms.check_ready()
        vm_id = p["vmID"]
        proxy = self._vms.proxy(vm_id)  # NoSuchVM before anything else
        name, peer = self._env.peers.resolve(p["dst"])
        view = self._vms.board.get(vm_id)
        if view is not None and view.status not in MIGRATABLE:
            raise VMError(reason=f"VM {vm_id} is {view.status}: only a running VM migrates")
        params = self._vms.registry.get(vm_id)
        if params is None:
            raise NoSuchVM(vmID=vm_id)
        cfg = self._env.config
        self._ping(name)
        spec = MigrationSpec(
            job_id=p.get("jobID") or "", peer=name, endpoint=peer.endpoint, host=peer.host,
            downtime=p.get("downtime") or cfg.downtime,
            bandwidth=cfg.bandwidth if p.get("maxBandwidth") is None else p["maxBandwidth"],
            timeout=float(p.get("timeout") or default_timeout(cfg, params.mem_mib)),
            auto_converge=p["autoConverge"], post_copy=p["postCopy"])
        job = self._jobs.add(MIGRATE_OUT, vm_id, job_id=p.get("jobID"),
                             message=f"accepted: to {name}", details=spec.details())
        spec = replace(spec, job_id=job.job_id)
        try:
            self._vms.ask(proxy.migrate(spec))
        except VdsmError as e:
            self._jobs.update(job.job_id, status=FAILED, code=e.code, message=e.message)
            raise
        return True

    def _ping(self, name: str) -> None:
        """The destination's agent answers (over CURVE, with this host's key), or a clear
        error at once."""
        timeout = self._env.peers.connect_timeout
        current_deadline().cover(time.monotonic() + timeout)
        client = self._env.peers.client(name)
        try:
            client.call("Host.ping", timeout=timeout)
        except PeerError as e:
            raise PeerUnreachable(peer=name, endpoint=client.endpoint,
                                  reason=f"it refused this host: {e.peer_message} "
                                         f"(code {e.peer_code})") from None

    def change(self, p: dict[str, Any]) -> Future[Any]:
        limits = p["params"]
        bandwidth, downtime = limits.get("maxBandwidth"), limits.get("downtime")
        if bandwidth is None and downtime is None:
            raise InvalidParams("params", "give maxBandwidth or downtime")
        return self._vms.verb(p, lambda vm: vm.migrate_change(bandwidth, downtime))

    # --- reads -----------------------------------------------------------------------------

    def status(self, p: dict[str, Any]) -> dict[str, Any]:
        self._vms.check_ready()
        vm_id = p["vmID"]
        job = self._jobs.last(vm_id, {MIGRATE_OUT, MIGRATE_IN})
        if job is None:
            if self._vms.board.get(vm_id) is None:
                raise NoSuchVM(vmID=vm_id)
            raise MigrationNotInProgress(vmID=vm_id)
        return migration_status(job)

    def jobs(self, p: dict[str, Any]) -> dict[str, Any]:
        types = {p["job_type"]} if p.get("job_type") else None
        ids = set(p["job_ids"]) if p.get("job_ids") is not None else None
        return {job.job_id: job.to_wire() for job in self._jobs.jobs(types=types, ids=ids)}

    # --- destination -----------------------------------------------------------------------

    def create(self, p: dict[str, Any]) -> Future[Any]:
        vms = self._vms
        vms.check_ready()
        vm_id, job_id = p["vmID"], p["jobID"]
        vm = vms.paths.check_params(VmParams.from_dict(vm_id, p["vmParams"]))
        if vm.restore_state is not None:
            raise InvalidParams("vmParams.restoreState", "a migrating VM restores nothing")
        if vms.board.get(vm_id) is not None or vm_id in vms.registry:
            raise VMExists(vmID=vm_id)
        slots = self._env.incoming
        if not slots.try_acquire(job_id):
            raise MigrationLimit(running=slots.running(), direction="incoming")
        try:
            self._jobs.add(MIGRATE_IN, vm_id, job_id=job_id, message="preparing",
                           details={"timeout": p["timeout"]})
        except BaseException:
            slots.release(job_id)
            raise

        def failed(error: BaseException) -> None:
            message = error.message if isinstance(error, VdsmError) else repr(error)
            code = error.code if isinstance(error, VdsmError) else -32603
            slots.release(job_id)  # free before the job's end is visible
            self._jobs.update(job_id, status=FAILED, code=code, message=message)

        try:
            vms.start_actor(vms.spec(vm, "incoming", incoming=job_id))
            prepared = vms.operation(vms.proxy(vm_id).prepare_incoming(
                p["xml"], started=p.get("started"), timeout=float(p["timeout"]),
                prepare_timeout=float(p["prepareTimeout"])))
        except BaseException as e:
            vms.drop_failed(vm_id)
            failed(e)
            raise

        def running() -> None:
            self._jobs.update(job_id, status=RUNNING, message="waiting for the guest")

        def undo(error: BaseException) -> None:
            vms.drop_failed(vm_id)
            failed(error)

        return vms.after(prepared, on_ok=running, on_error=undo)


def migration_status(job: Job) -> dict[str, Any]:
    """``VM.getMigrationStatus``: one migration job, either way."""
    out: dict[str, Any] = {"jobID": job.job_id, "job_type": job.job_type,
                           "status": job.status, "progress": job.progress,
                           "description": job.message}
    out.update({k: v for k, v in job.details.items() if k in SHOWN})
    if job.status in ("failed", "aborted"):
        out["error"] = {"code": job.code, "message": job.message}
    return out
