"""The SPM verbs: ``getSpmStatus``, ``spmStart``, ``spmStop`` and ``extendVolume``.

``getSpmStatus`` reads the lease board (no actor is asked). ``spmStart`` is a task, as in
vdsm: it is recorded at once and finishes when this host holds the lease (or is refused).
``spmStop`` refuses while SPM tasks of the pool run here, then has the keeper release the
lease and waits until it did. ``extendVolume`` works from any host: the SPM's writer
extends directly, any other host asks the SPM through the storage mailbox; either way this
host then refreshes its own view of the volume (its loop devices or its LV) before
answering, so the caller can use the room at once. The VMs' thin provisioning calls the same
typed :meth:`SpmApi.extend` (through ``StorageSubsystem.extend_volume``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from actors.base import EventSink
from actors.directory import ActorDirectory, ServiceRef
from actors.storage.calls import POOLS, StorageCalls, ask, recorded, wait
from actors.storage.handle import VolumeHandle
from actors.storage.mailbox.actors import MailboxActor
from actors.storage.mailbox.format import Message
from actors.storage.proxies import DomainsProxy, LeaseProxy, MailboxProxy, TasksProxy
from actors.storage.sd.records import VolumeFormat
from actors.storage.spm.board import LeaseBoard
from actors.storage.spm.leaseactor import LeaseActor
from actors.storage.spm.writerclient import WriterClient
from actors.storage.tasks import SubmitTask, TaskManager
from messaging.errors import (
    ActorUnavailable,
    NoSuchVolume,
    StorageError,
    StorageTimeout,
    VdsmError,
)
from messaging.server import Binding

log = logging.getLogger(__name__)

SPM_START = "StoragePool.spmStart"
LEASE, MAILBOX = "lease", "mailbox"


class SpmApi(StorageCalls):
    def __init__(self, *, directory: ActorDirectory, call_timeout: float, board: LeaseBoard,
                 tasks: ServiceRef[TaskManager], writer: Callable[[str], WriterClient],
                 extend_timeout: float, stop_timeout: float, events: EventSink) -> None:
        super().__init__(directory=directory, call_timeout=call_timeout)
        self.events = events
        self.board = board
        self.tasks = tasks
        self.writer = writer
        self.extend_timeout = extend_timeout
        self.stop_timeout = stop_timeout

    def _child(self, sp_uuid: str, name: str) -> str:
        self.pool(sp_uuid)  # NoSuchStoragePool when it is not connected
        return f"{POOLS}/{sp_uuid}/{name}"

    # --- the verbs -----------------------------------------------------------------------

    def get_spm_status(self, params: dict[str, Any]) -> dict[str, Any]:
        sp_uuid = params["storagepoolID"]
        self.pool(sp_uuid)
        return self.board.get(sp_uuid).to_wire()

    def spm_start(self, params: dict[str, Any]) -> str:
        sp_uuid = params["storagepoolID"]
        self._child(sp_uuid, LEASE)
        task_id = str(uuid.uuid4())
        reply: concurrent.futures.Future[str] = concurrent.futures.Future()
        task = {"spUUID": sp_uuid, "taskID": task_id, "prevID": params.get("prevID", -1),
                "prevLVER": params.get("prevLVER", -1)}
        try:
            self.tasks.tell(SubmitTask(SPM_START, task, task_id, reply))
        except ActorUnavailable:
            raise
        return recorded(reply, self.call_timeout, SPM_START)

    def spm_stop(self, params: dict[str, Any]) -> bool:
        sp_uuid = params["storagepoolID"]
        path = self._child(sp_uuid, LEASE)
        running = ask(self.tasks.proxy(TasksProxy).running(sp_uuid), "tasks")
        if running:
            raise StorageError(reason=f"{len(running)} task(s) of pool {sp_uuid} still run on "
                               f"this SPM ({', '.join(running[:5])}): wait for them or stop "
                               "them first")
        lease: ServiceRef[LeaseActor] = ServiceRef(self.directory, path)
        ask(lease.proxy(LeaseProxy).spm_stop(), path)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            state = self.board.get(sp_uuid)
            if state.status != "SPM" and not state.detail.get("spm", {}).get("releasing"):
                return True
            time.sleep(0.05)
        raise StorageError(reason=f"the SPM lease of pool {sp_uuid} was not released within "
                           f"{self.stop_timeout:g} s")

    def extend(self, volume: VolumeHandle, size: int, *, since: float | None = None,
               timeout: float | None = None) -> int:
        """Have the SPM extend ``volume`` to at least ``size`` bytes (capped at a full qcow2 of
        its capacity): the writer directly when this host is the SPM, else through the
        mailbox (the request waits there while no SPM serves: ``timeout`` bounds this wait,
        not the request). Then make this host's devices see the new size; that size.

        Publishes ``|storage|volume_extended|<volUUID>`` with the latency since ``since``
        (``time.monotonic()``; default: now). Blocks: API workers and the VMs' thin
        provisioning threads call it, never an actor."""
        started = time.monotonic() if since is None else since
        timeout = self.extend_timeout if timeout is None else timeout
        self.member(volume.sp, volume.sd, active=True)
        if self.board.get(volume.sp).may_write():
            self.writer(volume.sp).call("Writer.extendVolume", {
                "sdUUID": volume.sd, "imgUUID": volume.img, "volUUID": volume.vol,
                "size": size}, timeout=timeout)
        else:
            path = self._child(volume.sp, MAILBOX)
            mailbox: ServiceRef[MailboxActor] = ServiceRef(self.directory, path)
            reply: concurrent.futures.Future[Message] = ask(
                mailbox.proxy(MailboxProxy).extend(volume.sd, volume.img, volume.vol, size), path)
            try:
                wait(reply, timeout, f"the SPM extending {volume.vol}")
            except VdsmError as e:
                if e.code != StorageTimeout.code:
                    self._explain_refusal(volume)
                raise
        refreshed = self.domains.proxy(DomainsProxy).refresh_volume(volume.sd, volume.img,
                                                                    volume.vol)
        physical: int = self.io(refreshed, "refreshing the extended volume")
        latency = time.monotonic() - started
        log.info("volume %s extended to %d bytes (asked %d) in %.3f s", volume.vol, physical,
                 size, latency)
        self.events.publish(f"|storage|volume_extended|{volume.vol}", {
            "sdUUID": volume.sd, "imgUUID": volume.img, "volUUID": volume.vol,
            "newSize": physical, "latency": round(latency, 6)})
        return physical

    def _explain_refusal(self, volume: VolumeHandle) -> None:
        """The SPM refused an extension through the mailbox, whose replies carry an error's
        code and only 48 bytes of its text: read the volume here (reads only) and raise the
        whole error when this host sees why (no such volume, a raw volume); else return, and
        the SPM's error stands (also when this read fails otherwise)."""
        try:
            info: dict[str, Any] = self.io(self.domains.proxy(DomainsProxy).volume_info(
                volume.sd, volume.img, volume.vol), "reading the volume the SPM refused to extend")
        except NoSuchVolume:
            raise
        except VdsmError as e:
            log.info("cannot read volume %s to explain the SPM's refusal: %s", volume.vol,
                     e.message)
            return
        if VolumeFormat.parse(str(info["format"])) is VolumeFormat.RAW:
            raise StorageError(reason=f"raw volume {volume.vol} has a fixed allocation: "
                               "change its virtual size instead")

    def extend_volume(self, params: dict[str, Any]) -> bool:
        self.extend(VolumeHandle.from_params(params), params["size"])
        return True

    def bindings(self) -> dict[str, Binding]:
        return {
            "StoragePool.getSpmStatus": Binding(self.get_spm_status),
            "StoragePool.spmStart": Binding(self.spm_start),
            "StoragePool.spmStop": Binding(self.spm_stop),
            "StoragePool.extendVolume": Binding(self.extend_volume),
        }
