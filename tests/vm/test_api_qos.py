"""A VM's QoS through vdsmd's API, on real TCG guests: an I/O limit caps the guest's O_DIRECT
writes, a vCPU quota caps a busy guest (and the policy sets one from a vcpuLimit), CPU
tuning where libvirt has no cgroup cpu controller says so, a NIC's bandwidth limits reach tc.

The rates are measured from outside the agent, through libvirt (the disk's write counter,
the vCPU's run time), with and without the limit in the same run; each bound asserted is one
the limit itself guarantees (a throttled guest cannot go faster, whatever the load), and the
unlimited rate only has to be well above it.
"""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from messaging.client import ClientError
from tests import guest as g
from tests.harness import Vdsmd, running_vdsmd, wait_for
from tests.vm import agent as a

pytestmark = [pytest.mark.libvirt, pytest.mark.root]
log = logging.getLogger(__name__)
MIB = 1 << 20
LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
IO_LIMIT = 2 * MIB  # bytes/s
QUOTA = 5000  # µs per 100000: 5% of a CPU


@pytest.fixture
def qos_agent(tmp_path: Path, hooks_dir: Path, conn: libvirt.virConnect) -> Iterator[Vdsmd]:
    daemon = Vdsmd(tmp_path / "vdsmd",
                   config=a.config(hooks_dir) + "[policy]\ninterval = 1.0\n")
    with a.started(conn, daemon):
        yield daemon


def write_rate(dom: libvirt.virDomain, seconds: float) -> float:
    """Bytes/s the guest wrote to vda over ``seconds``."""
    before, start = dom.blockStats("vda")[3], time.monotonic()
    time.sleep(seconds)
    return float(dom.blockStats("vda")[3] - before) / (time.monotonic() - start)


def vcpu_share(dom: libvirt.virDomain, seconds: float) -> float:
    """The share of one CPU the guest's vCPU ran over ``seconds``."""
    before, start = dom.vcpus()[0][0][2], time.monotonic()
    time.sleep(seconds)
    return float(dom.vcpus()[0][0][2] - before) / 1e9 / (time.monotonic() - start)


def disk_image(tmp_path: Path, mib: int = 64) -> str:
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(mib * MIB)
    return os.path.realpath(disk)


def io_tune(agent: Vdsmd, vm_id: str) -> dict[str, int]:
    (vda,) = agent.call("VM.getIoTune", vmID=vm_id)
    assert vda["name"] == "vda"
    return dict(vda["ioTune"])


@pytest.mark.timeout(240)
def test_an_io_limit_caps_a_guests_o_direct_writes(
    qos_agent: Vdsmd, guest_image: g.GuestImage, conn: libvirt.virConnect, tmp_path: Path,
) -> None:
    agent = qos_agent
    disk = disk_image(tmp_path)
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id, vmParams=a.guest_params(
        guest_image, drives=[{"path": disk}], kernelArgs=g.kernel_cmdline("writeloop", chunk=1)))
    g.wait_for_marker(a.serial_log(agent, vm_id), g.MARKER_READY, a.BOOT_TIMEOUT)
    dom = conn.lookupByUUIDString(vm_id)
    unlimited = write_rate(dom, 3.0)

    # --- what a careless or hostile client sends: refused, nothing changes ---------------
    def tunables(*items: dict[str, Any]) -> list[dict[str, Any]]:
        return list(items)

    limit = {"name": "vda", "ioTune": {"write_bytes_sec": IO_LIMIT}}
    for bad, param in (
        (tunables({"name": "vdz", "ioTune": {}}), "tunables[0].name"),
        (tunables(limit, {"name": "vdb", "ioTune": {"read_iops_sec": 5}}), "tunables[1].name"),
        (tunables({**limit, "path": "/etc/passwd"}), "tunables[0].path"),
        (tunables({"name": "vda", "ioTune": {"total_bytes_sec": 1, "write_bytes_sec": 1}}),
         "tunables[0].ioTune.total_bytes_sec"),
        (tunables({"name": "vda", "ioTune": {"write_bytes_sec": -1}}),
         "tunables[0].ioTune.write_bytes_sec"),
        (tunables({"name": "vda", "ioTune": {"write_bytes_sec": 10**16}}),
         "tunables[0].ioTune.write_bytes_sec"),
        (tunables({"name": "vda", "ioTune": {"write_bytes_sec": "fast"}}),
         "tunables[0].ioTune.write_bytes_sec"),
        (tunables({"name": "vda", "ioTune": {"size_iops_sec": 5}}),
         "tunables[0].ioTune.size_iops_sec"),
        (tunables({"name": "vda;reboot", "ioTune": {}}), "tunables[0].name"),
        (tunables(limit, limit), "tunables[1].name"),
        ([limit] * 65, "tunables"),
    ):
        e = a.error(lambda b=bad: agent.call("VM.setIoTune", vmID=vm_id, tunables=b))
        assert e.code == -32602 and f"'{param}'" in e.message, (bad, e.message)
    e = a.error(lambda: agent.call("VM.setIoTune", vmID=vm_id, tunables=tunables(
        limit, {"name": "vdz", "ioTune": {}})))
    assert "no disk vdz (its disks: vda)" in e.message
    assert io_tune(agent, vm_id)["write_bytes_sec"] == 0  # the good one was not set either
    assert a.error(lambda: agent.call("VM.getIoTune", vmID=a.new_id())).code == 1

    # --- the limit, read back, and what the guest gets ------------------------------------
    assert agent.call("VM.setIoTune", vmID=vm_id, tunables=[{**limit, "path": disk}]) is True
    assert io_tune(agent, vm_id) == {"total_bytes_sec": 0, "read_bytes_sec": 0,
                                     "write_bytes_sec": IO_LIMIT, "total_iops_sec": 0,
                                     "read_iops_sec": 0, "write_iops_sec": 0}
    assert dom.blockIoTune("vda", LIVE)["write_bytes_sec"] == IO_LIMIT
    time.sleep(1.0)  # the guest's writes in flight when the limit came
    limited = write_rate(dom, 4.0)
    assert agent.call("VM.setIoTune", vmID=vm_id, tunables=[
        {"name": "vda", "ioTune": {}}]) is True
    time.sleep(1.0)
    again = write_rate(dom, 3.0)
    log.warning("O_DIRECT writes: %.1f MiB/s without a limit, %.2f MiB/s with %d MiB/s, "
                "%.1f MiB/s without again", unlimited / MIB, limited / MIB, IO_LIMIT // MIB,
                again / MIB)
    assert limited <= IO_LIMIT * 1.25
    assert limited > 0  # capped, not stopped
    assert unlimited >= 4 * IO_LIMIT and again >= 4 * IO_LIMIT
    assert io_tune(agent, vm_id)["write_bytes_sec"] == 0


@pytest.mark.timeout(240)
def test_a_cpu_quota_caps_a_busy_guest_and_the_policy_sets_one_from_a_vcpu_limit(
    qos_agent: Vdsmd, guest_image: g.GuestImage, conn: libvirt.virConnect,
) -> None:
    agent = qos_agent
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id, vmParams=a.guest_params(
        guest_image, kernelArgs=g.kernel_cmdline("busy")))
    g.wait_for_marker(a.serial_log(agent, vm_id), g.MARKER_READY, a.BOOT_TIMEOUT)
    dom = conn.lookupByUUIDString(vm_id)
    unlimited = vcpu_share(dom, 3.0)

    for verb, param, value in (
        ("VM.setCpuTuneQuota", "quota", "abc"), ("VM.setCpuTuneQuota", "quota", "10"),
        ("VM.setCpuTuneQuota", "quota", "-2"), ("VM.setCpuTuneQuota", "quota", ""),
        ("VM.setCpuTuneQuota", "quota", 5000), ("VM.setCpuTuneQuota", "quota", "9" * 22),
        ("VM.setCpuTunePeriod", "period", "999"), ("VM.setCpuTunePeriod", "period", "-1"),
        ("VM.setCpuTunePeriod", "period", "2000000"),
    ):
        e = a.error(lambda v=verb, p=param, x=value: agent.call(v, vmID=vm_id, **{p: x}))
        assert e.code == -32602 and f"'{param}'" in e.message, (verb, value, e.message)
    assert dom.schedulerParametersFlags(LIVE)["vcpu_quota"] == -1  # nothing changed
    assert a.error(lambda: agent.call("VM.setCpuTuneQuota", vmID=a.new_id(),
                                      quota="5000")).code == 1

    try:
        agent.call("VM.setCpuTuneQuota", vmID=vm_id, quota=str(QUOTA))
    except ClientError as e:
        if e.code == 5 and "cgroup cpu controller" in e.message:
            pytest.skip(f"this host's cgroups do not allow CPU tuning: {e.message}")
        raise
    time.sleep(0.5)
    capped = vcpu_share(dom, 4.0)
    log.warning("busy vCPU: %.1f%% of a CPU without a quota, %.1f%% with %d/100000 µs",
                unlimited * 100, capped * 100, QUOTA)
    assert capped <= QUOTA / 100000 + 0.02
    assert unlimited >= 2 * QUOTA / 100000
    assert agent.call("VM.setCpuTunePeriod", vmID=vm_id, period="50000") is True
    found = dom.schedulerParametersFlags(LIVE)
    assert (found["vcpu_quota"], found["vcpu_period"]) == (QUOTA, 50000)

    # --- the policy: a vcpuLimit becomes the vCPUs' quota (MOM's formula) -----------------
    for bad, param in (({"vcpuLimit": 0}, "params.vcpuLimit"),
                       ({"vcpuLimit": 101}, "params.vcpuLimit"),
                       ({"minGuaranteedMemoryMb": 129}, "params.minGuaranteedMemoryMb"),
                       ({}, "params"), ({"vmId": a.new_id(), "vcpuLimit": 5}, "params.vmId"),
                       ({"ioTune": []}, "params.ioTune")):
        e = a.error(lambda b=bad: agent.call("VM.updateVmPolicy", vmID=vm_id, params=b))
        assert e.code == -32602 and f"'{param}'" in e.message, (bad, e.message)
    assert a.error(lambda: agent.call("VM.updateVmPolicy", vmID=a.new_id(),
                                      params={"vcpuLimit": 5})).code == 1
    assert agent.call("VM.updateVmPolicy", vmID=vm_id,
                      params={"vmId": vm_id, "vcpuLimit": 10}) is True
    expected = 100000 * 10 * (os.cpu_count() or 1) // 100  # one vCPU
    wait_for(lambda: (dom.schedulerParametersFlags(LIVE)["vcpu_quota"],
                      dom.schedulerParametersFlags(LIVE)["vcpu_period"]) == (expected, 100000),
             30, what="the policy's quota")
    detail = agent.call("Actors.inspect", path="/policy/engine")["detail"]
    assert detail["inputs"]["vms"][vm_id]["policy"] == {"vcpuLimit": 10}
    decision = next(d for d in detail["lastDecisions"] if d["kind"] == "cpu")
    assert decision["vmID"] == vm_id and decision["outcome"] == "applied"
    assert decision["result"] == {"quota": expected, "period": 100000}


@pytest.mark.timeout(180)
def test_cpu_tuning_where_libvirt_has_no_cgroup_cpu_controller_says_so(
    tmp_path: Path, hooks_dir: Path,
) -> None:
    libvirtd = a.GuestLibvirtd(tmp_path / "libvirt", qemu_conf="cgroup_controllers = [ ]")
    try:
        libvirtd.start()
        with running_vdsmd(tmp_path / "d", libvirt_uri=libvirtd.uri,
                           config=a.config(hooks_dir)) as agent:
            a.wait_ready(agent)
            vm_id = a.new_id()
            agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params(
                drives=[{"path": disk_image(tmp_path, 8)}]))
            e = a.error(lambda: agent.call("VM.setCpuTuneQuota", vmID=vm_id, quota="5000"))
            assert e.code == 5
            assert "CPU tuning needs the cgroup cpu controller" in e.message
            assert "cgroup CPU controller is not mounted" in e.message  # libvirt's words
            # I/O limits need no cgroup: QEMU itself throttles
            assert agent.call("VM.setIoTune", vmID=vm_id, tunables=[
                {"name": "vda", "ioTune": {"total_iops_sec": 100}}]) is True
            assert io_tune(agent, vm_id)["total_iops_sec"] == 100
            assert agent.call("VM.destroy", vmID=vm_id) is True
    finally:
        libvirtd.close()


@pytest.fixture
def bridge() -> Iterator[str]:
    name = f"vmtbr{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True,
                   timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, timeout=30)


def tc(*args: str) -> str:
    return subprocess.run(["tc", *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout


@pytest.mark.timeout(180)
def test_a_nics_bandwidth_limits_reach_its_tap_device(
    qos_agent: Vdsmd, conn: libvirt.virConnect, bridge: str,
) -> None:
    agent = qos_agent
    vm_id, mac = a.new_id(), "52:54:00:12:34:56"
    agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params(
        nics=[{"bridge": bridge, "macAddr": mac}]))
    tap = wait_for(lambda: sorted(p.name for p in Path(f"/sys/class/net/{bridge}/brif")
                                  .iterdir()), 60, what="the tap device")[0]
    dom = conn.lookupByUUIDString(vm_id)

    def update(**device: Any) -> Any:
        return agent.call("VM.updateDevice", vmID=vm_id, params=device)

    for bad, param in (
        ({"deviceType": "interface"}, "params.specParams"),
        ({"deviceType": "interface", "specParams": {}}, "params.specParams"),
        ({"deviceType": "interface", "macAddr": "52:54:00:00:00:01",
          "specParams": {"inbound": {"average": 10}}}, "params.macAddr"),
        ({"deviceType": "interface", "specParams": {"inbound": {"average": 10, "peak": 5}}},
         "params.specParams.inbound.peak"),
        ({"deviceType": "interface", "specParams": {"inbound": {"average": -1}}},
         "params.specParams.inbound.average"),
        ({"deviceType": "interface", "specParams": {"inbound": {"average": 1, "burst": 2**32}}},
         "params.specParams.inbound.burst"),
        ({"deviceType": "interface", "password": "x", "ttl": 5,
          "specParams": {"inbound": {"average": 10}}}, "params.password"),
        ({"deviceType": "graphics", "specParams": {"inbound": {"average": 10}}},
         "params.specParams"),
        ({"deviceType": "graphics", "password": "x"}, "params.ttl"),
        ({"deviceType": "sound"}, "params.deviceType"),
    ):
        e = a.error(lambda b=bad: update(**b))
        assert e.code == -32602 and f"'{param}'" in e.message, (bad, e.message)
    assert shaped(tap) == set()  # nothing changed

    limits = {"inbound": {"average": 1000, "peak": 2000, "burst": 1024},
              "outbound": {"average": 500}}
    try:
        update(deviceType="interface", macAddr=mac.upper(), specParams=limits)
    except ClientError as e:
        if not kernel_lacks_tc():
            raise
        # This kernel has no sch_sfq and no act_police: libvirt's tc commands fail. The verb
        # says so, and what libvirt made before its failing command is undone.
        assert e.code == 5 and "lacks the traffic control" in e.message, e.message
        assert shaped(tap) == set()
        assert all(v == 0 for v in dom.interfaceParameters(mac, LIVE).values())
        pytest.skip(f"this kernel cannot shape a NIC the way libvirt does: {e.message}")
    found = dom.interfaceParameters(mac, LIVE)
    assert (found["inbound.average"], found["inbound.peak"], found["inbound.burst"]) == \
        (1000, 2000, 1024)
    assert found["outbound.average"] == 500
    assert shaped(tap) == {"htb", "ingress"}  # inbound shaped, outbound policed
    assert "8192Kbit" in tc("class", "show", "dev", tap)  # 1000 KiB/s
    # a direction left out is left as it is; an average of 0 clears one
    assert update(deviceType="interface", specParams={"inbound": {"average": 0}}) is True
    found = dom.interfaceParameters(mac, LIVE)
    assert found["inbound.average"] == 0 and found["outbound.average"] == 500
    assert shaped(tap) == {"ingress"}


def shaped(tap: str) -> set[str]:
    """The shaping qdiscs libvirt puts on a tap device."""
    return {line.split()[1] for line in tc("qdisc", "show", "dev", tap).splitlines()
            if line.split()[1:2] in (["htb"], ["ingress"])}


def kernel_lacks_tc() -> bool:
    """Whether this kernel lacks what libvirt's tc commands need (sfq, police)."""
    config = Path("/proc/config.gz")
    if not config.exists():
        return False
    text = gzip.decompress(config.read_bytes()).decode()
    return "CONFIG_NET_SCH_SFQ=" not in text or "CONFIG_NET_ACT_POLICE=" not in text
