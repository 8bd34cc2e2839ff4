"""The policy's rules (actors/policy/decide.py): pure functions, every branch."""

from __future__ import annotations

import dataclasses

from actors.policy import decide
from actors.policy.inputs import HostInput, VmInput, host_input, vm_inputs
from actors.policy.ksm import KsmSettings, KsmState
from actors.policy.rules import BalloonRules, CpuRules, KsmRules
from actors.policy.state import VmPolicy
from actors.vm.board import VmView
from actors.vm.qos import CpuTune
from actors.vm.status import VmStatus

MIB = 1024  # KiB
HOST = HostInput(mem_total_mib=16384, mem_free_mib=8192, cpu_count=4)
SHORT = HostInput(mem_total_mib=16384, mem_free_mib=1000, cpu_count=4)
STOPPED = KsmState(run=0, pages_to_scan=100, sleep_millisecs=20, merge_across_nodes=1,
                   pages_shared=0, pages_sharing=0, full_scans=0)


def vm(**changes: object) -> VmInput:
    base = VmInput(vm_id="v1", name="web", status="Up", mem_mib=1024, guaranteed_mib=256,
                   vcpus=2, balloon_cur=1024 * MIB, balloon_target=1024 * MIB,
                   guest_free=700 * MIB, cpu_percent=0.0, disk_read_rate=0.0,
                   disk_write_rate=0.0, policy=VmPolicy())
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# --- KSM ---------------------------------------------------------------------------------------


def test_ksm_runs_and_scans_more_while_memory_is_short() -> None:
    found = decide.ksm(SHORT, KsmRules(enabled=True), STOPPED)
    assert found is not None
    assert found.value == KsmSettings(run=1, pages_to_scan=400, sleep_millisecs=10)
    assert "run" in found.reason
    running = dataclasses.replace(STOPPED, run=1, pages_to_scan=1200, sleep_millisecs=10)
    boosted = decide.ksm(SHORT, KsmRules(enabled=True), running)
    assert boosted is not None and boosted.value == KsmSettings(pages_to_scan=1250)  # max
    at_max = dataclasses.replace(running, pages_to_scan=1250)
    assert decide.ksm(SHORT, KsmRules(enabled=True), at_max) is None  # nothing to write


def test_ksm_decays_and_stops_when_memory_is_plenty() -> None:
    running = dataclasses.replace(STOPPED, run=1, pages_to_scan=400, sleep_millisecs=10)
    found = decide.ksm(HOST, KsmRules(enabled=True), running)
    assert found is not None and found.value == KsmSettings(run=0, pages_to_scan=350)
    low = dataclasses.replace(STOPPED, pages_to_scan=80)
    decayed = decide.ksm(HOST, KsmRules(enabled=True), low)
    assert decayed is not None and decayed.value == KsmSettings(pages_to_scan=64)  # min
    assert decide.ksm(HOST, KsmRules(enabled=True),
                      dataclasses.replace(STOPPED, pages_to_scan=64)) is None


def test_ksm_sleep_scales_with_host_memory_and_merge_follows_the_switch() -> None:
    small = HostInput(mem_total_mib=4096, mem_free_mib=100, cpu_count=2)
    big = HostInput(mem_total_mib=256 * 1024, mem_free_mib=100, cpu_count=2)
    rules = KsmRules(enabled=True, sleep_ms_baseline=20)
    small_found = decide.ksm(small, rules, STOPPED)
    big_found = decide.ksm(big, rules, STOPPED)
    assert small_found is not None and big_found is not None
    assert isinstance(small_found.value, KsmSettings) and isinstance(big_found.value, KsmSettings)
    assert small_found.value.sleep_millisecs == 80  # 20 ms per 16 GiB, on 4 GiB
    assert big_found.value.sleep_millisecs == 10  # never below 10
    merged = decide.ksm(HOST, KsmRules(enabled=True), dataclasses.replace(
        STOPPED, pages_to_scan=64), merge_across_nodes=False)
    assert merged is not None and merged.value == KsmSettings(merge_across_nodes=0)


def test_ksm_is_stopped_once_when_control_is_turned_off() -> None:
    running = dataclasses.replace(STOPPED, run=1)
    found = decide.ksm_stop(running)
    assert found is not None and found.value == KsmSettings(run=0)
    assert decide.ksm_stop(STOPPED) is None


# --- balloons ------------------------------------------------------------------------------


def test_an_idle_guest_shrinks_under_pressure_by_a_step_down_to_its_guarantee() -> None:
    rules = BalloonRules(max_change_percent=25.0)
    found = decide.balloon(vm(), True, rules)
    assert found is not None and found.value == 768 * MIB  # a step of 25% of 1 GiB
    # used 324 MiB plus 20% of 512 MiB free: 426 MiB is the floor (above the guarantee)
    small = vm(balloon_cur=512 * MIB, balloon_target=512 * MIB, guest_free=188 * MIB)
    floor = decide.balloon(small, True, rules)
    assert floor is not None and floor.value == int((512 - 188) * MIB + 512 * MIB * 0.2)
    idle = vm(balloon_cur=300 * MIB, balloon_target=300 * MIB, guest_free=250 * MIB)
    guaranteed = decide.balloon(idle, True, rules)
    assert guaranteed is not None and guaranteed.value == 256 * MIB  # never below it
    at_floor = vm(balloon_cur=256 * MIB, balloon_target=256 * MIB, guest_free=200 * MIB)
    assert decide.balloon(at_floor, True, rules) is None


def test_without_pressure_a_balloon_stays_unless_its_guest_needs_memory() -> None:
    shrunk = vm(balloon_cur=512 * MIB, balloon_target=512 * MIB, guest_free=300 * MIB)
    assert decide.balloon(shrunk, False, BalloonRules()) is None
    needy = vm(balloon_cur=512 * MIB, balloon_target=512 * MIB, guest_free=20 * MIB)
    found = decide.balloon(needy, False, BalloonRules(max_change_percent=25.0))
    assert found is not None and found.value == 768 * MIB
    assert "needs memory" in found.reason


def test_a_needy_guest_grows_under_pressure_too_but_never_above_its_memory() -> None:
    needy = vm(balloon_cur=1000 * MIB, balloon_target=1000 * MIB, guest_free=10 * MIB)
    found = decide.balloon(needy, True, BalloonRules(max_change_percent=25.0))
    assert found is not None and found.value == 1024 * MIB
    full = vm(balloon_cur=1024 * MIB, guest_free=10 * MIB)
    assert decide.balloon(full, True, BalloonRules()) is None


def test_a_needy_guest_grows_even_while_its_balloon_still_inflates() -> None:
    # The last target was lower than the guest could give: it would never get there.
    stuck = vm(balloon_cur=600 * MIB, balloon_target=400 * MIB, guest_free=20 * MIB)
    found = decide.balloon(stuck, True, BalloonRules(max_change_percent=10.0))
    assert found is not None and int(str(found.value)) > 600 * MIB


def test_a_moving_balloon_is_left_alone_and_small_changes_are_not_made() -> None:
    moving = vm(balloon_cur=900 * MIB, balloon_target=768 * MIB)
    assert decide.balloon(moving, True, BalloonRules()) is None
    # the floor is within 0.5% of memSize of where it is: no change
    near = vm(balloon_cur=500 * MIB, balloon_target=500 * MIB, guest_free=101 * MIB)
    assert decide.balloon(near, True, BalloonRules()) is None


def test_a_guest_below_its_guarantee_gets_it_back_at_once() -> None:
    below = vm(balloon_cur=128 * MIB, balloon_target=128 * MIB, guest_free=100 * MIB)
    found = decide.balloon(below, True, BalloonRules())
    assert found is not None and found.value == 256 * MIB


def test_no_balloon_decision_without_stats_or_while_not_up() -> None:
    assert decide.balloon(vm(guest_free=None), True, BalloonRules()) is None
    assert decide.balloon(vm(balloon_cur=None), True, BalloonRules()) is None
    assert decide.balloon(vm(status="Paused"), True, BalloonRules()) is None


# --- CPU -----------------------------------------------------------------------------------


def test_vcpu_limit_becomes_each_vcpus_quota_as_mom_computes_it() -> None:
    limited = vm(policy=VmPolicy(vcpu_limit=50))
    found = decide.cpu(limited, HOST, CpuRules(), None)
    # 50% of 4 host CPUs over 2 vCPUs: each vCPU may use a whole CPU
    assert found is not None and found.value == CpuTune(quota=100000, period=100000)
    assert decide.cpu(limited, HOST, CpuRules(), (100000, 100000)) is None  # applied
    tiny = vm(vcpus=64, policy=VmPolicy(vcpu_limit=1))
    at_least = decide.cpu(tiny, HOST, CpuRules(period_us=10000), None)
    assert at_least is not None and at_least.value == CpuTune(quota=1000, period=10000)
    assert decide.cpu(vm(), HOST, CpuRules(), None) is None  # no limit set


# --- inputs ----------------------------------------------------------------------------------


def test_inputs_come_from_the_boards() -> None:
    assert host_input({}, 2) is None
    host = host_input({"memTotal": 1000, "memFree": 150}, 2)
    assert host is not None and decide.pressure(host, 20.0)
    assert not decide.pressure(host, 10.0)
    views = [VmView("v1", "web", VmStatus.UP, mem_mib=512, min_guaranteed_mib=128),
             VmView("v2", "db", VmStatus.UP, mem_mib=256)]
    stats = [{"vmID": "v1", "vcpuCount": 2, "cpuUser": 10.0, "cpuSys": 2.5,
              "balloonInfo": {"balloon_cur": 400 * MIB, "balloon_target": 400 * MIB},
              "memoryStats": {"mem_unused": 50 * MIB, "mem_usable": 80 * MIB},
              "disks": {"vda": {"readRate": 1.0, "writeRate": 2.0},
                        "vdb": {"readRate": 3.0, "writeRate": 4.0}}}]
    first, second = vm_inputs(views, stats, {"v2": VmPolicy(min_guaranteed_mib=1000)})
    assert (first.guaranteed_mib, first.vcpus, first.cpu_percent) == (128, 2, 12.5)
    assert (first.balloon_cur, first.guest_free) == (400 * MIB, 80 * MIB)
    assert (first.disk_read_rate, first.disk_write_rate) == (4.0, 6.0)
    assert second.guaranteed_mib == 256  # the policy's, capped at memSize
    assert second.balloon_cur is None and second.guest_free is None
