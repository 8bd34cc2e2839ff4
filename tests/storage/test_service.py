"""The storage subsystem in-process: its sub-tree, and what it offers the VM subsystem."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.base import ActorContext, Ping, Runtime
from actors.config import Config, DaemonConfig, SpmConfig, StorageConfig
from actors.directory import ServiceRef
from actors.host.libvirtconn import LibvirtHandle
from actors.storage.domains import DomainsActor
from actors.storage.handle import VolumeHandle
from actors.storage.service import StorageSubsystem
from actors.storage.workers import Handoff
from actors.subsystem import Deps
from actors.supervisor import ChildSpec, Supervisor
from messaging.errors import (
    ImageInUse,
    InvalidParams,
    NoSuchStoragePool,
    StorageTimeout,
    VolumeInUse,
)
from messaging.schema import SCHEMA
from tests.harness import wait_for
from tests.storage.helpers import loop_devices_of


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def storage(tmp: Path, runtime: Runtime) -> Iterator[StorageSubsystem]:
    config = Config(daemon=DaemonConfig(state_dir=tmp / "state", run_dir=tmp / "run"),
                    storage=StorageConfig(monitor_interval=0.5, monitor_timeout=1.0),
                    spm=SpmConfig(lease_time=3, renew_interval=0.5, io_timeout=0.5,
                                  agent_timeout=2, heartbeat_interval=0.2))
    subsystem = StorageSubsystem(Deps(config, runtime, LibvirtHandle("test:///default")))
    children = subsystem.children()
    spec = ChildSpec("storage", lambda ctx: Supervisor.start(ctx, children=children),
                     cls="Supervisor")
    root = Supervisor.start(ActorContext("/", runtime), children=[spec])
    root.ask(Ping(), timeout=30)
    try:
        yield subsystem
    finally:
        root.stop(block=True, timeout=30)


def call(storage: StorageSubsystem, verb: str, **params: Any) -> Any:
    """A verb as the API server runs it: params validated (defaults filled), then handled."""
    checked = SCHEMA.lookup(verb).check_params(params)
    return storage.bindings()[verb].handler(checked)


def become_spm(storage: StorageSubsystem, sp: str) -> None:
    """spmStart, and wait for its task: this host must be the pool's SPM to write."""
    task = call(storage, "StoragePool.spmStart", storagepoolID=sp)
    wait_for(lambda: call(storage, "Task.getStatus", taskID=task)["taskState"] == "finished",
             30, what="spmStart")
    assert call(storage, "Task.getStatus", taskID=task)["taskResult"] == "success"


@pytest.mark.timeout(60)
def test_the_vm_subsystem_prepares_and_tears_down_volumes(
        tmp: Path, storage: StorageSubsystem, runtime: Runtime) -> None:
    tree = {info.path: info.cls for info in runtime.directory}
    assert tree["/storage/tasks"] == "TaskManager"
    assert tree["/storage/connections"] == "ConnectionsActor"
    assert tree["/storage/domains"] == "DomainsActor"
    assert tree["/storage/pools"] == "Supervisor"
    data = tmp / "blocks"
    data.mkdir()
    result = call(storage, "StoragePool.connectStorageServer", storagepoolID=new_id(),
                  domainType="localfs", connectionParams=[{"id": "1", "connection": str(data)}])
    assert result == [{"id": "1", "status": 0}]
    sd, sp, img, vol = new_id(), new_id(), new_id(), new_id()
    assert call(storage, "StorageDomain.create", storagedomainID=sd, domainType="loop",
                typeArgs=str(data), name="blocks") is True
    assert call(storage, "StoragePool.create", storagepoolID=sp, name="p", masterSdUUID=sd,
                masterVersion=1, domainList=[sd]) is True
    assert call(storage, "StoragePool.connect", storagepoolID=sp, hostID=1, masterSdUUID=sd,
                masterVersion=1) is True
    become_spm(storage, sp)
    assert f"/storage/pools/{sp}/pool" in {i.path for i in runtime.directory}
    task = call(storage, "Volume.create", storagepoolID=sp, storagedomainID=sd, imageID=img,
                volumeID=vol, size=16 << 20, volFormat="raw", preallocate="preallocated")
    wait_for(lambda: call(storage, "Task.getStatus", taskID=task)["taskResult"] == "success",
             30, what="the volume")

    volume, vm = VolumeHandle(sp, sd, img, vol), new_id()
    path = Path(storage.prepare_volume(volume, vm))
    assert path.is_symlink()
    assert stat.S_ISBLK(path.stat().st_mode)
    assert path.resolve().name.startswith("loop")
    wait_for(lambda: storage.host_stats()["storageDomains"].get(sd, {}).get("valid"), 10,
             what="the monitor's first result")
    ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": img}
    with pytest.raises(VolumeInUse) as in_use:  # the VM's volume cannot be deleted ...
        call(storage, "Volume.delete", volumeID=vol, **ids)
    assert in_use.value.code == 218 and f"vm-{vm}" in in_use.value.message
    with pytest.raises(ImageInUse) as image_in_use:  # ... nor its image
        call(storage, "Image.delete", **ids)
    assert image_in_use.value.code == 223
    # a client's Image.teardown releases what the client prepared, never the VM's use
    assert call(storage, "Image.prepare", volumeID=vol, **ids)["path"] == str(path)
    assert call(storage, "Image.teardown", **ids) is True
    assert stat.S_ISBLK(path.stat().st_mode)
    with pytest.raises(VolumeInUse):
        call(storage, "Volume.delete", volumeID=vol, **ids)
    storage.teardown_volume(volume, vm)
    assert not path.exists()
    wait_for(lambda: loop_devices_of(tmp) == [], 10, what="loop devices detached")

    with pytest.raises(InvalidParams):
        VolumeHandle(sp, sd, img, "../../../dev/sda")
    with pytest.raises(NoSuchStoragePool):
        storage.prepare_volume(VolumeHandle(new_id(), sd, img, vol), vm)
    task = call(storage, "Volume.delete", volumeID=vol, **ids)
    wait_for(lambda: call(storage, "Task.getStatus", taskID=task)["taskResult"] == "success",
             30, what="the deletion")
    assert call(storage, "StoragePool.disconnect", storagepoolID=sp, hostID=1) is True
    assert storage.host_stats() == {"storageDomains": {}}


@pytest.mark.timeout(60)
def test_a_prepare_its_caller_gave_up_on_is_undone_when_it_finishes(
        tmp: Path, storage: StorageSubsystem, runtime: Runtime) -> None:
    data = tmp / "blocks"
    data.mkdir()
    call(storage, "StoragePool.connectStorageServer", storagepoolID=new_id(),
         domainType="localfs", connectionParams=[{"id": "1", "connection": str(data)}])
    sd, sp, img, vol = new_id(), new_id(), new_id(), new_id()
    call(storage, "StorageDomain.create", storagedomainID=sd, domainType="loop",
         typeArgs=str(data), name="blocks")
    call(storage, "StoragePool.create", storagepoolID=sp, name="p", masterSdUUID=sd,
         masterVersion=1, domainList=[sd])
    call(storage, "StoragePool.connect", storagepoolID=sp, hostID=1, masterSdUUID=sd,
         masterVersion=1)
    become_spm(storage, sp)
    task = call(storage, "Volume.create", storagepoolID=sp, storagedomainID=sd, imageID=img,
                volumeID=vol, size=16 << 20, volFormat="raw", preallocate="preallocated")
    wait_for(lambda: call(storage, "Task.getStatus", taskID=task)["taskResult"] == "success",
             30, what="the volume")
    domains = ServiceRef[DomainsActor](runtime.directory, "/storage/domains").ref().proxy()
    # The caller's deadline passed before the worker finished (the order a hung, then
    # recovered, storage gives): the worker undoes its prepare instead of leaving a use
    # nobody knows of.
    gone = Handoff()
    assert gone.abandon()
    late = domains.prepare(sd, img, vol, "api", gone).get(timeout=10)
    with pytest.raises(StorageTimeout):
        late.result(20)
    assert storage.usage.holders(sd, img, vol) == []
    assert loop_devices_of(tmp) == []
    # delivered in time: prepared and recorded
    kept = Handoff()
    prepared = domains.prepare(sd, img, vol, "api", kept).get(timeout=10).result(20)
    assert not kept.abandon()  # too late to abandon
    assert storage.usage.holders(sd, img, vol) == ["api"]
    assert prepared.device in loop_devices_of(tmp)
    assert call(storage, "Image.teardown", storagepoolID=sp, storagedomainID=sd,
                imageID=img) is True
    wait_for(lambda: loop_devices_of(tmp) == [], 10, what="loop devices detached")
    assert call(storage, "StoragePool.disconnect", storagepoolID=sp, hostID=1) is True
