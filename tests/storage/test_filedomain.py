from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from actors.storage import qemuimg
from actors.storage.command import Aborter
from actors.storage.mount import Connection, Connector
from actors.storage.sd.backend import StorageDomainBackend
from actors.storage.sd.discover import find_file_domain, open_file_domain
from actors.storage.sd.filedomain import FileDomain
from actors.storage.sd.loopdomain import LoopDomain
from actors.storage.sd.records import (
    BLANK_UUID,
    Allocation,
    Legality,
    VolumeCreateRequest,
    VolumeFormat,
    VolumeRole,
)
from actors.storage.steps import Progress, revert_steps, run_steps
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
    TaskAborted,
    VolumeExists,
    VolumeHasChildren,
)
from tests.storage.helpers import ext4, loop_device, sh, sparse_file

MiB = 1 << 20
GiB = 1 << 30


def new_id() -> str:
    return str(uuid.uuid4())


def request(dom: FileDomain, img: str, vol: str, *, fmt: VolumeFormat = VolumeFormat.COW,
            alloc: Allocation = Allocation.SPARSE, size: int = GiB,
            parent: tuple[str, str] | None = None) -> VolumeCreateRequest:
    return VolumeCreateRequest(dom.sd_uuid, img, vol, size, fmt, alloc,
                               parent_img=parent[0] if parent else None,
                               parent_vol=parent[1] if parent else None, description="test")


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def dom(tmp: Path) -> FileDomain:
    return FileDomain.create(tmp, new_id(), name="data")


@pytest.mark.timeout(30)
def test_create_layout_and_metadata(tmp: Path) -> None:
    sd = new_id()
    dom = FileDomain.create(tmp, sd, name="data", domain_type="nfs")
    backend: StorageDomainBackend = dom  # mypy checks the signatures
    assert isinstance(backend, StorageDomainBackend)
    assert sorted(p.name for p in (tmp / sd / "dom_md").iterdir()) == [
        "ids", "inbox", "leases", "metadata", "outbox", "probe"]
    assert (tmp / sd / "dom_md" / "ids").stat().st_size == MiB
    assert (tmp / sd / "images").is_dir()
    assert not [p for p in tmp.iterdir() if p.name.startswith(".")]
    meta = dom.read_metadata()
    assert (meta.sd_uuid, meta.name, meta.domain_type, meta.version, meta.generation) == (
        sd, "data", "nfs", 5, 0)
    with pytest.raises(StorageDomainExists):
        FileDomain.create(tmp, sd, name="again")
    with pytest.raises(NoSuchStorageDomain):
        FileDomain(tmp, new_id())
    with pytest.raises(InvalidParams):
        FileDomain(tmp, "../" + sd)
    with pytest.raises(InvalidParams, match="domainType"):
        FileDomain.create(tmp, new_id(), name="x", domain_type="loop")


@pytest.mark.timeout(30)
def test_update_metadata_with_generation(dom: FileDomain) -> None:
    pool = new_id()
    meta = dom.update_metadata({"POOL_UUID": pool, "ROLE": "Master"}, expected_generation=0)
    assert meta.generation == 1
    assert dom.read_metadata() == meta
    with pytest.raises(MetadataConflict, match="generation 1, expected 0") as conflict:
        dom.update_metadata({"ROLE": "Regular"}, expected_generation=0)
    assert conflict.value.code == 220 and conflict.value.retryable
    with pytest.raises(StorageError, match="cannot be changed"):
        dom.update_metadata({"SDUUID": new_id()})
    text = dom.layout.metadata.read_bytes()
    dom.layout.metadata.write_bytes(text.replace(b"ROLE=Master", b"ROLE=Evil"))
    with pytest.raises(StorageDomainInvalid, match="checksum"):
        dom.read_metadata()


@pytest.mark.timeout(30)
def test_metadata_of_another_domain_is_refused(tmp: Path) -> None:
    dom, other = FileDomain.create(tmp, new_id(), name="a"), FileDomain.create(tmp, new_id(),
                                                                             name="b")
    dom.layout.metadata.write_bytes(other.layout.metadata.read_bytes())
    with pytest.raises(StorageDomainInvalid, match=f"metadata belongs to {other.sd_uuid}"):
        dom.read_metadata()
    with pytest.raises(StorageDomainInvalid, match="belongs to"):
        dom.update_metadata({"ROLE": "Master"})


@pytest.mark.timeout(60)
def test_volumes_chain_info_prepare_delete(dom: FileDomain) -> None:
    img, base, top = new_id(), new_id(), new_id()
    info = dom.create_volume(request(dom, img, base, fmt=VolumeFormat.RAW))
    assert (info.format, info.allocation, info.legality, info.role) == (
        VolumeFormat.RAW, Allocation.SPARSE, Legality.LEGAL, VolumeRole.LEAF)
    assert (info.capacity, info.apparentsize, info.parent_vol) == (GiB, GiB, BLANK_UUID)
    assert info.truesize < MiB
    snap = dom.create_volume(request(dom, img, top, size=2 * GiB, parent=(img, base)))
    assert (snap.parent_img, snap.parent_vol, snap.capacity) == (img, base, 2 * GiB)
    assert dom.volume_info(img, base).role is VolumeRole.INTERNAL
    wire = snap.to_wire()
    assert (wire["format"], wire["type"], wire["voltype"], wire["parent"]) == (
        "COW", "SPARSE", "LEAF", base)
    chain = qemuimg.chain(str(dom.layout.volume(img, top)))
    assert chain[0].backing_filename == base
    assert chain[1].format == "raw"
    prepared = dom.prepare(img, top)
    assert prepared.path == str(dom.layout.volume(img, top))
    assert not prepared.is_block
    assert [layer.vol_uuid for layer in prepared.chain] == [top, base]
    assert prepared.to_wire()["volType"] == "file"
    dom.teardown(img, top)
    assert dom.list_images() == (img,)
    assert dom.list_volumes(img) == tuple(sorted((base, top)))
    with pytest.raises(VolumeHasChildren, match=top) as children:
        dom.delete_volume(img, base)
    assert children.value.code == 217
    with pytest.raises(VolumeExists):
        dom.create_volume(request(dom, img, top))
    dom.delete_volume(img, top)
    assert dom.volume_info(img, base).role is VolumeRole.LEAF
    assert dom.extend_volume(img, base, 4 * GiB).apparentsize == GiB  # files grow by themselves
    dom.delete_image(img)
    assert dom.list_images() == ()


@pytest.mark.timeout(60)
def test_cross_image_parent_and_delete_image_order(dom: FileDomain) -> None:
    template, tvol = new_id(), new_id()
    dom.create_volume(request(dom, template, tvol))
    img, v1, v2 = new_id(), new_id(), new_id()
    dom.create_volume(request(dom, img, v1, parent=(template, tvol)))
    dom.create_volume(request(dom, img, v2, parent=(img, v1)))
    chain = qemuimg.chain(str(dom.layout.volume(img, v2)))
    assert [Path(c.filename).name for c in chain] == [v2, v1, tvol]
    assert chain[1].backing_filename == f"../{template}/{tvol}"
    with pytest.raises(VolumeHasChildren, match=f"{v1} in image {img}"):
        dom.delete_image(template)
    dom.delete_image(img)  # leaves first
    assert dom.list_images() == (template,)
    assert dom.volume_info(template, tvol).role is VolumeRole.LEAF


@pytest.mark.timeout(30)
def test_missing_things_are_named(dom: FileDomain) -> None:
    img, vol = new_id(), new_id()
    with pytest.raises(NoSuchImage) as info:
        dom.volume_info(img, vol)
    assert info.value.code == 203
    dom.create_image(img)
    with pytest.raises(NoSuchVolume) as vinfo:
        dom.volume_info(img, vol)
    assert vinfo.value.code == 204
    with pytest.raises(NoSuchVolume):
        dom.create_volume(request(dom, img, new_id(), parent=(img, vol)))
    assert dom.list_volumes(img) == ()
    with pytest.raises(InvalidParams):
        dom.volume_info(img, "x/../../etc")
    with pytest.raises(StorageError, match="sent to"):
        dom.create_volume(VolumeCreateRequest(new_id(), img, vol, GiB, VolumeFormat.COW,
                                              Allocation.SPARSE))


@pytest.mark.timeout(30)
def test_illegal_volume_is_not_prepared(dom: FileDomain) -> None:
    img, vol = new_id(), new_id()
    steps = dom.volume_create_steps(request(dom, img, vol))
    run_steps(steps[:-1])  # everything but "metadata (LEGAL)"
    assert dom.volume_info(img, vol).legality is Legality.ILLEGAL
    with pytest.raises(StorageError, match="ILLEGAL"):
        dom.prepare(img, vol)
    with pytest.raises(StorageError, match="ILLEGAL"):
        dom.create_volume(request(dom, img, new_id(), parent=(img, vol)))


@pytest.mark.timeout(30)
def test_a_child_smaller_than_its_parent_is_refused_and_the_parent_stays_a_leaf(
        dom: FileDomain) -> None:
    img, base, top = new_id(), new_id(), new_id()
    dom.create_volume(request(dom, img, base, fmt=VolumeFormat.RAW, size=2 * GiB))
    with pytest.raises(InvalidParams, match="smaller than the parent's"):
        dom.create_volume(request(dom, img, top, size=GiB, parent=(img, base)))
    assert dom.volume_info(img, base).role is VolumeRole.LEAF
    assert dom.list_volumes(img) == (base,)


@pytest.mark.timeout(60)
def test_no_space_leaves_nothing(tmp: Path) -> None:
    with ext4(tmp, size=48 * MiB) as mnt:
        for precheck in (True, False):
            dom = FileDomain.create(mnt, new_id(), name="small", space_precheck=precheck)
            img, vol = new_id(), new_id()
            before = files_under(dom.layout.root)
            with pytest.raises(NoSpace) as info:
                dom.create_volume(request(dom, img, vol, fmt=VolumeFormat.RAW, size=256 * MiB,
                                          alloc=Allocation.PREALLOCATED))
            assert info.value.code == 211
            assert files_under(dom.layout.root) == before


@pytest.mark.timeout(60)
def test_abort_of_a_full_preallocation_is_reverted(tmp: Path) -> None:
    dom = FileDomain.create(tmp, new_id(), name="d", preallocation="full")
    img, vol = new_id(), new_id()
    aborter = Aborter("task-1")
    timer = threading.Timer(0.3, aborter.abort)
    timer.start()
    try:
        with pytest.raises(TaskAborted):
            dom.create_volume(request(dom, img, vol, fmt=VolumeFormat.RAW, size=4 * GiB,
                                      alloc=Allocation.PREALLOCATED), abort=aborter)
    finally:
        timer.cancel()
    assert files_under(dom.layout.images) == []


@pytest.mark.timeout(60)
def test_revert_after_a_restart_from_the_journal(tmp: Path) -> None:
    dom = FileDomain.create(tmp, new_id(), name="d")
    img, base, top = new_id(), new_id(), new_id()
    dom.create_volume(request(dom, img, base))
    req = request(dom, img, top, parent=(img, base))
    journal: list[Progress] = []
    steps = dom.volume_create_steps(req)
    run_steps(steps[:5], journal=journal.append)  # "crash" before the last step
    saved = json.dumps({"request": req.to_json(), "progress": journal[-1].to_json()})
    # a new process: rebuild the steps from the persisted JSON and revert them
    state = json.loads(saved)
    fresh = FileDomain(tmp, dom.sd_uuid)
    rebuilt = fresh.volume_create_steps(VolumeCreateRequest.from_json(state["request"]))
    assert revert_steps(rebuilt, Progress.from_json(state["progress"]).started) == []
    assert fresh.list_volumes(img) == (base,)
    assert fresh.volume_info(img, base).role is VolumeRole.LEAF
    assert sorted(p.name for p in dom.layout.image(img).iterdir()) == [base, base + ".meta"]


@pytest.mark.timeout(60)
def test_domains_on_connections_are_found_and_opened(tmp: Path) -> None:
    connector = Connector(tmp / "mnt")
    local = tmp / "local"
    local.mkdir()
    with loop_device(sparse_file(tmp / "fs.img", 64 * MiB)) as device:
        sh("mkfs.ext4", "-q", device, timeout=60)
        posix = Connection("posixfs", device, vfs_type="ext4")
        try:
            posix_path = connector.connect(posix)
            local_path = connector.connect(Connection("localfs", str(local)))
            file_sd, loop_sd = new_id(), new_id()
            FileDomain.create(posix_path, file_sd, name="posix", domain_type="posixfs")
            LoopDomain.create(local_path, loop_sd, name="loop", run_dir=tmp / "run")
            assert find_file_domain(tmp / "mnt", file_sd) == posix_path
            assert find_file_domain(tmp / "mnt", loop_sd) == local_path
            with pytest.raises(NoSuchStorageDomain):
                find_file_domain(tmp / "mnt", new_id())
            opened = open_file_domain(posix_path, file_sd, run_dir=tmp / "run")
            assert type(opened) is FileDomain
            assert isinstance(open_file_domain(local_path, loop_sd, run_dir=tmp / "run"),
                              LoopDomain)
            img, vol = new_id(), new_id()
            opened.create_volume(request(opened, img, vol, size=8 * MiB, fmt=VolumeFormat.RAW,
                                         alloc=Allocation.PREALLOCATED))
            assert opened.volume_info(img, vol).truesize >= 8 * MiB
            assert opened.stats().total < 64 * MiB
        finally:
            connector.disconnect(posix)
