"""The typed task records the verb handlers hand to a pool (no actor, no storage)."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest

from actors.storage import taskwork
from actors.storage.handle import ImageHandle, VolumeHandle
from actors.storage.sd.records import Allocation, VolumeCreateRequest, VolumeFormat
from actors.storage.taskrequest import (
    AttachDomain,
    CreateVolume,
    DeleteImage,
    DeleteVolume,
    DetachDomain,
    TaskRequest,
)
from messaging.errors import InvalidParams

pytestmark = pytest.mark.timeout(30)

# Fixed ids: the parametrized ids must be the same in every pytest-xdist worker.
SP = "1b0d8b6c-52a4-4a43-9f0c-6a1c2b9b5e01"
SD = "2c1e9c7d-63b5-4b54-8a1d-7b2d3cac6f02"
IMG = "3d2fad8e-74c6-4c65-9b2e-8c3e4dbd7a03"
VOL = "4e30be9f-85d7-4d76-8c3f-9d4f5ece8b04"


def requests() -> list[TaskRequest]:
    create = VolumeCreateRequest(
        sd_uuid=SD, img_uuid=IMG, vol_uuid=VOL, capacity=1 << 30, format=VolumeFormat.COW,
        allocation=Allocation.SPARSE, initial_size=None, parent_img=None, parent_vol=None,
        description="d")
    return [AttachDomain(SP, SD), DetachDomain(SP, SD), CreateVolume(SP, create),
            DeleteVolume(VolumeHandle(SP, SD, IMG, VOL)), DeleteImage(ImageHandle(SP, SD, IMG))]


@pytest.mark.parametrize("request_", requests(), ids=lambda r: r.verb)
def test_each_record_is_recorded_as_its_builder_reads_it(request_: TaskRequest) -> None:
    params: dict[str, Any] = {**request_.to_params(), "taskID": str(uuid.uuid4())}
    assert params["spUUID"] == SP and params["sdUUID"] == SD
    # The builder the task manager runs for the verb (here or in the SPM's writer) reads
    # the same ids back; building touches no storage, so no environment is needed.
    work = taskwork.builders(cast(taskwork.TaskEnv, object()))[request_.verb](params)
    if isinstance(work, taskwork.CreateVolume):
        assert isinstance(request_, CreateVolume) and work.request == request_.request
    else:
        assert vars(work)["sd_uuid"] == SD
    if isinstance(request_, (DeleteVolume, DeleteImage)):
        assert vars(work)["img_uuid"] == IMG
    if isinstance(request_, DeleteVolume):
        assert vars(work)["vol_uuid"] == VOL


def test_every_task_verb_has_a_record() -> None:
    assert {type(r).verb for r in requests()} == set(taskwork_verbs())


def taskwork_verbs() -> list[str]:
    from actors.storage.spm.remotework import SPM_VERBS
    return list(SPM_VERBS)


@pytest.mark.parametrize("bad", ["", "../x", "{" + SP + "}", SP.replace("-", ""), "x" * 200])
def test_a_bad_pool_or_domain_id_is_refused_when_the_record_is_made(bad: str) -> None:
    with pytest.raises(InvalidParams, match="storagepoolID"):
        AttachDomain(bad, SD)
    with pytest.raises(InvalidParams, match="storagedomainID"):
        DetachDomain(SP, bad)


def test_ids_are_kept_in_canonical_form() -> None:
    assert AttachDomain(SP.upper(), SD.upper()).to_params() == {"spUUID": SP, "sdUUID": SD}
