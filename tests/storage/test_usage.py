"""Who uses which volume: records in the run dir, the per-image lock, and the world's view
(a real process holding a volume open, a real loop device)."""

from __future__ import annotations

import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from actors.storage.sd.filedomain import FileDomain
from actors.storage.sd.records import Allocation, VolumeCreateRequest, VolumeFormat
from actors.storage.usage import VolumeUsage, check_unused
from messaging.errors import ImageInUse, InvalidParams, StorageBusy, VolumeInUse
from tests.harness import wait_for

MiB = 1 << 20


def new_id() -> str:
    return str(uuid.uuid4())


def one_volume(tmp: Path) -> tuple[FileDomain, str, str]:
    dom = FileDomain.create(tmp, new_id(), name="d")
    img, vol = new_id(), new_id()
    dom.create_volume(VolumeCreateRequest(sd_uuid=dom.sd_uuid, img_uuid=img, vol_uuid=vol,
                                          capacity=MiB, format=VolumeFormat.RAW,
                                          allocation=Allocation.SPARSE))
    return dom, img, vol


@pytest.mark.timeout(30)
def test_records_name_their_holders_and_survive_a_new_instance(tmp: Path) -> None:
    usage = VolumeUsage(tmp / "prepared", lock_timeout=1)
    sd, img, vol, other = new_id(), new_id(), new_id(), new_id()
    vm = f"vm-{new_id()}"
    assert usage.add(sd, img, vol, "api") is True
    assert usage.add(sd, img, vol, "api") is False  # idempotent per holder
    assert usage.add(sd, img, vol, vm) is True
    assert usage.add(sd, img, other, vm) is True
    again = VolumeUsage(tmp / "prepared", lock_timeout=1)  # a restarted vdsmd
    assert again.holders(sd, img, vol) == ["api", vm]
    assert again.image_holders(sd, img) == {vol: ["api", vm], other: [vm]}
    (tmp / "prepared" / sd / img / "junk").mkdir()  # not a volume: ignored
    assert again.image_holders(sd, img) == {vol: ["api", vm], other: [vm]}
    assert again.remove(sd, img, vol, "api") is True
    assert again.remove(sd, img, vol, "api") is False
    assert again.holders(sd, img, vol) == [vm]
    for bad in ("../x", "vm-x", "", "api/.."):
        with pytest.raises(InvalidParams):
            usage.add(sd, img, vol, bad)
    with pytest.raises(InvalidParams):
        usage.holders(sd, "../..", vol)


@pytest.mark.timeout(30)
def test_the_image_lock_excludes_and_gives_up_after_its_timeout(tmp: Path) -> None:
    usage = VolumeUsage(tmp / "prepared", lock_timeout=0.2)
    sd, img = new_id(), new_id()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with usage.image_lock(sd, img, "delete"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        assert [(d["imgUUID"], d["by"]) for d in usage.describe()] == [(img, "delete")]
        with pytest.raises(StorageBusy) as busy, usage.image_lock(sd, img, "prepare"):
            pass
        assert busy.value.code == 224 and "delete" in busy.value.message
        with usage.image_lock(sd, new_id(), "prepare"):  # other images are not held up
            pass
    finally:
        release.set()
        holder.join(10)
    with usage.image_lock(sd, img, "prepare"):
        pass
    assert usage.describe() == []


@pytest.mark.timeout(30)
def test_a_volume_a_process_holds_open_is_in_use(tmp: Path) -> None:
    dom, img, vol = one_volume(tmp)
    usage = VolumeUsage(tmp / "prepared", lock_timeout=1)
    check_unused(usage, dom, img, vol)
    path = dom.layout.volume(img, vol)
    with path.open("rb") as f:  # a real process (not this one) holds it open, as qemu would
        holder = subprocess.Popen(["sleep", "30"], stdin=f)
    try:
        wait_for(lambda: dom.in_use(img, vol), 5, what="the holder seen")
        assert f"sleep (pid {holder.pid})" in dom.in_use(img, vol)
        with pytest.raises(VolumeInUse):
            check_unused(usage, dom, img, vol)
        with pytest.raises(ImageInUse, match="sleep"):
            check_unused(usage, dom, img, None)
        with pytest.raises(VolumeInUse):
            dom.delete_volume(img, vol)
        assert path.is_file()
    finally:
        holder.kill()
        holder.wait(10)
    assert dom.in_use(img, vol) == ""
    usage.add(dom.sd_uuid, img, vol, "api")
    with pytest.raises(VolumeInUse, match="prepared for api"):
        check_unused(usage, dom, img, vol)
    usage.remove(dom.sd_uuid, img, vol, "api")
    dom.delete_volume(img, vol)
