"""A VM's quality of service through libvirt: its vCPUs' quota and period, its disks' I/O
limits and its NICs' bandwidth.

The ``check_*``/``parse_*`` functions run on the API worker, before any actor is asked: they
refuse (``InvalidParams``, -32602, naming the param) what libvirt would refuse anyway or
what makes no sense, so a bad request touches nothing. The ``set_*``/``get_*`` functions are
blocking: each runs on the VM's :class:`~actors.vm.guestcall.GuestCaller` thread (a
``VmActor.tune`` operation), with the VM's :class:`~actors.vm.ops.VmOps` for the domain and
for turning libvirt's errors into the agent's. Which disk or NIC a client names is checked
against the live domain there (the live XML is the truth: a disk hot-plugged by hand counts).

Everything is set LIVE only: the domain is transient, and libvirt keeps the values in the
live XML (``<cputune>``, ``<iotune>``, ``<bandwidth>``), where a restarted agent finds them
and a migration carries them. CPU tuning needs the host's cgroup ``cpu`` controller for the
VM, a NIC's limits the kernel's traffic control (libvirt runs tc: an htb qdisc with sfq
under it for inbound, ingress policing for outbound); where they are missing, the verb says
so (code 5) and a NIC's half-made change is undone.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import libvirt

from actors.vm.ops import VmOps
from messaging.errors import InvalidParams, VMError

log = logging.getLogger(__name__)

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
IO_KEYS = ("total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
           "total_iops_sec", "read_iops_sec", "write_iops_sec")
QUOTA_MIN, QUOTA_MAX = 1000, 17592186044415  # libvirt's bounds (µs); -1 is "no limit"
PERIOD_MIN, PERIOD_MAX = 1000, 1000000


# --- CPU -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuTune:
    """What to set (None: leave as it is): microseconds per period, -1 for no limit."""

    quota: int | None = None
    period: int | None = None


def parse_quota(text: str, param: str = "quota") -> int:
    value = int(text)
    if value != -1 and not QUOTA_MIN <= value <= QUOTA_MAX:
        raise InvalidParams(param, f"{text} is neither -1 (no limit) nor in "
                                   f"{QUOTA_MIN}..{QUOTA_MAX}")
    return value


def parse_period(text: str, param: str = "period") -> int:
    value = int(text)
    if not PERIOD_MIN <= value <= PERIOD_MAX:
        raise InvalidParams(param, f"{text} is not in {PERIOD_MIN}..{PERIOD_MAX}")
    return value


def set_cpu_tune(ops: VmOps, tune: CpuTune) -> dict[str, int]:
    """Set the vCPUs' quota and/or period; what libvirt then reports ``{quota, period}``."""
    values = {key: value for key, value in (("vcpu_quota", tune.quota),
                                            ("vcpu_period", tune.period)) if value is not None}
    dom = ops.domain()
    try:
        with ops.calling("setting the vCPU quota and period"):
            dom.setSchedulerParametersFlags(values, LIVE)
    except VMError as e:
        if "cgroup" in str(e).lower():
            raise VMError(reason="CPU tuning needs the cgroup cpu controller for the VM, "
                                 "which libvirt does not have on this host "
                                 f"(cgroup_controllers in qemu.conf, or not mounted): {e}") \
                from e
        raise
    return cpu_tune(ops)


def cpu_tune(ops: VmOps) -> dict[str, int]:
    dom = ops.domain()
    with ops.calling("reading the vCPU quota and period"):
        found = dom.schedulerParametersFlags(LIVE)
    return {"quota": int(found.get("vcpu_quota", -1)),
            "period": int(found.get("vcpu_period", 0))}


# --- disks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskTune:
    name: str
    path: str | None
    limits: Mapping[str, int]  # every key of IO_KEYS


def check_io_tune(tunables: Sequence[Mapping[str, Any]]) -> tuple[DiskTune, ...]:
    """The tunables of VM.setIoTune (schema-checked), or InvalidParams for what libvirt
    refuses: a total limit with a read or write limit of the same kind, a disk twice."""
    seen: dict[str, int] = {}
    tunes = []
    for index, tunable in enumerate(tunables):
        where = f"tunables[{index}]"
        name = tunable["name"]
        if name in seen:
            raise InvalidParams(f"{where}.name", f"{name} is already tuned by "
                                                 f"tunables[{seen[name]}]")
        seen[name] = index
        limits = {key: int(tunable["ioTune"].get(key, 0)) for key in IO_KEYS}
        for kind in ("bytes", "iops"):
            total = limits[f"total_{kind}_sec"]
            if total and (limits[f"read_{kind}_sec"] or limits[f"write_{kind}_sec"]):
                raise InvalidParams(f"{where}.ioTune.total_{kind}_sec",
                                    f"a total limit cannot be combined with read_{kind}_sec "
                                    f"or write_{kind}_sec")
        tunes.append(DiskTune(name, tunable.get("path"), limits))
    return tuple(tunes)


def _disks(xml: str) -> dict[str, str]:
    """The live domain's disks (not CD-ROMs or floppies): target -> source path ("")."""
    disks: dict[str, str] = {}
    for disk in ET.fromstring(xml).iterfind("devices/disk"):
        target = disk.find("target")
        if disk.get("device", "disk") != "disk" or target is None or not target.get("dev"):
            continue
        source = disk.find("source")
        path = "" if source is None else (source.get("file") or source.get("dev") or "")
        disks[str(target.get("dev"))] = path
    return disks


def set_io_tune(ops: VmOps, tunes: Sequence[DiskTune]) -> bool:
    """Set each disk's limits (checked against the live domain first: nothing is set when
    one names no disk of the VM)."""
    dom = ops.domain()
    disks = _disks(ops.live_xml(dom))
    for index, tune in enumerate(tunes):
        where = f"tunables[{index}]"
        if tune.name not in disks:
            raise InvalidParams(f"{where}.name", f"the VM has no disk {tune.name} (its disks: "
                                                 f"{', '.join(sorted(disks)) or 'none'})")
        if tune.path is not None and tune.path != disks[tune.name]:
            raise InvalidParams(f"{where}.path", f"{tune.path[:200]!r} is not the path of "
                                                 f"{tune.name}")
    for tune in tunes:
        with ops.calling(f"setting the I/O limits of {tune.name}"):
            dom.setBlockIoTune(tune.name, dict(tune.limits), LIVE)
    return True


def get_io_tune(ops: VmOps) -> list[dict[str, Any]]:
    dom = ops.domain()
    result = []
    for name, path in sorted(_disks(ops.live_xml(dom)).items()):
        with ops.calling(f"reading the I/O limits of {name}"):
            found = dom.blockIoTune(name, LIVE)
        result.append({"name": name, "path": path,
                       "ioTune": {key: int(found.get(key, 0)) for key in IO_KEYS}})
    return result


# --- NICs ----------------------------------------------------------------------------------

DIRECTIONS = ("inbound", "outbound")
RATE_KEYS = ("average", "peak", "burst")


def check_bandwidth(spec: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """specParams of VM.updateDevice (interface): per direction, its rate (peak at least the
    average; a peak or burst needs an average)."""
    out: dict[str, dict[str, int]] = {}
    for direction in DIRECTIONS:
        rate = spec.get(direction)
        if rate is None:
            continue
        where = f"params.specParams.{direction}"
        values = {key: int(rate.get(key, 0)) for key in RATE_KEYS}
        if values["average"] == 0 and (values["peak"] or values["burst"]):
            raise InvalidParams(f"{where}.average", "a peak or burst needs an average")
        if values["peak"] and values["peak"] < values["average"]:
            raise InvalidParams(f"{where}.peak", "is below the average")
        out[direction] = values
    if not out:
        raise InvalidParams("params.specParams", "give inbound, outbound or both")
    return out


def _nics(xml: str) -> dict[str, str]:
    """The live domain's NICs: MAC (lower case) -> tap device ("" if none)."""
    nics: dict[str, str] = {}
    for nic in ET.fromstring(xml).iterfind("devices/interface"):
        mac, target = nic.find("mac"), nic.find("target")
        if mac is not None and mac.get("address"):
            nics[str(mac.get("address")).lower()] = "" if target is None else \
                str(target.get("dev", ""))
    return nics


def set_bandwidth(ops: VmOps, mac: str | None,
                  rates: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Set a NIC's limits (libvirt applies them with tc on its tap device); what libvirt
    then reports for it."""
    dom = ops.domain()
    nics = _nics(ops.live_xml(dom))
    if mac is None:
        if len(nics) != 1:
            raise InvalidParams("params.macAddr", f"required: the VM has {len(nics)} NICs")
        mac = next(iter(nics))
    mac = mac.lower()
    if mac not in nics:
        raise InvalidParams("params.macAddr", f"the VM has no NIC {mac} (its NICs: "
                                              f"{', '.join(sorted(nics)) or 'none'})")
    values = {f"{direction}.{key}": value for direction, rate in rates.items()
              for key, value in rate.items()}
    with ops.calling(f"reading the bandwidth of NIC {mac}"):
        before = dom.interfaceParameters(mac, LIVE)
    try:
        with ops.calling(f"setting the bandwidth of NIC {mac}"):
            dom.setInterfaceParameters(mac, values, LIVE)
    except VMError as e:
        # libvirt leaves the qdiscs it made before the failing step: set back what was
        _restore(ops, dom, mac, {k: before[k] for k in values if k in before})
        if any(text in str(e) for text in _NO_TC):
            raise VMError(reason=f"the host's kernel lacks the traffic control libvirt limits "
                                 f"a NIC with (qdiscs htb, sfq and ingress, the police "
                                 f"action): {e}") from e
        raise
    with ops.calling(f"reading the bandwidth of NIC {mac}"):
        found = dom.interfaceParameters(mac, LIVE)
    return {str(key): int(value) for key, value in found.items()}


_NO_TC = ("qdisc kind is unknown", "TC action module")


def _restore(ops: VmOps, dom: libvirt.virDomain, mac: str, values: dict[str, int]) -> None:
    try:
        with ops.calling(f"restoring the bandwidth of NIC {mac}"):
            dom.setInterfaceParameters(mac, values, LIVE)
    except VMError as e:
        log.warning("VM %s: NIC %s may keep part of a failed bandwidth change: %s",
                    ops.vm_id, mac, e)
