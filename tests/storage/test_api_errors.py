"""Bad input through the real API: ids that are not UUIDs, missing things, existing things."""

from __future__ import annotations

from typing import Any

import pytest

from tests.storage.rig import Rig, new_id

MiB = 1 << 20
NOT_UUIDS = ("../../etc/passwd", "x", "{12345678-1234-1234-1234-123456789abc}",
             "12345678123412341234123456789abc", "", "12345678-1234-1234-1234-123456789abc/..")


@pytest.mark.timeout(120)
def test_ids_that_are_not_uuids_are_refused_before_any_path_is_built(rig: Rig) -> None:
    rig.start()
    good = new_id()
    ids = {"storagepoolID": good, "storagedomainID": good, "imageID": good, "volumeID": good}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("StorageDomain.getInfo", "storagedomainID", {}),
        ("StorageDomain.getStats", "storagedomainID", {}),
        ("StorageDomain.create", "storagedomainID",
         {"domainType": "localfs", "typeArgs": "/tmp", "name": "x"}),
        ("StoragePool.connect", "storagepoolID",
         {"hostID": 1, "masterSdUUID": good, "masterVersion": 1}),
        ("StoragePool.create", "masterSdUUID",
         {"storagepoolID": good, "name": "p", "masterVersion": 1, "domainList": []}),
        ("Volume.create", "imageID",
         {**ids, "size": MiB, "volFormat": "cow", "preallocate": "sparse"}),
        ("Volume.create", "srcVolUUID",
         {**ids, "size": MiB, "volFormat": "cow", "preallocate": "sparse"}),
        ("Volume.getInfo", "volumeID", ids),
        ("Image.prepare", "volumeID", ids),
        ("Image.delete", "imageID", ids),
        ("Task.getStatus", "taskID", {}),
        ("Task.revert", "taskID", {}),
    ]
    for method, param, base in calls:
        for bad in NOT_UUIDS:
            params = {k: v for k, v in base.items() if k in _params_of(method)}
            params.update({k: v for k, v in ids.items() if k in _params_of(method)})
            params[param] = bad
            error = rig.error(method, **params)
            assert error.code == -32602, (method, param, bad, error)
            assert param in error.message, error.message
    assert not list((rig.workdir / "run").glob("storage/mnt/*"))


def _params_of(method: str) -> set[str]:
    from messaging.schema import SCHEMA

    return {f.name for f in SCHEMA.lookup(method).params}


@pytest.mark.timeout(120)
def test_missing_and_existing_things_get_the_storage_code_naming_them(rig: Rig) -> None:
    rig.start()
    data = rig.local_dir("data")
    sd = rig.domain("localfs", str(data), "data")
    sp = rig.pool(sd)
    missing = new_id()

    def err(method: str, **params: Any) -> tuple[int, str]:
        error = rig.error(method, **params)
        return error.code, error.message

    code, message = err("StorageDomain.getInfo", storagedomainID=missing)
    assert code == 201 and missing in message
    assert err("StorageDomain.getStats", storagedomainID=missing)[0] == 201
    code, message = err("StoragePool.getInfo", storagepoolID=missing)
    assert code == 202 and missing in message
    code, message = err("Volume.create", storagepoolID=missing, storagedomainID=sd,
                        imageID=new_id(), volumeID=new_id(), size=MiB, volFormat="cow",
                        preallocate="sparse")
    assert code == 202 and missing in message
    ids = {"storagepoolID": sp, "storagedomainID": sd}
    code, message = err("Volume.getInfo", imageID=missing, volumeID=new_id(), **ids)
    assert code == 203 and missing in message
    assert err("Image.delete", imageID=missing, **ids)[0] == 203
    assert err("Image.prepare", imageID=missing, volumeID=new_id(), **ids)[0] == 203

    img, vol, task = rig.create_volume(sp, sd, size=MiB)
    assert rig.task(task)["taskResult"] == "success"
    code, message = err("Volume.getInfo", imageID=img, volumeID=missing, **ids)
    assert code == 204 and missing in message
    assert err("Volume.delete", imageID=img, volumeID=missing, **ids)[0] == 204
    code, message = err("Volume.create", imageID=img, volumeID=vol, size=MiB, volFormat="cow",
                        preallocate="sparse", **ids)
    assert code == 206 and vol in message  # creating what exists: refused at once
    code, _message = err("Volume.create", imageID=img, volumeID=new_id(), size=MiB,
                         volFormat="cow", preallocate="sparse", srcVolUUID=missing, **ids)
    assert code == 204
    code, message = err("Task.getStatus", taskID=missing)
    assert code == 401 and missing in message
    assert err("Task.clear", taskID=missing)[0] == 401

    code, message = err("StorageDomain.create", storagedomainID=sd, domainType="localfs",
                        typeArgs=str(data), name="again")
    assert code == 205 and sd in message
    code, message = err("StoragePool.create", storagepoolID=sp, name="again",
                        masterSdUUID=sd, masterVersion=1, domainList=[sd])
    assert code == 207 and sp in message
    code, message = err("StorageDomain.create", storagedomainID=new_id(), domainType="localfs",
                        typeArgs=str(rig.tmp / "never-connected"), name="x")
    assert code == 210 and "not connected" in message

    # a second pool cannot take a domain of the first; a domain must be active for volumes
    other = rig.domain("localfs", str(rig.local_dir("other")), "other")
    code, message = err("StoragePool.create", storagepoolID=new_id(), name="p2",
                        masterSdUUID=other, masterVersion=1, domainList=[other, sd])
    assert code == 225 and sp in message
    code, _message = err("StoragePool.connect", storagepoolID=sp, hostID=2, masterSdUUID=sd,
                         masterVersion=1)
    assert code == 200  # connected already, as another host id
    task = rig.call("StorageDomain.attach", storagedomainID=other, storagepoolID=sp)
    assert rig.task(task)["taskResult"] == "success"
    code, message = err("StorageDomain.attach", storagedomainID=other, storagepoolID=sp)
    assert code == 225 and other in message
    code, message = err("Volume.create", storagepoolID=sp, storagedomainID=other,
                        imageID=new_id(), volumeID=new_id(), size=MiB, volFormat="cow",
                        preallocate="sparse")
    assert code == 227 and "Attached" in message
    code, _message = err("StorageDomain.detach", storagedomainID=sd, storagepoolID=sp)
    assert code == 200  # the master

    # a pool is connected through its master, at its version
    assert rig.call("StoragePool.disconnect", storagepoolID=sp, hostID=1) is True
    code, message = err("StoragePool.connect", storagepoolID=sp, hostID=1, masterSdUUID=sd,
                        masterVersion=7)
    assert code == 226 and "not 7" in message
    code, _message = err("StoragePool.connect", storagepoolID=sp, hostID=1,
                         masterSdUUID=other, masterVersion=1)
    assert code == 202
    assert rig.repo_stats() == {}
    assert err("StoragePool.disconnect", storagepoolID=sp, hostID=1)[0] == 202

    # the SPM verbs of a pool that is not connected: 202 naming it
    for method, params in (("StoragePool.spmStart", {"storagepoolID": sp}),
                           ("StoragePool.spmStop", {"storagepoolID": sp}),
                           ("StoragePool.getSpmStatus", {"storagepoolID": sp}),
                           ("StoragePool.extendVolume", {**ids, "imageID": img,
                                                         "volumeID": vol, "size": MiB})):
        code, message = err(method, **params)
        assert code == 202 and sp in message, (method, message)


GARBAGE = ("a\x00b", "a\nb", "a\rb", "a\x01b", "a\x1b[31mb", "a\x7fb", "a\u2028b", "\u200b",
           "a\u202eb")


@pytest.mark.timeout(120)
def test_garbage_in_text_params_is_refused_naming_the_param(rig: Rig) -> None:
    rig.start()
    data = rig.local_dir("data")
    sd = rig.domain("localfs", str(data), "data")

    def refused(method: str, param: str, **params: Any) -> None:
        error = rig.error(method, **params)
        assert error.code == -32602, (method, params, error)
        assert param in error.message, (method, error.message)

    for bad in GARBAGE:
        refused("StorageDomain.create", "name", storagedomainID=new_id(), domainType="localfs",
                typeArgs=str(data), name=bad)
        refused("StorageDomain.create", "typeArgs", storagedomainID=new_id(),
                domainType="localfs", typeArgs=f"{data}{bad}", name="n")
        refused("StoragePool.create", "name", storagepoolID=new_id(), name=bad,
                masterSdUUID=sd, masterVersion=1, domainList=[sd])
        refused("Volume.create", "desc", storagepoolID=new_id(), storagedomainID=sd,
                imageID=new_id(), volumeID=new_id(), size=MiB, volFormat="cow",
                preallocate="sparse", desc=bad)
        for key, value in (("id", bad), ("connection", f"{data}{bad}"),
                           ("mnt_options", f"ro{bad}")):
            conn = {"id": "c", "connection": str(data), key: value}
            refused("StoragePool.connectStorageServer", f"connectionParams[0].{key}",
                    storagepoolID=new_id(), domainType="localfs", connectionParams=[conn])
    refused("StoragePool.create", "name", storagepoolID=new_id(), name="a,b", masterSdUUID=sd,
            masterVersion=1, domainList=[sd])
    refused("StorageDomain.create", "name", storagedomainID=new_id(), domainType="localfs",
            typeArgs=str(data), name="x" * 65)
    refused("StorageDomain.create", "typeArgs", storagedomainID=new_id(),
            domainType="localfs", typeArgs="..", name="n")
    # paths with '.' or '..' components are not connected (each connection answers)
    for spec in (f"{data}/..", "/..", f"{data}/./x", "/tmp/../root"):
        result = rig.call("StoragePool.connectStorageServer", storagepoolID=new_id(),
                          domainType="localfs",
                          connectionParams=[{"id": "c", "connection": spec}])
        assert result[0]["status"] == -32602, result
        assert "'..' component" in result[0]["message"] or "'.'" in result[0]["message"]
    # a name is metadata, never a path: separators and dots are kept as they are
    for name in ("a/b", "..", "name with spaces = fine"):
        other = rig.domain("localfs", str(data), name)
        assert rig.call("StorageDomain.getInfo", storagedomainID=other)["name"] == name
    assert "internal error in" not in rig.d.log()  # no verb failed with -32603
