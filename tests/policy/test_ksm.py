"""KSM's sysfs layer and the KSM actor in-process.

The knobs are written into a directory laid out as /sys/kernel/mm/ksm (real files; served
through faultfs, a write that hangs plays one the kernel takes long to finish, as ``run =
2`` does on a busy host). The
real /sys/kernel/mm/ksm is only read here; tests/policy/test_api_ksm.py writes it (and
restores it).
"""

from __future__ import annotations

from pathlib import Path

import pykka
import pytest

from actors.base import ActorContext, Runtime
from actors.policy import ksm
from actors.policy.ksm import KsmSettings, KsmSysfs
from actors.policy.ksmactor import ApplyKsm, KsmActor
from actors.policy.state import KsmBoard
from messaging.errors import HostSettingError
from tests.faultfs.mounting import FaultFSMount
from tests.harness import wait_for

pytestmark = pytest.mark.timeout(30)


def fake_ksm(root: Path, **values: int) -> Path:
    defaults = {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20, "merge_across_nodes": 1,
                "pages_shared": 0, "pages_sharing": 0, "full_scans": 0}
    root.mkdir()
    for name, value in {**defaults, **values}.items():
        (root / name).write_text(f"{value}\n")
    return root


def test_the_real_sysfs_reads_and_ksmd_is_found() -> None:
    sysfs = KsmSysfs()
    if not sysfs.available:
        pytest.skip("this kernel has no KSM (/sys/kernel/mm/ksm)")
    state = sysfs.read()
    assert state.run in (0, 1, 2) and state.pages_to_scan is not None
    assert state.pages_sharing is not None and ksm.saved_pages(state) >= 0
    pid = ksm.find_ksmd()
    assert pid is not None
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "ksmd"
    ticks = ksm.cpu_ticks(pid)
    assert ticks is not None and ticks >= 0
    assert ksm.cpu_ticks(2**22 + 7) is None  # no such process


def test_writes_and_reads(tmp_path: Path) -> None:
    sysfs = KsmSysfs(fake_ksm(tmp_path / "ksm"))
    state = sysfs.write(KsmSettings(run=1, pages_to_scan=400, sleep_millisecs=10))
    assert (state.run, state.pages_to_scan, state.sleep_millisecs) == (1, 400, 10)
    assert (tmp_path / "ksm" / "run").read_text() == "1\n"
    # merge_across_nodes while pages are shared: unmerged first, run as it was afterwards
    (tmp_path / "ksm" / "pages_shared").write_text("12\n")
    state = sysfs.write(KsmSettings(merge_across_nodes=0))
    assert (state.merge_across_nodes, state.run) == (0, 1)
    assert sysfs.write(KsmSettings(merge_across_nodes=0, run=0)).run == 0
    (tmp_path / "ksm" / "full_scans").unlink()
    assert sysfs.read().full_scans is None


def test_write_errors_name_the_knob(tmp_path: Path) -> None:
    missing = KsmSysfs(tmp_path / "nothing")
    with pytest.raises(HostSettingError) as e:
        missing.write(KsmSettings(run=1))
    assert e.value.code == 106 and "does not exist" in e.value.message
    root = fake_ksm(tmp_path / "ksm")
    (root / "sleep_millisecs").unlink()
    (root / "sleep_millisecs").mkdir()  # the kernel refuses: here, a directory
    with pytest.raises(HostSettingError) as e:
        KsmSysfs(root).write(KsmSettings(sleep_millisecs=5))
    assert "sleep_millisecs=5" in e.value.message


# --- the actor -------------------------------------------------------------------------------


# ``runtime``: tests/policy/conftest.py


def start(runtime: Runtime, root: Path, board: KsmBoard,
          write_timeout: float = 5.0) -> pykka.ActorRef[KsmActor]:
    ref: pykka.ActorRef[KsmActor] = KsmActor.start(
        ActorContext(path="/policy/ksm", runtime=runtime), board=board, interval=0.1,
        sysfs=KsmSysfs(root), write_timeout=write_timeout)
    return ref


def test_the_actor_samples_and_writes(runtime: Runtime, tmp_path: Path) -> None:
    root = fake_ksm(tmp_path / "ksm", pages_sharing=256, pages_shared=16)
    board = KsmBoard()
    ref = start(runtime, root, board)
    stats = wait_for(board.host_stats, 5)
    assert stats["ksmState"] is False and stats["ksmPages"] == 100
    assert stats["memShared"] == 256 * ksm.PAGE_SIZE // (1 << 20)
    assert stats["ksmSharing"] == 256 and stats["ksmShared"] == 16
    written = ref.proxy().tune(KsmSettings(run=1, pages_to_scan=300)).get(timeout=5)
    assert written.result(timeout=5).run == 1
    wait_for(lambda: board.host_stats()["ksmState"] is True, 5)
    # The actor records a write when it is told the write's outcome, by a callback that may
    # run after result() above returned: wait for that record before the next write, or
    # the two records may come in either order.
    wait_for(lambda: ref.proxy().describe().get(timeout=5)["lastWrites"], 5,
             what="the first write's record")
    outcomes: list[BaseException | None] = []
    ref.tell(ApplyKsm(KsmSettings(run=0), "test", outcomes.append))
    wait_for(lambda: outcomes, 5)
    assert outcomes == [None] and (root / "run").read_text() == "0\n"
    detail = ref.proxy().describe().get(timeout=5)
    assert [w["settings"] for w in detail["lastWrites"]] == [{"run": 1, "pages_to_scan": 300},
                                                             {"run": 0}]


def test_a_write_that_hangs_is_abandoned_and_the_next_refused(
    runtime: Runtime, faultfs: FaultFSMount
) -> None:
    mountpoint, control, source = faultfs
    source.rmdir()
    fake_ksm(source)
    control.hang("pages_to_scan", "write")  # a write the kernel takes its time over
    board = KsmBoard()
    ref = start(runtime, mountpoint, board, write_timeout=1.0)
    hanging = ref.proxy().tune(KsmSettings(pages_to_scan=500)).get(timeout=5)
    control.wait_blocked(1)
    with pytest.raises(HostSettingError) as busy:
        ref.proxy().tune(KsmSettings(run=1)).get(timeout=5)
    assert "is still running" in busy.value.message
    assert "pages_to_scan=500" in busy.value.message
    outcomes: list[BaseException | None] = []
    ref.tell(ApplyKsm(KsmSettings(run=1), "policy", outcomes.append))
    wait_for(lambda: outcomes, 5)
    assert isinstance(outcomes[0], HostSettingError)
    with pytest.raises(HostSettingError) as late:
        hanging.result(timeout=5)
    assert "did not return within 1 s" in late.value.message
    assert board.host_stats()["ksmPages"] == 100  # the sampler was never held up
    control.clear()  # the abandoned write goes through; the next one is taken again
    wait_for(lambda: not ref.proxy().describe().get(timeout=5)["calls"]["inFlight"], 10)
    assert ref.proxy().tune(KsmSettings(run=1)).get(timeout=5).result(timeout=5).run == 1
