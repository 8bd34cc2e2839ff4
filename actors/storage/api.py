"""Handlers of the storage and task verbs: short flows over the storage actors.

Every handler runs on an API worker thread (never an actor's). It asks actors through
proxies with a timeout; storage I/O comes back as a :class:`concurrent.futures.Future` from
the actor that owns the worker doing it, which the handler waits on with a bounded timeout
(past it: 215, and the stuck worker stays confined to its domain). ``Host.getStorageRepoStats``
only reads the monitors' board and runs inline on the socket thread.

Paths: ``/storage/tasks``, ``/storage/connections``, ``/storage/domains``,
``/storage/pools/<spUUID>`` (a supervisor) with ``.../pool`` and one monitor per active domain.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pykka

from actors.directory import ActorDirectory, ServiceRef
from actors.storage.board import MonitorBoard
from actors.storage.connections import ConnectionsActor
from actors.storage.domains import DomainsActor
from actors.storage.pool import POOL_CHILD, PoolActor
from actors.storage.sd.records import (
    BLANK_UUID,
    Allocation,
    VolumeCreateRequest,
    VolumeFormat,
    check_uuid,
)
from actors.storage.state import PoolRecord, PoolRecords
from actors.storage.tasks import TaskManager
from actors.supervisor import ChildExists, ChildSpec, Supervisor
from messaging.deadline import current as current_deadline
from messaging.errors import (
    ActorUnavailable,
    NoSuchStoragePool,
    StorageDomainAttached,
    StorageError,
    StoragePoolExists,
    StorageTimeout,
)
from messaging.server import Binding

log = logging.getLogger(__name__)

T = TypeVar("T")

STORAGE = "/storage"
TASKS = f"{STORAGE}/tasks"
CONNECTIONS = f"{STORAGE}/connections"
DOMAINS = f"{STORAGE}/domains"
POOLS = f"{STORAGE}/pools"
ASK_TIMEOUT = 10.0
CREATE_TIMEOUT = 100.0
POOL_START_TIMEOUT = 60.0


def wait(future: concurrent.futures.Future[T], timeout: float, what: str) -> T:
    """The result of storage work, or :class:`StorageTimeout` after ``timeout``.

    The request's deadline is extended to cover ``timeout`` (the wire timeout derives from
    the storage call's own), and the wait never outlasts the request's deadline."""
    deadline = current_deadline()
    deadline.cover(time.monotonic() + timeout)
    timeout = deadline.clamp(timeout)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise StorageTimeout(timeout=timeout, reason=what) from None


def ask(future: pykka.Future[T], path: str, timeout: float = ASK_TIMEOUT) -> T:
    """An actor's answer, or :class:`ActorUnavailable` (retryable) if it gives none."""
    timeout = current_deadline().clamp(timeout)
    try:
        return future.get(timeout=timeout)
    except pykka.Timeout:
        raise ActorUnavailable(path=path, reason=f"no answer within {timeout:g} s") from None
    except pykka.ActorDeadError:
        raise ActorUnavailable(path=path, reason="stopped") from None


class StorageApi:
    def __init__(self, *, directory: ActorDirectory, board: MonitorBoard, records: PoolRecords,
                 pool_tree: Callable[[PoolRecord], ChildSpec], call_timeout: float,
                 mount_timeout: float) -> None:
        self.directory = directory
        self.board = board
        self.records = records
        self.pool_tree = pool_tree
        self.call_timeout = call_timeout
        self.mount_timeout = mount_timeout
        self.tasks: ServiceRef[TaskManager] = ServiceRef(directory, TASKS)
        self.connections: ServiceRef[ConnectionsActor] = ServiceRef(directory, CONNECTIONS)
        self.domains: ServiceRef[DomainsActor] = ServiceRef(directory, DOMAINS)
        self.pools: ServiceRef[Supervisor] = ServiceRef(directory, POOLS)

    # --- helpers -----------------------------------------------------------------------

    def _pool(self, sp_uuid: str) -> pykka.ActorProxy[PoolActor]:
        path = f"{POOLS}/{sp_uuid}/{POOL_CHILD}"
        if self.directory.get(path) is None:
            raise NoSuchStoragePool(spUUID=sp_uuid)
        ref: ServiceRef[PoolActor] = ServiceRef(self.directory, path)
        return ref.proxy()

    def _io(self, call: pykka.Future[concurrent.futures.Future[T]], what: str,
            timeout: float | None = None) -> T:
        return wait(ask(call, DOMAINS), timeout or self.call_timeout, what)

    def _member(self, params: dict[str, Any], *, active: bool) -> pykka.ActorProxy[PoolActor]:
        pool = self._pool(params["storagepoolID"])
        ask(pool.check_domain(params["storagedomainID"], active=active), "pool")
        return pool

    # --- connections ---------------------------------------------------------------------

    def connect_storage_server(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        call = self.connections.proxy().connect(params["domainType"],
                                                params["connectionParams"])
        timeout = self.mount_timeout * max(1, len(params["connectionParams"])) + 10
        return wait(ask(call, CONNECTIONS), timeout, "connectStorageServer")

    def disconnect_storage_server(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        call = self.connections.proxy().disconnect(params["domainType"],
                                                   params["connectionParams"])
        timeout = self.mount_timeout * 2 * max(1, len(params["connectionParams"])) + 10
        return wait(ask(call, CONNECTIONS), timeout, "disconnectStorageServer")

    # --- domains -------------------------------------------------------------------------

    def create_domain(self, params: dict[str, Any]) -> bool:
        call: pykka.Future[concurrent.futures.Future[bool]]
        call = self.domains.proxy().create_domain(
            params["storagedomainID"], domain_type=params["domainType"],
            type_args=params["typeArgs"], name=params["name"],
            domain_class=params["domainClass"], version=params["version"])
        return self._io(call, "StorageDomain.create", CREATE_TIMEOUT)

    def domain_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._io(self.domains.proxy().info(params["storagedomainID"]),
                        "StorageDomain.getInfo")

    def domain_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        sd_uuid = params["storagedomainID"]
        stats: dict[str, Any] = self._io(self.domains.proxy().stats(sd_uuid),
                                         "StorageDomain.getStats")
        health = self.board.get(sd_uuid)
        stats["monitored"] = health is not None
        if health is not None:
            stats.update(self.board.snapshot().get(sd_uuid, {}))
        return stats

    def attach(self, params: dict[str, Any]) -> str:
        sd_uuid, sp_uuid = params["storagedomainID"], params["storagepoolID"]
        pool = self._pool(sp_uuid)
        owner = self._io(self.domains.proxy().pool_membership(sd_uuid), "attach")
        if owner:
            raise StorageDomainAttached(sdUUID=sd_uuid, spUUID=owner)
        return self._submit(pool, "StorageDomain.attach", sp_uuid, sdUUID=sd_uuid)

    def detach(self, params: dict[str, Any]) -> str:
        pool = self._pool(params["storagepoolID"])
        return self._submit(pool, "StorageDomain.detach", params["storagepoolID"],
                            sdUUID=params["storagedomainID"])

    def activate(self, params: dict[str, Any]) -> bool:
        pool = self._pool(params["storagepoolID"])
        done: bool = wait(ask(pool.activate(params["storagedomainID"]), "pool"),
                          self.call_timeout, "StorageDomain.activate")
        return done

    def deactivate(self, params: dict[str, Any]) -> bool:
        pool = self._pool(params["storagepoolID"])
        done: bool = wait(ask(pool.deactivate(params["storagedomainID"]), "pool"),
                          self.call_timeout, "StorageDomain.deactivate")
        return done

    def _submit(self, pool: pykka.ActorProxy[PoolActor], verb: str, sp_uuid: str,
                **params: Any) -> str:
        task_id: str = ask(pool.submit(verb, {"spUUID": sp_uuid, **params}), "pool")
        return task_id

    # --- pools ---------------------------------------------------------------------------

    def create_pool(self, params: dict[str, Any]) -> bool:
        sp_uuid = params["storagepoolID"]
        if self.directory.get(f"{POOLS}/{sp_uuid}") is not None:
            raise StoragePoolExists(spUUID=sp_uuid)
        call: pykka.Future[concurrent.futures.Future[bool]] = self.domains.proxy().create_pool(
            sp_uuid, name=params["name"], master_sd=params["masterSdUUID"],
            master_version=params["masterVersion"], domain_list=params["domainList"])
        return self._io(call, "StoragePool.create", CREATE_TIMEOUT)

    def connect_pool(self, params: dict[str, Any]) -> bool:
        record = PoolRecord(params["storagepoolID"], params["hostID"], params["masterSdUUID"],
                            params["masterVersion"])
        if self.directory.get(f"{POOLS}/{record.sp_uuid}") is not None:
            current = ask(self._pool(record.sp_uuid).record, "pool")
            if current != record:
                raise StorageError(reason=f"pool {record.sp_uuid} is already connected with "
                                   f"hostID {current.host_id}, master {current.master_sd} "
                                   f"version {current.master_version}")
            wait(ask(self._pool(record.sp_uuid).when_loaded(), "pool"), self.call_timeout,
                 "StoragePool.connect")
            return True
        try:
            ask(self.pools.proxy().start_child(self.pool_tree(record)), POOLS,
                POOL_START_TIMEOUT)
        except ChildExists:
            raise StorageError(reason=f"pool {record.sp_uuid} is being connected") from None
        try:
            wait(ask(self._pool(record.sp_uuid).when_loaded(), "pool"), self.call_timeout,
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
            current = ask(self._pool(sp_uuid).record, "pool")
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
        ask(self.pools.proxy().stop_child(sp_uuid), POOLS, POOL_START_TIMEOUT * 2)

    def pool_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = ask(self._pool(params["storagepoolID"]).info(), "pool")
        return info

    # --- images and volumes --------------------------------------------------------------

    def create_volume(self, params: dict[str, Any]) -> str:
        parent_vol = params.get("srcVolUUID")
        parent_img = params.get("srcImgUUID")
        if parent_vol in (None, BLANK_UUID):
            parent_vol = parent_img = None
        elif parent_img in (None, BLANK_UUID):
            parent_img = params["imageID"]
        req = VolumeCreateRequest(
            sd_uuid=params["storagedomainID"], img_uuid=params["imageID"],
            vol_uuid=params["volumeID"], capacity=params["size"],
            format=VolumeFormat.parse(params["volFormat"]),
            allocation=Allocation.parse(params["preallocate"]),
            initial_size=params.get("initialSize"), parent_img=parent_img,
            parent_vol=parent_vol, description=params.get("desc", ""))
        pool = self._member(params, active=True)
        self._io(self.domains.proxy().check_new_volume(req), "Volume.create")
        return self._submit(pool, "Volume.create", params["storagepoolID"],
                            sdUUID=req.sd_uuid, request=req.to_json())

    def volume_info(self, params: dict[str, Any]) -> dict[str, Any]:
        self._member(params, active=False)
        return self._io(self.domains.proxy().volume_info(
            params["storagedomainID"], params["imageID"], params["volumeID"]), "Volume.getInfo")

    def delete_volume(self, params: dict[str, Any]) -> str:
        pool = self._member(params, active=True)
        sd, img, vol = params["storagedomainID"], params["imageID"], params["volumeID"]
        self._io(self.domains.proxy().check_volume(sd, img, vol), "Volume.delete")
        return self._submit(pool, "Volume.delete", params["storagepoolID"], sdUUID=sd,
                            imgUUID=img, volUUID=vol)

    def delete_image(self, params: dict[str, Any]) -> str:
        pool = self._member(params, active=True)
        sd, img = params["storagedomainID"], params["imageID"]
        self._io(self.domains.proxy().check_volume(sd, img, None), "Image.delete")
        return self._submit(pool, "Image.delete", params["storagepoolID"], sdUUID=sd,
                            imgUUID=img)

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        self._member(params, active=True)
        return self._io(self.domains.proxy().prepare(
            params["storagedomainID"], params["imageID"], params["volumeID"]), "Image.prepare")

    def teardown(self, params: dict[str, Any]) -> bool:
        self._member(params, active=False)
        self._io(self.domains.proxy().teardown_image(
            params["storagedomainID"], params["imageID"], params.get("volumeID")),
            "Image.teardown")
        return True

    # --- monitors and tasks ----------------------------------------------------------------

    def repo_stats(self, _params: dict[str, Any]) -> dict[str, Any]:
        return self.board.snapshot()

    def task_statuses(self, _params: dict[str, Any]) -> dict[str, Any]:
        statuses: dict[str, Any] = ask(self.tasks.proxy().task_statuses(), TASKS)
        return statuses

    def _task(self, verb: str) -> Callable[[dict[str, Any]], Any]:
        def handler(params: dict[str, Any]) -> Any:
            task_id = check_uuid(params["taskID"], "taskID")
            return ask(getattr(self.tasks.proxy(), verb)(task_id), TASKS)

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
            "Volume.create": Binding(self.create_volume),
            "Volume.getInfo": Binding(self.volume_info),
            "Volume.delete": Binding(self.delete_volume),
            "Image.prepare": Binding(self.prepare),
            "Image.teardown": Binding(self.teardown),
            "Image.delete": Binding(self.delete_image),
            "Host.getStorageRepoStats": Binding(self.repo_stats, inline=True),
            "Host.getAllTasksStatuses": Binding(self.task_statuses),
            "Task.getStatus": Binding(self._task("task_status")),
            "Task.clear": Binding(self._task("clear_task")),
            "Task.stop": Binding(self._task("stop_task")),
            "Task.revert": Binding(self._task("revert_task")),
        }
