"""The LVM domain on a real VG, as far as a kernel without device-mapper allows.

Raw volumes (no data to write), metadata, tags, extension and removal run for real; a cow
volume needs its qcow2 header written through an active LV, so here its creation fails with
the clear device-mapper error and is rolled back. The extension of a cow volume is tested on
one created by the same steps minus the header step (the steps are data: a runner may skip
one, which is also how a test gets past what this kernel cannot do).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.storage.sd import lvmdomain
from actors.storage.sd.backend import StorageDomainBackend
from actors.storage.sd.lvmdomain import LvmDomain
from actors.storage.sd.records import (
    Allocation,
    Legality,
    VolumeCreateRequest,
    VolumeFormat,
    VolumeRole,
)
from actors.storage.steps import run_steps
from messaging.errors import (
    InvalidParams,
    MetadataConflict,
    NoSpace,
    NoSuchImage,
    NoSuchStorageDomain,
    NoSuchVolume,
    StorageDomainExists,
    StorageDomainInvalid,
    StorageError,
    VolumeHasChildren,
)
from tests.storage.test_lvm import NO_DM, volume_group

MiB = 1 << 20
GiB = 1 << 30


def new_id() -> str:
    return str(uuid.uuid4())


@contextlib.contextmanager
def lvm_domain(tmp: Path) -> Iterator[LvmDomain]:
    with volume_group(tmp, size=8 * GiB) as (lvm, vg):
        dom = LvmDomain.create(vg, new_id(), lvm=lvm, name="block", run_dir=tmp / "run",
                               chunk_size=64 * MiB)
        try:
            yield dom
        finally:
            dom.remove()


def raw(dom: LvmDomain, img: str, vol: str, size: int = 10 * MiB) -> VolumeCreateRequest:
    return VolumeCreateRequest(dom.sd_uuid, img, vol, size, VolumeFormat.RAW,
                               Allocation.PREALLOCATED, description="raw é")


def cow(dom: LvmDomain, img: str, vol: str, *, initial: int | None = None,
        parent: tuple[str, str] | None = None) -> VolumeCreateRequest:
    return VolumeCreateRequest(dom.sd_uuid, img, vol, GiB, VolumeFormat.COW, Allocation.SPARSE,
                               initial_size=initial, parent_img=parent[0] if parent else None,
                               parent_vol=parent[1] if parent else None)


def without_header(dom: LvmDomain, req: VolumeCreateRequest) -> None:
    run_steps([s for s in dom.volume_create_steps(req) if s.name != "qcow2 header"])


@pytest.mark.timeout(120)
def test_domain_metadata_in_vg_tags(tmp: Path) -> None:
    with lvm_domain(tmp) as dom:
        backend: StorageDomainBackend = dom  # mypy checks the signatures
        assert isinstance(backend, StorageDomainBackend)
        lvs = {lv.name for lv in dom.lvm.lvs(dom.vg_name)}
        assert lvs == set(lvmdomain.SPECIAL_LVS)
        meta = dom.read_metadata()
        assert (meta.sd_uuid, meta.domain_type, meta.name, meta.generation) == (
            dom.sd_uuid, "iscsi", "block", 0)
        assert lvmdomain.find_vg(dom.lvm, dom.sd_uuid) == dom.vg_name
        assert lvmdomain.find_vg(dom.lvm, new_id()) is None
        updated = dom.update_metadata({"POOL_UUID": new_id(), "NAME": "a b=c"},
                                      expected_generation=0)
        assert dom.read_metadata() == updated
        assert updated.generation == 1
        with pytest.raises(MetadataConflict, match="expected 0"):
            dom.update_metadata({"NAME": "x"}, expected_generation=0)
        stats = dom.stats()
        assert 0 < stats.free < stats.total
        assert dom.probe_target().read_path == f"/dev/{dom.vg_name}/metadata"
        assert dom.probe_target().write_path is None
        with pytest.raises(StorageDomainExists):
            LvmDomain.create(dom.vg_name, dom.sd_uuid, lvm=dom.lvm, name="x", run_dir=tmp)
        with pytest.raises(StorageError, match="already holds"):
            LvmDomain.create(dom.vg_name, new_id(), lvm=dom.lvm, name="x", run_dir=tmp)
        with pytest.raises(NoSuchStorageDomain):
            LvmDomain(dom.vg_name, new_id(), lvm=dom.lvm, run_dir=tmp)
        with pytest.raises(InvalidParams, match="typeArgs"):
            LvmDomain(dom.vg_name + "/..", dom.sd_uuid, lvm=dom.lvm, run_dir=tmp)
        tags = [t for t in dom.lvm.vg(dom.vg_name).tags if t.startswith("MDT_NAME=")]
        dom.lvm.vg_tags(dom.vg_name, delete=tags, add=["MDT_NAME=forged"])
        with pytest.raises(StorageDomainInvalid, match="checksum"):
            dom.read_metadata()


@pytest.mark.timeout(120)
def test_raw_volumes_and_images(tmp: Path) -> None:
    with lvm_domain(tmp) as dom:
        img, vol = new_id(), new_id()
        info = dom.create_volume(raw(dom, img, vol))
        assert (info.capacity, info.apparentsize, info.truesize) == (10 * MiB, 12 * MiB, 12 * MiB)
        assert (info.legality, info.role, info.description) == (
            Legality.LEGAL, VolumeRole.LEAF, "raw é")
        assert dom.list_images() == (img,)
        assert dom.list_volumes(img) == (vol,)
        with pytest.raises(NoSuchVolume):
            dom.volume_info(img, new_id())
        with pytest.raises(NoSuchImage):
            dom.volume_info(new_id(), vol)
        with pytest.raises(StorageError, match="fixed allocation"):
            dom.extend_volume(img, vol, 100 * MiB)
        with pytest.raises(InvalidParams, match="preallocate"):
            dom.create_volume(VolumeCreateRequest(dom.sd_uuid, img, new_id(), MiB,
                                                  VolumeFormat.RAW, Allocation.SPARSE))
        free = dom.stats().free
        with pytest.raises(NoSpace):
            dom.create_volume(raw(dom, img, new_id(), size=100 * GiB))
        assert dom.stats().free == free
        dom.delete_image(img)
        assert dom.list_images() == ()


@pytest.mark.skipif(not NO_DM, reason="this kernel has device-mapper")
@pytest.mark.timeout(120)
def test_cow_creation_and_prepare_fail_clearly_and_roll_back(tmp: Path) -> None:
    with lvm_domain(tmp) as dom:
        img = new_id()
        with pytest.raises(StorageError, match="device-mapper is not available"):
            dom.create_volume(cow(dom, img, new_id()))
        assert dom.list_images() == ()  # the LV was removed
        vol = new_id()
        dom.create_volume(raw(dom, img, vol))
        with pytest.raises(StorageError, match="device-mapper is not available"):
            dom.prepare(img, vol)
        dom.teardown(img, vol)


@pytest.mark.timeout(120)
def test_thin_cow_sizes_chain_and_extension(tmp: Path) -> None:
    with lvm_domain(tmp) as dom:
        img, base, top = new_id(), new_id(), new_id()
        without_header(dom, cow(dom, img, base))
        without_header(dom, cow(dom, img, top, initial=10 * MiB, parent=(img, base)))
        assert dom.volume_info(img, base).apparentsize == 64 * MiB  # the chunk
        assert dom.volume_info(img, base).role is VolumeRole.INTERNAL
        info = dom.volume_info(img, top)
        assert (info.apparentsize, info.parent_vol, info.legality) == (
            12 * MiB, base, Legality.LEGAL)
        assert [v for _, v, _ in dom.chain(img, top)] == [top, base]
        assert dom.extend_volume(img, top, 30 * MiB).apparentsize == 32 * MiB
        assert dom.extend_volume(img, top, 8 * MiB).apparentsize == 32 * MiB
        capped = dom.extend_volume(img, top, 100 * GiB)
        assert GiB < capped.apparentsize < GiB + 16 * MiB
        with pytest.raises(VolumeHasChildren, match=top):
            dom.delete_volume(img, base)
        dom.delete_volume(img, top)
        assert dom.volume_info(img, base).role is VolumeRole.LEAF
        dom.delete_image(img)
