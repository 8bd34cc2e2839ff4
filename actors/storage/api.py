"""Handlers of the storage and task verbs: short flows over the storage actors.

Every handler runs on an API worker thread (never an actor's) and waits on the actors only
in bounded ways (:mod:`actors.storage.calls`). ``Host.getStorageRepoStats`` only reads the
monitors' board and runs inline on the socket thread. The image and volume verbs, and the
typed interface the VMs share with them, are :class:`~actors.storage.volumes.VolumeApi`'s.

Paths: ``/storage/tasks``, ``/storage/connections``, ``/storage/domains``,
``/storage/pools/<spUUID>`` (a supervisor) with ``.../pool`` and one monitor per active domain.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pykka

from actors.directory import ActorDirectory, ServiceRef
from actors.storage.board import MonitorBoard
from actors.storage.calls import (
    CONNECTIONS,
    POOLS,
    TASKS,
    StorageCalls,
    ask,
    wait,
)
from actors.storage.connections import ConnectionsActor, parse_requests
from actors.storage.proxies import ConnectionsProxy, DomainsProxy, TasksProxy
from actors.storage.sd.records import check_uuid
from actors.storage.state import PoolRecord, PoolRecords
from actors.storage.taskrequest import AttachDomain, DetachDomain
from actors.storage.tasks import TaskManager
from actors.storage.volumes import VolumeApi
from actors.supervisor import ChildExists, ChildSpec, Supervisor, SupervisorProxy
from messaging.errors import (
    ActorUnavailable,
    NoSuchStoragePool,
    StorageDomainAttached,
    StorageError,
    StoragePoolExists,
)
from messaging.server import Binding

log = logging.getLogger(__name__)

T = TypeVar("T")

CREATE_TIMEOUT = 100.0
POOL_START_TIMEOUT = 60.0


class StorageApi(StorageCalls):
    def __init__(self, *, directory: ActorDirectory, board: MonitorBoard, records: PoolRecords,
                 pool_tree: Callable[[PoolRecord], ChildSpec], call_timeout: float,
                 mount_timeout: float) -> None:
        super().__init__(directory=directory, call_timeout=call_timeout)
        self.board = board
        self.records = records
        self.pool_tree = pool_tree
        self.mount_timeout = mount_timeout
        self.volumes = VolumeApi(directory=directory, call_timeout=call_timeout)
        self.tasks: ServiceRef[TaskManager] = ServiceRef(directory, TASKS)
        self.connections: ServiceRef[ConnectionsActor] = ServiceRef(directory, CONNECTIONS)
        self.pools: ServiceRef[Supervisor] = ServiceRef(directory, POOLS)

    # --- connections ---------------------------------------------------------------------

    def connect_storage_server(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        requests = parse_requests(params["domainType"], params["connectionParams"])
        call = self.connections.proxy(ConnectionsProxy).connect(requests)
        timeout = self.mount_timeout * max(1, len(params["connectionParams"])) + 10
        return wait(ask(call, CONNECTIONS), timeout, "connectStorageServer")

    def disconnect_storage_server(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        requests = parse_requests(params["domainType"], params["connectionParams"])
        call = self.connections.proxy(ConnectionsProxy).disconnect(requests)
        timeout = self.mount_timeout * 2 * max(1, len(params["connectionParams"])) + 10
        return wait(ask(call, CONNECTIONS), timeout, "disconnectStorageServer")

    # --- domains -------------------------------------------------------------------------

    def create_domain(self, params: dict[str, Any]) -> bool:
        call: pykka.Future[concurrent.futures.Future[bool]]
        call = self.domains.proxy(DomainsProxy).create_domain(
            params["storagedomainID"], domain_type=params["domainType"],
            type_args=params["typeArgs"], name=params["name"],
            domain_class=params["domainClass"], version=params["version"])
        return self.io(call, "StorageDomain.create", CREATE_TIMEOUT)

    def domain_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.io(self.domains.proxy(DomainsProxy).info(params["storagedomainID"]),
                        "StorageDomain.getInfo")

    def domain_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        sd_uuid = params["storagedomainID"]
        stats: dict[str, Any] = self.io(self.domains.proxy(DomainsProxy).stats(sd_uuid),
                                         "StorageDomain.getStats")
        health = self.board.get(sd_uuid)
        stats["monitored"] = health is not None
        if health is not None:
            stats.update(self.board.snapshot().get(sd_uuid, {}))
        return stats

    def attach(self, params: dict[str, Any]) -> str:
        sd_uuid, sp_uuid = params["storagedomainID"], params["storagepoolID"]
        pool = self.pool(sp_uuid)
        owner = self.io(self.domains.proxy(DomainsProxy).pool_membership(sd_uuid), "attach")
        if owner:
            raise StorageDomainAttached(sdUUID=sd_uuid, spUUID=owner)
        return self.submit(pool, AttachDomain(sp_uuid, sd_uuid))

    def detach(self, params: dict[str, Any]) -> str:
        pool = self.pool(params["storagepoolID"])
        return self.submit(pool, DetachDomain(params["storagepoolID"],
                                              params["storagedomainID"]))

    def activate(self, params: dict[str, Any]) -> bool:
        pool = self.pool(params["storagepoolID"])
        done: bool = wait(ask(pool.activate(params["storagedomainID"]), "pool"),
                          self.call_timeout, "StorageDomain.activate")
        return done

    def deactivate(self, params: dict[str, Any]) -> bool:
        pool = self.pool(params["storagepoolID"])
        done: bool = wait(ask(pool.deactivate(params["storagedomainID"]), "pool"),
                          self.call_timeout, "StorageDomain.deactivate")
        return done

    # --- pools ---------------------------------------------------------------------------

    def create_pool(self, params: dict[str, Any]) -> bool:
        sp_uuid = params["storagepoolID"]
        if self.directory.get(f"{POOLS}/{sp_uuid}") is not None:
            raise StoragePoolExists(spUUID=sp_uuid)
        domains = self.domains.proxy(DomainsProxy)
        call: pykka.Future[concurrent.futures.Future[bool]] = domains.create_pool(
            sp_uuid, name=params["name"], master_sd=params["masterSdUUID"],
            master_version=params["masterVersion"], domain_list=params["domainList"])
        return self.io(call, "StoragePool.create", CREATE_TIMEOUT)

    def connect_pool(self, params: dict[str, Any]) -> bool:
        record = PoolRecord(params["storagepoolID"], params["hostID"], params["masterSdUUID"],
                            params["masterVersion"])
        if self.directory.get(f"{POOLS}/{record.sp_uuid}") is not None:
            current = ask(self.pool(record.sp_uuid).record, "pool")
            if current != record:
                raise StorageError(reason=f"pool {record.sp_uuid} is already connected with "
                                   f"hostID {current.host_id}, master {current.master_sd} "
                                   f"version {current.master_version}")
            wait(ask(self.pool(record.sp_uuid).when_loaded(), "pool"), self.call_timeout,
                 "StoragePool.connect")
            return True
        try:
            ask(self.pools.proxy(SupervisorProxy).start_child(self.pool_tree(record)), POOLS,
                POOL_START_TIMEOUT)
        except ChildExists:
            raise StorageError(reason=f"pool {record.sp_uuid} is being connected") from None
        try:
            wait(ask(self.pool(record.sp_uuid).when_loaded(), "pool"), self.call_timeout,
                 "StoragePool.connect")
        except BaseException:
            self._stop_pool(record.sp_uuid)
            raise
        self.records.put(record)
        log.info("connected pool %s as host %d", record.sp_uuid, record.host_id)
        return True

    def disconnect_pool(self, params: dict[str, Any]) -> bool:
        sp_uuid = params["storagepoolID"]
        if self.directory.get(f"{POOLS}/{sp_uuid}") is None:
            raise NoSuchStoragePool(spUUID=sp_uuid)
        try:
            current = ask(self.pool(sp_uuid).record, "pool")
        except (ActorUnavailable, NoSuchStoragePool):
            current = None
        if current is not None and current.host_id != params["hostID"]:
            raise StorageError(reason=f"pool {sp_uuid} is connected as host "
                               f"{current.host_id}, not {params['hostID']}")
        self._stop_pool(sp_uuid)
        self.records.remove(sp_uuid)
        log.info("disconnected pool %s", sp_uuid)
        return True

    def _stop_pool(self, sp_uuid: str) -> None:
        ask(self.pools.proxy(SupervisorProxy).stop_child(sp_uuid), POOLS, POOL_START_TIMEOUT * 2)

    def pool_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = ask(self.pool(params["storagepoolID"]).info(), "pool")
        return info

    # --- monitors and tasks ----------------------------------------------------------------

    def repo_stats(self, _params: dict[str, Any]) -> dict[str, Any]:
        return self.board.snapshot()

    def task_statuses(self, _params: dict[str, Any]) -> dict[str, Any]:
        statuses: dict[str, Any] = ask(self.tasks.proxy(TasksProxy).task_statuses(), TASKS)
        return statuses

    def _task(self, verb: Callable[[TasksProxy, str], pykka.Future[T]],
              ) -> Callable[[dict[str, Any]], T]:
        def handler(params: dict[str, Any]) -> T:
            task_id = check_uuid(params["taskID"], "taskID")
            return ask(verb(self.tasks.proxy(TasksProxy), task_id), TASKS)

        return handler

    def bindings(self) -> dict[str, Binding]:
        return {
            "StoragePool.connectStorageServer": Binding(self.connect_storage_server),
            "StoragePool.disconnectStorageServer": Binding(self.disconnect_storage_server),
            "StorageDomain.create": Binding(self.create_domain),
            "StorageDomain.getInfo": Binding(self.domain_info),
            "StorageDomain.getStats": Binding(self.domain_stats),
            "StorageDomain.attach": Binding(self.attach),
            "StorageDomain.detach": Binding(self.detach),
            "StorageDomain.activate": Binding(self.activate),
            "StorageDomain.deactivate": Binding(self.deactivate),
            "StoragePool.create": Binding(self.create_pool),
            "StoragePool.connect": Binding(self.connect_pool),
            "StoragePool.disconnect": Binding(self.disconnect_pool),
            "StoragePool.getInfo": Binding(self.pool_info),
            "Host.getStorageRepoStats": Binding(self.repo_stats, inline=True),
            "Host.getAllTasksStatuses": Binding(self.task_statuses),
            "Task.getStatus": Binding(self._task(lambda t, i: t.task_status(i))),
            "Task.clear": Binding(self._task(lambda t, i: t.clear_task(i))),
            "Task.stop": Binding(self._task(lambda t, i: t.stop_task(i))),
            "Task.revert": Binding(self._task(lambda t, i: t.revert_task(i))),
            **self.volumes.bindings(),
        }
