"""The SPM verbs: ``getSpmStatus``, ``spmStart``, ``spmStop`` and ``extendVolume``.

``getSpmStatus`` reads the lease board (no actor is asked). ``spmStart`` is a task, as in
vdsm: it is recorded at once and finishes when this host holds the lease (or is refused).
``spmStop`` refuses while SPM tasks of the pool run here, then has the keeper release the
lease and waits until it did. ``extendVolume`` works from any host: the SPM's writer
extends directly, any other host asks the SPM through the storage mailbox; either way this
host then refreshes its own view of the volume (its loop devices or its LV) before
answering, so the caller can use the room at once.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Callable
from typing import Any

from actors.directory import ActorDirectory, ServiceRef
from actors.storage.calls import POOLS, StorageCalls, ask, recorded, wait
from actors.storage.mailbox.actors import MailboxActor
from actors.storage.mailbox.format import Message
from actors.storage.spm.board import LeaseBoard
from actors.storage.spm.leaseactor import LeaseActor
from actors.storage.spm.writerclient import WriterClient
from actors.storage.tasks import SubmitTask, TaskManager
from messaging.errors import ActorUnavailable, StorageError
from messaging.server import Binding

SPM_START = "StoragePool.spmStart"
LEASE, MAILBOX = "lease", "mailbox"


class SpmApi(StorageCalls):
    def __init__(self, *, directory: ActorDirectory, call_timeout: float, board: LeaseBoard,
                 tasks: ServiceRef[TaskManager], writer: Callable[[str], WriterClient],
                 extend_timeout: float, stop_timeout: float) -> None:
        super().__init__(directory=directory, call_timeout=call_timeout)
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
        running = ask(self.tasks.proxy().running(sp_uuid), "tasks")
        if running:
            raise StorageError(reason=f"{len(running)} task(s) of pool {sp_uuid} still run on "
                               f"this SPM ({', '.join(running[:5])}): wait for them or stop "
                               "them first")
        lease: ServiceRef[LeaseActor] = ServiceRef(self.directory, path)
        ask(lease.proxy().spm_stop(), path)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            state = self.board.get(sp_uuid)
            if state.status != "SPM" and not state.detail.get("spm", {}).get("releasing"):
                return True
            time.sleep(0.05)
        raise StorageError(reason=f"the SPM lease of pool {sp_uuid} was not released within "
                           f"{self.stop_timeout:g} s")

    def extend_volume(self, params: dict[str, Any]) -> bool:
        sp_uuid, sd_uuid = params["storagepoolID"], params["storagedomainID"]
        img_uuid, vol_uuid, size = params["imageID"], params["volumeID"], params["size"]
        self.member(sp_uuid, sd_uuid, active=True)
        if self.board.get(sp_uuid).may_write():
            self.writer(sp_uuid).call("Writer.extendVolume", {
                "sdUUID": sd_uuid, "imgUUID": img_uuid, "volUUID": vol_uuid, "size": size},
                timeout=self.extend_timeout)
        else:
            path = self._child(sp_uuid, MAILBOX)
            mailbox: ServiceRef[MailboxActor] = ServiceRef(self.directory, path)
            reply: concurrent.futures.Future[Message] = ask(
                mailbox.proxy().extend(sd_uuid, img_uuid, vol_uuid, size), path)
            wait(reply, self.extend_timeout, f"the SPM extending {vol_uuid}")
        self.io(self.domains.proxy().refresh_volume(sd_uuid, img_uuid, vol_uuid),
                "refreshing the extended volume")
        return True

    def bindings(self) -> dict[str, Binding]:
        return {
            "StoragePool.getSpmStatus": Binding(self.get_spm_status),
            "StoragePool.spmStart": Binding(self.spm_start),
            "StoragePool.spmStop": Binding(self.spm_stop),
            "StoragePool.extendVolume": Binding(self.extend_volume),
        }
