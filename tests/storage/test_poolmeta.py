"""Pool metadata in the master domain: create, read, attach, detach, activate; refusals."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from actors.storage import poolmeta
from actors.storage.locator import DomainLocator
from actors.storage.poolmeta import ACTIVE, ATTACHED
from messaging.errors import (
    MetadataConflict,
    NoSuchStorageDomain,
    NoSuchStoragePool,
    StorageDomainAttached,
    StorageDomainExists,
    StorageError,
    StoragePoolExists,
    WrongMasterVersion,
)


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def locator(tmp: Path) -> DomainLocator:
    (tmp / "mnt" / "conn").mkdir(parents=True)
    return DomainLocator(mnt_root=tmp / "mnt", links_dir=tmp / "links", lvm=False)


def domain(locator: DomainLocator, name: str = "d") -> str:
    sd = new_id()
    locator.create(sd, domain_type="localfs", type_args="conn", name=name,
                   domain_class="data", version=5)
    return sd


@pytest.mark.timeout(20)
def test_a_pool_lives_in_its_master_domain(locator: DomainLocator) -> None:
    master, other, third = domain(locator, "m"), domain(locator, "o"), domain(locator, "t")
    with pytest.raises(StorageDomainExists):
        locator.create(master, domain_type="localfs", type_args="conn", name="x",
                       domain_class="data", version=5)
    sp = new_id()
    pool = poolmeta.create_pool(locator, sp_uuid=sp, name="pool", master_sd=master,
                                master_version=1, domain_list=[master, other])
    assert pool.statuses == {master: ACTIVE, other: ATTACHED}
    assert poolmeta.read_pool(locator, sp, master, 1) == pool
    assert locator.open(other).read_metadata().pool_uuid == sp
    assert locator.open(master).read_metadata().role == "Master"
    with pytest.raises(WrongMasterVersion):
        poolmeta.read_pool(locator, sp, master, 2)
    with pytest.raises(NoSuchStoragePool):
        poolmeta.read_pool(locator, sp, other, 1)
    with pytest.raises(StoragePoolExists):
        poolmeta.create_pool(locator, sp_uuid=sp, name="again", master_sd=master,
                             master_version=1, domain_list=[])

    pool = poolmeta.attach(locator, pool, third)
    pool = poolmeta.set_status(locator, pool, third, ACTIVE)
    assert poolmeta.read_pool(locator, sp, master, 1).statuses == {
        master: ACTIVE, other: ATTACHED, third: ACTIVE}
    with pytest.raises(StorageDomainAttached):
        poolmeta.create_pool(locator, sp_uuid=new_id(), name="p2", master_sd=third,
                             master_version=1, domain_list=[])
    pool = poolmeta.detach(locator, pool, other)
    assert locator.open(other).read_metadata().pool_uuid == ""
    assert other not in poolmeta.read_pool(locator, sp, master, 1).statuses
    with pytest.raises(StorageError, match="master"):
        poolmeta.detach(locator, pool, master)


@pytest.mark.timeout(20)
def test_a_failed_creation_undoes_its_writes(locator: DomainLocator) -> None:
    master, other = domain(locator), domain(locator)
    with pytest.raises(NoSuchStorageDomain):
        poolmeta.create_pool(locator, sp_uuid=new_id(), name="p", master_sd=master,
                             master_version=1, domain_list=[other, new_id()])
    for sd in (master, other):
        meta = locator.open(sd).read_metadata()
        assert (meta.pool_uuid, meta.role) == ("", "Regular")


@pytest.mark.timeout(20)
def test_writes_refuse_a_master_changed_behind_their_back(locator: DomainLocator) -> None:
    master, other = domain(locator), domain(locator)
    sp = new_id()
    stale = poolmeta.create_pool(locator, sp_uuid=sp, name="p", master_sd=master,
                                 master_version=1, domain_list=[])
    poolmeta.attach(locator, stale, other)
    with pytest.raises(MetadataConflict, match="behind") as conflict:
        poolmeta.write_master(locator, stale, stale.with_domain(new_id(), ATTACHED))
    assert conflict.value.code == 220


@pytest.mark.timeout(60)
def test_a_pool_too_large_for_one_metadata_block_is_refused(locator: DomainLocator) -> None:
    master = domain(locator)
    sp = new_id()
    pool = poolmeta.create_pool(locator, sp_uuid=sp, name="p", master_sd=master,
                                master_version=1, domain_list=[])
    with pytest.raises(StorageError, match="full"):
        for _ in range(100):
            pool = poolmeta.attach(locator, pool, domain(locator))
    assert 50 < len(poolmeta.read_pool(locator, sp, master, 1).domains) < 100
