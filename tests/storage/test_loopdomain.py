from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from actors.storage import loopdev, qemuimg
from actors.storage.sd.backend import StorageDomainBackend
from actors.storage.sd.loopdomain import LoopDomain
from actors.storage.sd.records import Allocation, VolumeCreateRequest, VolumeFormat
from messaging.errors import InvalidParams, NoSpace, StorageError, VolumeInUse
from tests.storage.helpers import ext4, sh

MiB = 1 << 20
GiB = 1 << 30


def new_id() -> str:
    return str(uuid.uuid4())


def device_size(device: str) -> int:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


@pytest.fixture
def dom(tmp: Path) -> LoopDomain:
    """A loop domain in ``tmp`` (whose fixture fails the test on a leaked loop device)."""
    (tmp / "mnt").mkdir()
    return LoopDomain.create(tmp / "mnt", new_id(), name="loop", run_dir=tmp / "run",
                             chunk_size=64 * MiB)


def thin(dom: LoopDomain, img: str, vol: str, *, initial: int | None = None,
         parent: str | None = None) -> VolumeCreateRequest:
    return VolumeCreateRequest(dom.sd_uuid, img, vol, GiB, VolumeFormat.COW, Allocation.SPARSE,
                               initial_size=initial, parent_img=img if parent else None,
                               parent_vol=parent)


@pytest.mark.timeout(60)
def test_thin_volumes_have_a_real_allocation(dom: LoopDomain) -> None:
    backend: StorageDomainBackend = dom  # mypy checks the signatures
    assert isinstance(backend, StorageDomainBackend)
    assert dom.read_metadata().domain_type == "loop"
    img = new_id()
    chunk = dom.create_volume(thin(dom, img, new_id()))
    assert (chunk.apparentsize, chunk.truesize, chunk.capacity) == (64 * MiB, 64 * MiB, GiB)
    sized = dom.create_volume(thin(dom, img, new_id(), initial=10 * MiB + 1))
    assert sized.apparentsize == 11 * MiB
    raw = dom.create_volume(VolumeCreateRequest(dom.sd_uuid, img, new_id(), 5 * MiB + 100,
                                                VolumeFormat.RAW, Allocation.PREALLOCATED))
    assert raw.apparentsize == 5 * MiB + 512
    assert raw.truesize >= raw.apparentsize
    full = dom.create_volume(VolumeCreateRequest(dom.sd_uuid, img, new_id(), 64 * MiB,
                                                 VolumeFormat.COW, Allocation.PREALLOCATED))
    assert full.apparentsize > 64 * MiB
    with pytest.raises(InvalidParams, match="preallocate"):
        dom.create_volume(VolumeCreateRequest(dom.sd_uuid, img, new_id(), MiB,
                                              VolumeFormat.RAW, Allocation.SPARSE))
    with pytest.raises(InvalidParams, match="initialSize"):
        dom.create_volume(VolumeCreateRequest(dom.sd_uuid, img, new_id(), MiB,
                                              VolumeFormat.RAW, Allocation.PREALLOCATED,
                                              initial_size=MiB))


@pytest.mark.timeout(60)
def test_prepare_chain_extend_teardown(dom: LoopDomain, tmp: Path) -> None:
    img, base, top = new_id(), new_id(), new_id()
    dom.create_volume(thin(dom, img, base, initial=16 * MiB))
    dom.create_volume(thin(dom, img, top, initial=16 * MiB, parent=base))
    prepared = dom.prepare(img, top)
    try:
        assert prepared.is_block
        assert prepared.device is not None
        assert prepared.device.startswith("/dev/loop")
        assert prepared.path == str(tmp / "run" / dom.sd_uuid / img / top)
        assert Path(prepared.path).resolve() == Path(prepared.device)
        assert [layer.vol_uuid for layer in prepared.chain] == [top, base]
        assert prepared.to_wire()["volType"] == "block"
        # qemu resolves the relative backing name through the links to the parent's device
        chain = qemuimg.chain(prepared.path)
        assert Path(chain[1].filename).resolve() == Path(prepared.chain[1].path).resolve()
        assert dom.prepare(img, top).device == prepared.device  # idempotent
        # a guest write through the device, then grow the volume under it
        sh("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 8M", prepared.path, timeout=60)
        assert device_size(prepared.device) == 16 * MiB
        info = dom.extend_volume(img, top, 40 * MiB)
        assert info.apparentsize == 40 * MiB
        assert device_size(prepared.device) == 40 * MiB
        assert dom.extend_volume(img, top, 20 * MiB).apparentsize == 40 * MiB  # never shrinks
        capped = dom.extend_volume(img, top, 100 * GiB)
        assert GiB < capped.apparentsize < GiB + 10 * MiB
        assert qemuimg.check(prepared.path).ok
        with pytest.raises(VolumeInUse, match="tear it down") as in_use:
            dom.delete_volume(img, top)
        assert in_use.value.code == 218 and prepared.device in in_use.value.message
        assert dom.in_use(img, top).startswith(f"attached to {prepared.device}")
    finally:
        dom.teardown(img, top)
    assert loopdev.find(dom.layout.volume(img, top)) == ()
    assert loopdev.find(dom.layout.volume(img, base)) == ()
    assert not (tmp / "run" / dom.sd_uuid / img).exists()
    dom.teardown(img, top)  # idempotent
    dom.delete_image(img)


@pytest.mark.timeout(30)
def test_raw_block_volume_is_not_extended(dom: LoopDomain) -> None:
    img, vol = new_id(), new_id()
    dom.create_volume(VolumeCreateRequest(dom.sd_uuid, img, vol, 4 * MiB, VolumeFormat.RAW,
                                          Allocation.PREALLOCATED))
    with pytest.raises(StorageError, match="fixed allocation"):
        dom.extend_volume(img, vol, 8 * MiB)


@pytest.mark.timeout(60)
def test_no_space_on_creation_and_extension(tmp: Path) -> None:
    with ext4(tmp, size=48 * MiB) as mnt:
        for precheck in (True, False):
            dom = LoopDomain.create(mnt, new_id(), name="small", run_dir=tmp / "run",
                                    chunk_size=16 * MiB, space_precheck=precheck)
            img = new_id()
            with pytest.raises(NoSpace):
                dom.create_volume(thin(dom, img, new_id(), initial=200 * MiB))
            assert not dom.layout.image(img).exists()
            vol = new_id()
            dom.create_volume(thin(dom, img, vol))
            with pytest.raises(NoSpace):
                dom.extend_volume(img, vol, 500 * MiB)
            assert dom.volume_info(img, vol).apparentsize == 16 * MiB
            dom.delete_image(img)
