"""The writer's guard: a write starts only while the fence allows the writer's lver."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from actors.storage.sd import stamp
from actors.storage.sd.filedomain import FileDomain
from actors.storage.sd.records import Allocation, VolumeCreateRequest, VolumeFormat
from actors.storage.spm import fence as fences
from actors.storage.spm import journal
from actors.storage.spm.fence import FenceReader, FenceWriter
from actors.storage.spm.guard import FenceGuard
from actors.storage.spm.journal import Journal
from messaging.errors import NotSPM


def _guard(tmp_path: Path, lver: int = 4) -> tuple[FenceWriter, FenceGuard]:
    writer = FenceWriter(tmp_path / "fence", host_id=2)
    guard = FenceGuard(FenceReader(tmp_path / "fence"), sp_uuid="pool", lver=lver,
                       journal=Journal(tmp_path / "journal", 2))
    return writer, guard


def test_a_write_under_a_valid_lease_is_journaled(tmp_path: Path) -> None:
    writer, guard = _guard(tmp_path)
    writer.publish(fences.SPM, 4, time.monotonic_ns() + 10**10, 1)
    done = []
    with guard.write("metadata of x"):
        done.append(True)
    assert done == [True]
    writes = journal.writes(journal.load(tmp_path / "journal"))
    assert len(writes) == 1 and writes[0].lver == 4 and writes[0].end is not None
    assert journal.check(writes) == []


@pytest.mark.parametrize("state,lver,ahead", [
    (fences.SPM, 4, -1),       # the deadline passed
    (fences.SPM, 5, 10**10),   # another lease version: a newer acquisition
    (fences.FENCED, 4, 10**10),
    (fences.NONE, 0, 0),
])
def test_a_write_without_the_lease_is_refused(tmp_path: Path, state: int, lver: int,
                                              ahead: int) -> None:
    writer, guard = _guard(tmp_path)
    writer.publish(state, lver, time.monotonic_ns() + ahead, 1)
    with pytest.raises(NotSPM), guard.write("metadata of x"):
        raise AssertionError("the write ran")
    assert guard.refused == 1
    assert journal.load(tmp_path / "journal") == []  # nothing began


@pytest.mark.timeout(60)
def test_metadata_written_under_the_guard_carries_its_lver(tmp_path: Path) -> None:
    """The LVER is the fencing token written with every metadata change: a real file
    domain's volume and domain metadata, written inside and outside the guard."""
    domain_dir = tmp_path / "mnt"
    domain_dir.mkdir()
    dom = FileDomain.create(domain_dir, str(uuid.uuid4()), name="data")
    img, base, top = (str(uuid.uuid4()) for _ in range(3))
    writer, guard = _guard(tmp_path, lver=7)
    writer.publish(fences.SPM, 7, time.monotonic_ns() + 10**10, 1)

    def request(vol: str, parent: str | None) -> VolumeCreateRequest:
        return VolumeCreateRequest(dom.sd_uuid, img, vol, 1 << 20, VolumeFormat.COW,
                                   Allocation.SPARSE, parent_img=img if parent else None,
                                   parent_vol=parent, description="")

    def volume_lver(vol: str) -> int:
        return int(json.loads(dom.layout.volume_meta(img, vol).read_bytes())["lver"])

    dom.create_volume(request(base, None))  # not under the lease: nothing to stamp
    assert volume_lver(base) == 0 and dom.read_metadata().get(stamp.DOMAIN_KEY) == ""
    with guard.write("volume create"):
        dom.create_volume(request(top, base))  # the base becomes INTERNAL: rewritten too
        dom.update_metadata({"DESCRIPTION": "changed by the SPM"})
    assert volume_lver(top) == 7 and volume_lver(base) == 7
    assert dom.read_metadata().get(stamp.DOMAIN_KEY) == "7"
    assert stamp.current_lver() is None  # only inside the guarded write

    # A later SPM's writer (a newer lease version) stamps its own; a write outside any
    # guard leaves the last SPM's version in place.
    writer.publish(fences.SPM, 9, time.monotonic_ns() + 10**10, 1)
    newer = FenceGuard(FenceReader(tmp_path / "fence"), sp_uuid="pool", lver=9)
    with newer.write("volume delete"):
        dom.delete_volume(img, top)  # the base is a leaf again
    assert volume_lver(base) == 9
    dom.update_metadata({"DESCRIPTION": "changed outside the lease"})
    assert dom.read_metadata().get(stamp.DOMAIN_KEY) == "7"
    # A write refused by the guard stamps nothing and writes nothing.
    with pytest.raises(NotSPM), guard.write("stale writer"):
        dom.update_metadata({"DESCRIPTION": "never"})
    assert dom.read_metadata().get("DESCRIPTION") == "changed outside the lease"
