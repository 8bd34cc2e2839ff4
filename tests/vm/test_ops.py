"""VmOps against the real libvirtd, with drives named by pool/domain/image/volume served by a
stand-in for the storage subsystem (prepare_volume/teardown_volume, the interface VMs use)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest

from actors.config import VmConfig
from actors.storage.handle import VolumeHandle, VolumeSize
from actors.vm.hooks import HookRunner
from actors.vm.ops import VmEnv, VmOps
from actors.vm.params import VmParams
from actors.vm.registry import VmRegistry
from actors.vm.seriallog import SerialLogs
from actors.vm.status import VmStatus
from messaging.errors import StorageError, VMError
from tests.libvirthelp import handle_over
from tests.vm.helpers import raw_params, validated

pytestmark = pytest.mark.libvirt


@dataclass
class Volumes:
    """Serves each volume as a qcow2 file under ``root``; records what was prepared."""

    root: Path
    fail: set[str] = field(default_factory=set)
    prepared: list[str] = field(default_factory=list)
    torn_down: list[str] = field(default_factory=list)

    def prepare_volume(self, volume: VolumeHandle, vm_id: str, /) -> str:
        vol = volume.vol
        if vol in self.fail:
            raise StorageError(reason=f"volume {vol} is not available")
        path = self.root / f"{vol}.qcow2"
        if not path.exists():
            qemu_img = shutil.which("qemu-img")
            assert qemu_img is not None
            subprocess.run([qemu_img, "create", "-f", "qcow2", str(path), "16M"], check=True,
                           capture_output=True, timeout=30)
        self.prepared.append(vol)
        return str(path)

    def teardown_volume(self, volume: VolumeHandle, vm_id: str, /) -> None:
        self.torn_down.append(volume.vol)

    def volume_size(self, volume: VolumeHandle, /) -> VolumeSize:
        size = (self.root / f"{volume.vol}.qcow2").stat().st_size
        return VolumeSize(16 << 20, size, None)  # files: never extended

    def extend_volume(self, volume: VolumeHandle, size: int, /, *, since: float | None = None,
                      timeout: float | None = None) -> int:
        raise AssertionError("file volumes are never extended")

    def domain_valid(self, sd_uuid: str, /) -> bool | None:
        return True


def volume_drive(vol: str) -> dict[str, Any]:
    ids = {"poolID": str(uuid.uuid4()), "domainID": str(uuid.uuid4()),
           "imageID": str(uuid.uuid4()), "volumeID": vol}
    return {**ids, "format": "cow"}


@pytest.fixture
def volumes(tmp_path: Path) -> Volumes:
    return Volumes(tmp_path)


@pytest.fixture
def ops_for(tmp_path: Path, volumes: Volumes, conn: libvirt.virConnect) -> Any:
    handle = handle_over(conn, "qemu:///system")
    env = VmEnv(libvirt=handle, hooks=HookRunner(tmp_path / "hooks"), storage=volumes,
                config=VmConfig(), owner=str(tmp_path), logs=SerialLogs(tmp_path / "vms", kept=5),
                registry=VmRegistry(tmp_path / "vms"))
    made: list[VmOps] = []

    def make(params: VmParams) -> VmOps:
        ops = VmOps(params.vm_id, env)
        made.append(ops)
        return ops

    # The ops run on the test's thread here (on a GuestCaller thread, which leases the
    # connection, in the agent): the test's thread holds the lease.
    with handle.lease():
        yield make
    for ops in made:
        try:
            conn.lookupByUUIDString(ops.vm_id).destroy()
        except libvirt.libvirtError:
            pass


@pytest.mark.timeout(120)
def test_volume_drives_are_prepared_used_and_torn_down(
    ops_for: Any, volumes: Volumes, conn: libvirt.virConnect, tmp_path: Path
) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    params = VmParams.from_dict(str(uuid.uuid4()), validated(raw_params(
        emulator="qemu", memSize=96, drives=[volume_drive(a), volume_drive(b)])))
    ops = ops_for(params)
    started = ops.start(params, threading.Event())
    assert started.state.status == VmStatus.UP
    assert volumes.prepared == [a, b]
    xml = conn.lookupByUUIDString(params.vm_id).XMLDesc(0)
    assert str(tmp_path / f"{a}.qcow2") in xml and str(tmp_path / f"{b}.qcow2") in xml
    assert list(VmRegistry(tmp_path / "vms").entries()) == [params.vm_id]
    attached = ops.attach()
    assert attached is not None and attached.params == params  # volumes stay ids
    ops.destroy(params)
    assert volumes.torn_down == [a, b]
    assert ops.attach() is None


@pytest.mark.timeout(60)
def test_a_volume_that_cannot_be_prepared_leaves_nothing(
    ops_for: Any, volumes: Volumes, conn: libvirt.virConnect
) -> None:
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    volumes.fail.add(bad)
    params = VmParams.from_dict(str(uuid.uuid4()), validated(raw_params(
        emulator="qemu", memSize=96, drives=[volume_drive(good), volume_drive(bad)])))
    with pytest.raises(StorageError, match=bad):
        ops_for(params).start(params, threading.Event())
    assert volumes.prepared == [good]
    assert volumes.torn_down == [good]  # the one prepared before the failure
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByUUIDString(params.vm_id)


@pytest.mark.timeout(60)
def test_a_start_that_fails_after_preparing_tears_down(
    ops_for: Any, volumes: Volumes, conn: libvirt.virConnect
) -> None:
    vol = str(uuid.uuid4())
    params = VmParams.from_dict(str(uuid.uuid4()), validated(raw_params(
        emulator="qemu", memSize=96, kernel="/nonexistent/vmlinuz", drives=[volume_drive(vol)])))
    with pytest.raises(VMError, match="/nonexistent/vmlinuz"):
        ops_for(params).start(params, threading.Event())
    assert volumes.torn_down == [vol]
