"""KSM driven by the policy in a real vdsmd, read back from the real /sys/kernel/mm/ksm: the
rule file turns KSM on when the host's free memory is under its threshold and off again
(the file is edited while vdsmd runs: a reload), a broken edit is refused and the rules in
force stay, ``Host.setMOMPolicyParameters`` takes control away and gives it back,
``Host.setKsmTune`` writes the knobs and refuses what is not a knob value, KSM merges pages
marked mergeable and ``Host.getStats`` counts them; the policy's inputs and decisions show in
``Actors.inspect`` and the console.

The host's real free memory is what it is (most of 24 GiB here): the test moves the
threshold, not the memory (100% of free memory: "memory is short", 0%: "it is not").
KSM's knobs are the host's: the fixture writes back what it found, whatever happens.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import mmap
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.policy.ksm import SYSFS
from tests.harness import Vdsmd, running_vdsmd, wait_for
from tests.vm import agent as a

# one host, one KSM: these tests share a worker (never two daemons driving it at once)
pytestmark = [pytest.mark.root, pytest.mark.timeout(270), pytest.mark.xdist_group("host-ksm")]
KNOBS = ("run", "pages_to_scan", "sleep_millisecs")
LOCK = Path("/run/lock" if Path("/run/lock").is_dir() else "/tmp") / "vdsm-tests-ksm.lock"
LOCK_WAIT = 90.0  # host-wide: see host_lock


def knob(name: str) -> int:
    return int((SYSFS / name).read_text())


@contextlib.contextmanager
def host_lock(path: Path = LOCK, timeout: float = LOCK_WAIT) -> Iterator[None]:
    """KSM is the host's: two checkouts' suites on one machine (worktrees) each ran these
    tests, and one's restore of the knobs landed in the other's checks. One at a time per
    host (bounded wait; the lock goes with the process if it dies)."""
    with path.open("a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"another test run drives KSM ({path} held for "
                                       f"{timeout:g} s)") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture
def host_ksm() -> Iterator[dict[str, int]]:
    """The host's KSM knobs as found; written back after the test."""
    if not (SYSFS / "run").exists():
        pytest.skip("this kernel has no KSM (/sys/kernel/mm/ksm)")
    with host_lock():
        yield from _saved_and_restored()


def _saved_and_restored() -> Iterator[dict[str, int]]:
    saved = {name: knob(name) for name in KNOBS}
    try:
        (SYSFS / "run").write_text(f"{saved['run']}\n")
    except OSError as e:
        pytest.skip(f"/sys/kernel/mm/ksm is not writable here: {e}")
    try:
        yield saved
    finally:
        # run last: the scanner restarts with the knobs it had
        for name in (*KNOBS[1:], "run"):
            (SYSFS / name).write_text(f"{saved[name]}\n")
        assert {name: knob(name) for name in KNOBS} == saved


def rules(path: Path, run_below: float, *, enabled: bool = True, extra: str = "") -> None:
    """Replace the rule file (a new inode: the reload never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"[ksm]\nenabled = {'true' if enabled else 'false'}\n"
                   f"run_below_free_percent = {run_below}\npages_boost = 100\n"
                   f"pages_min = 64\npages_max = 300\n{extra}")
    tmp.replace(path)


def engine(agent: Vdsmd) -> dict[str, Any]:
    return dict(agent.call("Actors.inspect", path="/policy/engine")["detail"])


def merged_here() -> int:
    """Pages of this process that KSM merged (Linux 6.1+: /proc/self/ksm_merging_pages;
    before that, the host's count, which other processes' pages also move)."""
    own = Path("/proc/self/ksm_merging_pages")
    return int(own.read_text()) if own.exists() else knob("pages_sharing")


def ksm_decisions(agent: Vdsmd) -> list[dict[str, Any]]:
    return [d for d in engine(agent)["lastDecisions"] if d["kind"] == "ksm"]


@pytest.fixture
def policy_agent(tmp_path: Path, host_ksm: dict[str, int]) -> Iterator[tuple[Vdsmd, Path]]:
    rule_file = tmp_path / "policy.toml"
    # memory is short while less than 100% of it is free: always
    rules(rule_file, 100.0)
    config = ("[host]\nstats_interval = 0.5\n"
              f"[policy]\ninterval = 0.5\nrules = \"{rule_file}\"\n")
    with running_vdsmd(tmp_path / "d", config=config) as agent:
        yield agent, rule_file


def test_ksm_runs_under_the_threshold_and_stops_above_it_read_back_from_sysfs(
    policy_agent: tuple[Vdsmd, Path], host_ksm: dict[str, int],
) -> None:
    agent, rule_file = policy_agent
    wait_for(lambda: knob("run") == 1, 60, what="KSM running")
    # each decision while memory is short scans more, up to pages_max
    wait_for(lambda: knob("pages_to_scan") == 300, 60, what="pages_to_scan at pages_max")
    stats = wait_for(lambda: (s := agent.call("Host.getStats"))["ksmState"] and
                     s["ksmPages"] == 300 and s, 30, what="Host.getStats' KSM fields")
    assert stats["memShared"] >= 0 and stats["ksmCpu"] >= 0
    detail = engine(agent)
    assert detail["ksmControl"] is True and detail["ruleFile"]["error"] == ""
    assert detail["ruleFile"]["rules"]["ksm"]["run_below_free_percent"] == 100.0
    host = detail["inputs"]["host"]
    assert host["memTotal"] > 0 and 0 < host["freePercent"] < 100
    applied = [d for d in ksm_decisions(agent) if d["outcome"] == "applied"]
    assert applied and applied[0]["value"]["run"] == 1
    assert "< 100%: run, scan more" in applied[0]["reason"]

    # the file changes while vdsmd runs: free memory is now plenty (above 0%)
    loaded = detail["ruleFile"]["loaded"]
    rules(rule_file, 0.0)
    wait_for(lambda: knob("run") == 0, 60, what="KSM stopped by the reloaded rules")
    detail = engine(agent)
    assert detail["ruleFile"]["loaded"] == loaded + 1
    assert detail["ruleFile"]["rules"]["ksm"]["run_below_free_percent"] == 0.0
    assert any(d["value"].get("run") == 0 and ">= 0%: stop" in d["reason"]
               for d in ksm_decisions(agent))
    # pages_to_scan decays by pages_decay (50) per decision, down to pages_min
    wait_for(lambda: knob("pages_to_scan") == 64, 60, what="pages_to_scan back at pages_min")
    wait_for(lambda: agent.call("Host.getStats")["ksmState"] is False, 30,
             what="Host.getStats: KSM stopped")

    # a broken edit is refused with the reason; the rules in force stay
    for text, reason in (
        ("[ksm]\nrun_below_free_percent = 101\n", "101 is not in 0..100"),
        ("[ksm]\nenabled = 1\n", "expected true or false"),
        ("[ksm]\npages_min = 500\npages_max = 100\n", "pages_min is above pages_max"),
        ("[kms]\nenabled = true\n", "unknown section [kms]"),
        ("[ksm\n", "not valid TOML"),
    ):
        tmp = rule_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(rule_file)
        wait_for(lambda r=reason: r in engine(agent)["ruleFile"]["error"], 30,
                 what=f"refusal: {reason}")
        detail = engine(agent)
        assert detail["ruleFile"]["rules"]["ksm"]["run_below_free_percent"] == 0.0
        assert knob("run") == 0

    # the console shows the same
    shown = subprocess.run(
        [sys.executable, "-m", "messaging.console", "--api", agent.api, "-c", "policy"],
        capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "ERROR:" in shown.stdout and "not valid TOML" in shown.stdout
    assert "KSM control: on" in shown.stdout and "host:" in shown.stdout
    assert "ksm" in shown.stdout and ">= 0%: stop  [applied]" in shown.stdout

    # a good file again
    rules(rule_file, 100.0)
    wait_for(lambda: knob("run") == 1, 60, what="KSM running again")
    assert engine(agent)["ruleFile"]["error"] == ""


def test_the_management_layer_switches_ksm_control_and_tunes_it(
    policy_agent: tuple[Vdsmd, Path], host_ksm: dict[str, int],
) -> None:
    agent, _rule_file = policy_agent
    wait_for(lambda: knob("run") == 1, 60, what="KSM running")

    def mom(**store: Any) -> Any:
        return agent.call("Host.setMOMPolicyParameters", key_value_store=store)

    # --- what a careless or hostile client sends: refused, nothing changes ---------------
    stores: tuple[tuple[dict[str, Any], str], ...] = (
        ({"ksmEnabled": "no"}, "key_value_store.ksmEnabled"),
        ({"ksmEnabled": 0}, "key_value_store.ksmEnabled"),
        ({"ballooningEnabled": True, "balloonEnabled": False},
         "key_value_store.balloonEnabled"),
        ({"rm -rf": True}, "key_value_store.rm -rf"))
    for store, param in stores:
        e = a.error(functools.partial(mom, **store))
        assert e.code == -32602 and f"'{param}'" in e.message, (store, e.message)
    assert engine(agent)["switches"] == {"ballooningEnabled": None, "ksmEnabled": None,
                                         "ksmMergeAcrossNodes": None}

    # off: KSM is stopped once, then left to the operator
    assert mom(ksmEnabled=False) is True
    wait_for(lambda: knob("run") == 0, 30, what="KSM stopped by the switch")
    detail = engine(agent)
    assert detail["ksmControl"] is False and detail["switches"]["ksmEnabled"] is False
    assert any(d["reason"] == "KSM control turned off: stop" for d in ksm_decisions(agent))

    def tune(**params: Any) -> Any:
        return agent.call("Host.setKsmTune", tuningParams=params)

    bad: tuple[tuple[dict[str, Any], str], ...] = (
        ({"run": 3}, "tuningParams.run"),
        ({"run": -1}, "tuningParams.run"),
        ({"run": "1; reboot"}, "tuningParams.run"),
        ({"pages_to_scan": 0}, "tuningParams.pages_to_scan"),
        ({"pages_to_scan": 10**9}, "tuningParams.pages_to_scan"),
        ({"sleep_millisecs": 0}, "tuningParams.sleep_millisecs"),
        ({"merge_across_nodes": 2}, "tuningParams.merge_across_nodes"),
        ({"../../../proc/sysrq-trigger": 1}, "tuningParams.../../../proc/sysrq-trigger"),
        ({}, "tuningParams"))
    for params, param in bad:
        e = a.error(functools.partial(tune, **params))
        assert e.code == -32602 and f"'{param}'" in e.message, (params, e.message)
    assert knob("run") == 0

    assert tune(run=1, pages_to_scan=200, sleep_millisecs=37) is True
    assert (knob("run"), knob("pages_to_scan"), knob("sleep_millisecs")) == (1, 200, 37)
    # control is off: the policy leaves the operator's values alone over several decisions
    done = engine(agent)["decisions"]
    wait_for(lambda: engine(agent)["decisions"] >= done + 4, 30, what="four more decisions")
    assert (knob("run"), knob("pages_to_scan"), knob("sleep_millisecs")) == (1, 200, 37)
    stats = wait_for(lambda: (s := agent.call("Host.getStats"))["ksmPages"] == 200 and s, 30,
                     what="Host.getStats' pages_to_scan")
    assert stats["ksmState"] is True
    ksm_detail = agent.call("Actors.inspect", path="/policy/ksm")["detail"]
    assert ksm_detail["lastWrites"][-1]["why"] == "Host.setKsmTune"

    # KSM merges: 32 MiB of identical pages this process marks mergeable (as qemu marks a
    # guest's memory) are merged, and Host.getStats counts them. This process's own count
    # (/proc/self/ksm_merging_pages) is what is waited for: the host's counters also move
    # with the guests of tests running beside this one.
    # private: KSM merges only private anonymous memory (Python's default anonymous mmap is
    # MAP_SHARED, shmem, which KSM never scans)
    pages = 32 * (1 << 20) // mmap.PAGESIZE
    region = mmap.mmap(-1, pages * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.write(b"\x5a" * (pages * mmap.PAGESIZE))
        region.madvise(mmap.MADV_MERGEABLE)
        assert tune(pages_to_scan=2000, sleep_millisecs=10) is True
        wait_for(lambda: merged_here() >= pages * 3 // 4, 150, interval=0.5,
                 what="KSM merging the identical pages")
        # at most max_page_sharing (256) pages share one KSM page: at least 3/4 * 255/256 of
        # the merged pages count as sharing
        stats = wait_for(lambda: (s := agent.call("Host.getStats"))["ksmSharing"] >=
                         pages * 3 // 4 * 255 // 256 and s, 30, what="Host.getStats' counts")
        assert stats["memShared"] >= 23  # MiB saved
        assert stats["ksmShared"] >= 1
    finally:
        region.close()

    # on again: the rules decide (memory is short: it runs and scans more)
    assert mom(ksmEnabled=True) is True
    wait_for(lambda: knob("pages_to_scan") == 300, 30, what="the policy's next boost")
    total = engine(agent)["inputs"]["host"]["memTotal"]  # MiB
    # sleep_ms_baseline (10) per 16 GiB of host memory, at least 10 ms
    assert knob("sleep_millisecs") == max(10, 10 * 16384 // total) and knob("run") == 1
    assert engine(agent)["ksmControl"] is True
