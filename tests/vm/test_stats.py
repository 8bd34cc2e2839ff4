"""Stats from crafted getAllDomainStats records (real ones: test_libvirt_real.py)."""

from __future__ import annotations

from typing import Any

import libvirt
import pytest

from actors.vm.stats import Sample, StatsHistory, monitor_responding, records_by_uuid, vm_stats

VM_A = "aaaaaaaa-0000-4000-8000-000000000001"
VM_B = "bbbbbbbb-0000-4000-8000-000000000002"
SEC = 1_000_000_000
MIB = 1 << 20

# A record as qemu:///system returned it here for a running test guest (trimmed values).
FULL: dict[str, Any] = {
    "state.state": 1, "state.reason": 1,
    "cpu.time": 2_292_073_000, "cpu.user": 1_724_131_000, "cpu.system": 567_941_000,
    "balloon.current": 131072, "balloon.maximum": 131072, "balloon.rss": 219796,
    "balloon.last-update": 0,
    "vcpu.current": 1, "vcpu.maximum": 1, "vcpu.0.state": 1, "vcpu.0.time": 2 * SEC,
    "net.count": 1, "net.0.name": "vnet1", "net.0.rx.bytes": 90, "net.0.rx.pkts": 1,
    "net.0.rx.errs": 0, "net.0.rx.drop": 0, "net.0.tx.bytes": 0, "net.0.tx.pkts": 0,
    "net.0.tx.errs": 0, "net.0.tx.drop": 0,
    "block.count": 2,
    "block.0.name": "vda", "block.0.path": "/tmp/vmexp/rec.qcow2", "block.0.backingIndex": 2,
    "block.0.rd.reqs": 1, "block.0.rd.bytes": 512, "block.0.rd.times": 75622,
    "block.0.wr.reqs": 0, "block.0.wr.bytes": 0, "block.0.wr.times": 0,
    "block.0.fl.reqs": 0, "block.0.fl.times": 0,
    "block.0.allocation": 0, "block.0.capacity": 64 * MIB, "block.0.physical": 204800,
    "block.1.name": "hdc", "block.1.rd.reqs": 0, "block.1.rd.bytes": 0, "block.1.rd.times": 0,
    "block.1.wr.reqs": 0, "block.1.wr.bytes": 0, "block.1.wr.times": 0,
    "block.1.fl.reqs": 0, "block.1.fl.times": 0,
}
# What NOWAIT gave for the same domain while a call stuck on its monitor held its job.
PARTIAL: dict[str, Any] = {
    "state.state": 1, "state.reason": 1,
    "cpu.time": 2_392_073_000, "cpu.user": 1_824_131_000, "cpu.system": 567_941_000,
    "balloon.current": 131072, "balloon.maximum": 131072,
    "vcpu.current": 1, "vcpu.maximum": 1, "vcpu.0.state": 1, "vcpu.0.time": 0,
    "net.count": 1, "net.0.name": "vnet1",
    "block.count": 2, "block.0.name": "vda", "block.0.path": "/tmp/vmexp/rec.qcow2",
    "block.0.backingIndex": 2, "block.1.name": "hdc",
}


def later(record: dict[str, Any], **grow: int) -> dict[str, Any]:
    """A copy with counters grown: keys with '.' spelled '__'."""
    out = dict(record)
    for key, amount in grow.items():
        name = key.replace("__", ".")
        out[name] = out[name] + amount
    return out


@pytest.mark.timeout(5)
def test_first_sample_has_counters_and_no_rates() -> None:
    stats = StatsHistory().update({VM_A: FULL}, now=100.0)[VM_A]
    assert stats["monitorResponse"] == 0
    assert (stats["cpuUser"], stats["cpuSys"], stats["cpuUsage"]) == (0.0, 0.0, 2_292_073_000)
    assert stats["vcpuCount"] == 1
    assert stats["memUsage"] == 0  # the guest reports nothing (no balloon driver)
    assert stats["memCurrent"] == 131072
    assert stats["memRss"] == 219796
    vda = stats["disks"]["vda"]
    assert vda["readBytes"] == 512 and vda["readOps"] == 1 and vda["readRate"] == 0.0
    assert (vda["capacity"], vda["allocation"], vda["physical"]) == (64 * MIB, 0, 204800)
    assert vda["path"] == "/tmp/vmexp/rec.qcow2"
    assert "path" not in stats["disks"]["hdc"]  # an empty CD-ROM
    assert stats["network"]["vnet1"]["rx"] == 90
    assert stats["network"]["vnet1"]["rxRate"] == 0.0


@pytest.mark.timeout(5)
def test_rates_from_two_samples() -> None:
    history = StatsHistory()
    history.update({VM_A: FULL}, now=100.0)
    second = later(
        FULL,
        cpu__time=SEC,
        cpu__user=SEC,
        cpu__system=SEC // 5,
        block__0__rd__bytes=4 * MIB,
        block__0__rd__reqs=4,
        block__0__rd__times=4_000_000,
        block__0__wr__bytes=2 * MIB,
        block__0__wr__reqs=2,
        block__0__wr__times=10_000_000,
        net__0__rx__bytes=2000,
        net__0__tx__bytes=1000,
        net__0__rx__pkts=10,
    )
    stats = history.update({VM_A: second}, now=102.0)[VM_A]
    assert stats["cpuUser"] == 50.0
    assert stats["cpuSys"] == 10.0
    vda = stats["disks"]["vda"]
    assert vda["readRate"] == 2 * MIB and vda["writeRate"] == MIB
    assert vda["readLatency"] == 1_000_000 and vda["writeLatency"] == 5_000_000
    assert vda["flushLatency"] == 0
    nic = stats["network"]["vnet1"]
    assert (nic["rxRate"], nic["txRate"], nic["rxPackets"]) == (1000.0, 500.0, 11)


@pytest.mark.timeout(5)
def test_cpu_share_is_of_all_vcpus_and_capped() -> None:
    history = StatsHistory()
    two = dict(FULL, **{"vcpu.current": 2})
    history.update({VM_A: two}, now=0.0)
    stats = history.update({VM_A: later(two, cpu__user=SEC)}, now=1.0)[VM_A]
    assert stats["cpuUser"] == 50.0
    stats = history.update({VM_A: later(two, cpu__user=10 * SEC)}, now=2.0)[VM_A]
    assert stats["cpuUser"] == 100.0


@pytest.mark.timeout(5)
def test_counters_that_go_back_give_zero_rates() -> None:
    history = StatsHistory()
    history.update({VM_A: later(FULL, block__0__rd__bytes=MIB, cpu__user=SEC)}, now=0.0)
    stats = history.update({VM_A: FULL}, now=1.0)[VM_A]
    assert stats["disks"]["vda"]["readRate"] == 0.0
    assert stats["cpuUser"] == 0.0


@pytest.mark.timeout(5)
def test_partial_record_means_monitor_not_responding() -> None:
    assert monitor_responding(FULL)
    assert not monitor_responding(PARTIAL)
    assert monitor_responding({**PARTIAL, "state.state": libvirt.VIR_DOMAIN_SHUTOFF})
    assert monitor_responding({"state.state": 1})  # no balloon group asked: cannot tell
    history = StatsHistory()
    history.update({VM_A: FULL}, now=0.0)
    stuck = history.update({VM_A: PARTIAL}, now=2.0)[VM_A]
    assert stuck["monitorResponse"] == -1
    assert stuck["cpuUser"] == 5.0  # cgroup CPU time still comes
    assert stuck["disks"]["vda"]["readBytes"] == 512  # the last known values...
    assert stuck["disks"]["vda"]["readRate"] == 0.0  # ...with zero rates
    assert stuck["memRss"] == 219796
    # Back to normal: rates over the whole gap since the last complete sample.
    back = history.update({VM_A: later(FULL, block__0__rd__bytes=4 * MIB)}, now=4.0)[VM_A]
    assert back["monitorResponse"] == 0
    assert back["disks"]["vda"]["readRate"] == MIB


@pytest.mark.timeout(5)
def test_partial_first_sample() -> None:
    stats = StatsHistory().update({VM_A: PARTIAL}, now=0.0)[VM_A]
    assert stats["monitorResponse"] == -1
    assert stats["disks"]["vda"] == {
        "readBytes": 0, "writeBytes": 0, "readOps": 0, "writeOps": 0, "readRate": 0.0,
        "writeRate": 0.0, "readLatency": 0, "writeLatency": 0, "flushLatency": 0,
        "path": "/tmp/vmexp/rec.qcow2",
    }


@pytest.mark.timeout(5)
def test_vms_come_and_go() -> None:
    history = StatsHistory()
    history.update({VM_A: FULL, VM_B: FULL}, now=0.0)
    only_b = history.update({VM_B: later(FULL, cpu__user=SEC)}, now=1.0)
    assert set(only_b) == {VM_B} and only_b[VM_B]["cpuUser"] == 100.0
    # A came back (restarted): a first sample again, no rate against its old life.
    again = history.update({VM_A: later(FULL, cpu__user=SEC)}, now=2.0)
    assert again[VM_A]["cpuUser"] == 0.0
    history.forget(VM_A)
    assert history.update({VM_A: FULL}, now=3.0)[VM_A]["cpuUser"] == 0.0


@pytest.mark.timeout(5)
def test_backing_chain_entries_do_not_replace_the_top() -> None:
    record = {
        "state.state": 1, "block.count": 2,
        "block.0.name": "vda", "block.0.path": "/top", "block.0.rd.bytes": 7,
        "block.1.name": "vda", "block.1.path": "/base", "block.1.rd.bytes": 1,
    }
    stats = vm_stats(Sample(0.0, record), None, None)
    assert stats["disks"] == {"vda": stats["disks"]["vda"]}
    assert stats["disks"]["vda"]["path"] == "/top" and stats["disks"]["vda"]["readBytes"] == 7


@pytest.mark.timeout(5)
def test_memory_usage_and_stats_from_guest_balloon_stats_as_vdsm() -> None:
    # A 128 MiB guest that sees 96 MiB (MemTotal) of which 32 MiB are unused (MemFree):
    # vdsm's memUsage is 100 - unused / memSize, truncated.
    balloon = {"balloon.available": 96 * 1024, "balloon.unused": 32 * 1024,
               "balloon.usable": 40 * 1024, "balloon.swap_in": 10, "balloon.swap_out": 20,
               "balloon.major_fault": 100, "balloon.minor_fault": 1000}
    first = {**FULL, **balloon}
    stats = vm_stats(Sample(0.0, first), None, None)
    assert stats["memUsage"] == 75
    assert stats["memoryStats"] == {
        "mem_total": 96 * 1024, "mem_unused": 32 * 1024, "mem_free": 32 * 1024,
        "mem_usable": 40 * 1024, "swap_in": 0, "swap_out": 0, "majflt": 0, "minflt": 0,
        "pageflt": 0}
    assert stats["balloonInfo"] == {"balloon_max": 131072, "balloon_min": 0,
                                    "balloon_cur": 131072, "balloon_target": 131072}
    # Two seconds later: the counters became rates per second.
    second = later(first, balloon__swap_in=4, balloon__major_fault=20,
                   balloon__minor_fault=200)
    second["balloon.unused"] = 13 * 1024  # 10.2 % of memSize unused: 89.8 %, truncated
    stats = vm_stats(Sample(2.0, second), Sample(0.0, first), Sample(0.0, first))
    assert stats["memUsage"] == 89
    memory = stats["memoryStats"]
    assert (memory["swap_in"], memory["majflt"], memory["minflt"], memory["pageflt"]) == \
        (2, 10, 100, 110)


@pytest.mark.timeout(5)
def test_no_memory_stats_without_the_guest_balloon_driver() -> None:
    stats = vm_stats(Sample(0.0, FULL), None, None)
    assert stats["memUsage"] == 0 and "memoryStats" not in stats
    assert stats["balloonInfo"]["balloon_cur"] == 131072  # the host's side still answers


@pytest.mark.timeout(5)
def test_elapsed_time_when_the_start_is_known() -> None:
    stats = StatsHistory().update(
        {VM_A: FULL, VM_B: FULL}, now=0.0, started_at={VM_A: 1000.0}, wall_now=1042.5
    )
    assert stats[VM_A]["elapsedTime"] == 42.5
    assert "elapsedTime" not in stats[VM_B]


class FakeDomain:
    def __init__(self, uuid: str) -> None:
        self.uuid = uuid

    def UUIDString(self) -> str:  # libvirt's name
        return self.uuid


@pytest.mark.timeout(5)
def test_records_by_uuid() -> None:
    records = [(FakeDomain(VM_A), FULL), (FakeDomain(VM_B), PARTIAL)]
    assert records_by_uuid(records) == {VM_A: FULL, VM_B: PARTIAL}
