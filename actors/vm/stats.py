"""VM statistics from ONE bulk libvirt call per sampling interval.

The sampler calls ``conn.getAllDomainStats(STATS, BULK_FLAGS)`` (off its actor's thread,
through a :class:`~actors.vm.guestcall.GuestCaller`), turns the result into
``{vmID: record}`` with :func:`records_by_uuid`, and feeds it to :meth:`StatsHistory.update`,
which keeps the previous sample of each VM to compute rates and returns each VM's part of
PROTOCOL.md's ``VM.getStats`` map:

``cpuUser``, ``cpuSys``
    percent of the VM's vCPU capacity used by qemu in user and system mode over the last
    interval (0 on the first sample).
``cpuUsage``
    total CPU time of the VM, in ns (a counter).
``memUsage``
    percent of the VM's memory (``memSize``, the balloon's maximum) the guest does not report
    unused, as vdsm computes it: ``int(100 - unused / maximum * 100)`` from the virtio
    balloon driver's statistics (memory the balloon took counts as used); 0 while the guest
    reports none (no virtio_balloon driver). ``memRss`` (KiB) is the host's view: qemu's
    resident size, which includes qemu's own overhead (~90 MiB over a 128 MiB TCG guest).
``memoryStats``
    the balloon driver's statistics, as vdsm reports them: ``mem_total`` (the guest's
    MemTotal, KiB), ``mem_unused`` and ``mem_free`` (its MemFree), ``mem_usable`` (its
    MemAvailable), ``swap_in``, ``swap_out``, ``majflt``, ``minflt`` (per second over the
    interval) and ``pageflt`` (their sum); only while the guest reports them. The domain
    XML asks the guest for them every ``[vm] stats_interval`` (``<memballoon><stats
    period>``, whole seconds).
``balloonInfo``
    ``balloon_max`` (``memSize``, KiB), ``balloon_min`` (0), ``balloon_cur`` (what the
    guest holds now) and ``balloon_target`` (this sample's current value; the VM actor
    shows the target ``VM.setBalloonTarget`` set instead).
``disks``
    ``{target: {readBytes, writeBytes, readOps, writeOps, readRate, writeRate (bytes/s),
    readLatency, writeLatency, flushLatency (ns per op over the interval), capacity,
    allocation, physical (bytes), path}}``.
``network``
    ``{tap name: {rx, tx (bytes), rxRate, txRate (bytes/s), rxPackets, txPackets, rxErrors,
    txErrors, rxDropped, txDropped}}``.
``monitorResponse``
    0, or -1 when the record lacks what only qemu's monitor gives (libvirt skipped the
    domain because a call stuck on its monitor holds the domain's job: see guestcall.py);
    the disks and network of the last full sample are then repeated with zero rates.
``elapsedTime``
    seconds since qemu started, when the caller knows (``started_at``).

The VM actor adds ``vmID``, ``status`` and ``pauseCode``. Everything here is pure: dicts in,
dicts out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import libvirt

log = logging.getLogger(__name__)

#: The stat groups to ask for. BALLOON is needed by :func:`monitor_responding`.
STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
#: Active domains only; skip (rather than wait 30 s for) a domain whose job is held, e.g.
#: by a call stuck on a stopped qemu's monitor.
BULK_FLAGS = (
    libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
    | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
)

Record = Mapping[str, Any]
_ACTIVE_STATES = frozenset(
    {
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED,
        libvirt.VIR_DOMAIN_PAUSED,
        libvirt.VIR_DOMAIN_SHUTDOWN,
        libvirt.VIR_DOMAIN_PMSUSPENDED,
    }
)
_DISK_COUNTERS = {
    "readBytes": "rd.bytes",
    "writeBytes": "wr.bytes",
    "readOps": "rd.reqs",
    "writeOps": "wr.reqs",
}
_DISK_SIZES = ("capacity", "allocation", "physical")
_LATENCIES = {"readLatency": "rd", "writeLatency": "wr", "flushLatency": "fl"}
_NET_COUNTERS = {
    "rx": "rx.bytes",
    "tx": "tx.bytes",
    "rxPackets": "rx.pkts",
    "txPackets": "tx.pkts",
    "rxErrors": "rx.errs",
    "txErrors": "tx.errs",
    "rxDropped": "rx.drop",
    "txDropped": "tx.drop",
}


def records_by_uuid(records: Iterable[tuple[Any, Record]]) -> dict[str, Record]:
    """``{vmID: record}`` from what getAllDomainStats returns ((virDomain, dict) pairs).
    ``UUIDString()`` is answered from the virDomain object: no further libvirt call."""
    return {dom.UUIDString(): record for dom, record in records}


def monitor_responding(record: Record) -> bool:
    """False when libvirt skipped the monitor part of an active domain's record (NOWAIT and
    the domain's job is held): its balloon group then lacks ``balloon.rss``."""
    if record.get("state.state") not in _ACTIVE_STATES:
        return True
    return "balloon.current" not in record or "balloon.rss" in record


@dataclass(frozen=True)
class Sample:
    """One VM's record and the monotonic time it was taken."""

    taken: float
    record: Record


@dataclass
class _History:
    last: Sample
    last_full: Sample | None


@dataclass
class StatsHistory:
    """The previous samples of every VM, to compute rates; not thread-safe (one owner)."""

    _vms: dict[str, _History] = field(default_factory=dict)

    def update(
        self,
        records: Mapping[str, Record],
        now: float,
        *,
        started_at: Mapping[str, float] | None = None,
        wall_now: float | None = None,
    ) -> dict[str, dict[str, Any]]:
        """The stats of every VM in ``records``, taken at monotonic time ``now``.

        VMs absent from ``records`` are forgotten. ``started_at`` gives, per vmID, the POSIX
        time its qemu started, and ``wall_now`` the current POSIX time, for ``elapsedTime``.
        """
        result: dict[str, dict[str, Any]] = {}
        for vm_id, record in records.items():
            current = Sample(now, record)
            history = self._vms.get(vm_id)
            full = monitor_responding(record)
            stats = vm_stats(
                current,
                history.last if history else None,
                history.last_full if history else None,
            )
            if started_at and wall_now is not None and vm_id in started_at:
                stats["elapsedTime"] = max(0.0, round(wall_now - started_at[vm_id], 1))
            result[vm_id] = stats
            if history is None:
                self._vms[vm_id] = _History(current, current if full else None)
            else:
                history.last = current
                if full:
                    history.last_full = current
        for vm_id in set(self._vms) - set(records):
            del self._vms[vm_id]
        return result

    def forget(self, vm_id: str) -> None:
        self._vms.pop(vm_id, None)


def vm_stats(
    current: Sample, previous: Sample | None, previous_full: Sample | None
) -> dict[str, Any]:
    """One VM's stats map from its current sample, the previous one and the previous one
    that was complete (:func:`monitor_responding`); None when there is none yet."""
    record = current.record
    full = monitor_responding(record)
    stats: dict[str, Any] = {"monitorResponse": 0 if full else -1}
    stats.update(_cpu(record, previous.record if previous else None, _interval(current, previous)))
    if full:
        source = record
        old = previous_full.record if previous_full else None
        interval = _interval(current, previous_full)
    else:
        # The monitor part is missing: repeat the last complete sample, with zero rates.
        source = previous_full.record if previous_full else record
        old = None
        interval = 0.0
    stats.update(_memory(source, old, interval))
    stats["disks"] = _disks(source, old, interval)
    stats["network"] = _network(source, old, interval)
    return stats


def _interval(current: Sample, previous: Sample | None) -> float:
    if previous is None:
        return 0.0
    return max(0.0, current.taken - previous.taken)


def _delta(new: Record, old: Record | None, key: str) -> int | None:
    """The growth of a counter, or None if unknown or reset (a counter never goes down)."""
    if old is None or key not in new or key not in old:
        return None
    grown = int(new[key]) - int(old[key])
    return grown if grown >= 0 else None


def _rate(new: Record, old: Record | None, key: str, interval: float) -> float:
    grown = _delta(new, old, key)
    if grown is None or interval <= 0:
        return 0.0
    return round(grown / interval, 1)


def _cpu(record: Record, old: Record | None, interval: float) -> dict[str, Any]:
    vcpus = max(1, int(record.get("vcpu.current", 1)))
    capacity_ns = interval * 1e9 * vcpus
    out: dict[str, Any] = {"cpuUsage": int(record.get("cpu.time", 0)), "vcpuCount": vcpus}
    user_key = "cpu.user" if "cpu.user" in record else "cpu.time"
    for name, key in (("cpuUser", user_key), ("cpuSys", "cpu.system")):
        grown = _delta(record, old, key)
        share = 100.0 * grown / capacity_ns if grown is not None and capacity_ns > 0 else 0.0
        out[name] = round(min(share, 100.0), 2)
    return out


_MEMORY_RATES = {"swap_in": "balloon.swap_in", "swap_out": "balloon.swap_out",
                 "majflt": "balloon.major_fault", "minflt": "balloon.minor_fault"}


def _memory(record: Record, old: Record | None, interval: float) -> dict[str, Any]:
    out: dict[str, Any] = {"memUsage": 0}
    current = int(record.get("balloon.current", 0))  # KiB given to the guest
    maximum = int(record.get("balloon.maximum", 0))  # KiB: memSize
    if "balloon.available" in record and "balloon.unused" in record:
        unused = int(record["balloon.unused"])
        if maximum > 0:
            out["memUsage"] = max(0, min(100, int(100 - 100 * unused / maximum)))
        memory = {"mem_total": int(record["balloon.available"]), "mem_unused": unused,
                  "mem_free": unused}
        if "balloon.usable" in record:
            memory["mem_usable"] = int(record["balloon.usable"])
        for key, source in _MEMORY_RATES.items():
            memory[key] = round(_rate(record, old, source, interval))
        memory["pageflt"] = memory["majflt"] + memory["minflt"]
        out["memoryStats"] = memory
    if "balloon.rss" in record:
        out["memRss"] = int(record["balloon.rss"])
    if current:
        out["memCurrent"] = current
    if maximum:
        out["balloonInfo"] = {"balloon_max": maximum, "balloon_min": 0,
                              "balloon_cur": current, "balloon_target": current}
    return out


def _indexed(record: Record, group: str) -> Iterable[tuple[str, str]]:
    """(name, key prefix) of each ``<group>.<n>.name`` in the record, first name wins."""
    seen: set[str] = set()
    for n in range(int(record.get(f"{group}.count", 0))):
        prefix = f"{group}.{n}."
        name = record.get(prefix + "name")
        if name is None or name in seen:
            continue  # with the BACKING flag, backing-chain entries repeat the name
        seen.add(name)
        yield str(name), prefix


def _find(record: Record | None, group: str, name: str) -> dict[str, Any] | None:
    """The entries of device ``name`` in ``record``, with the index prefix stripped."""
    if record is None:
        return None
    for other, prefix in _indexed(record, group):
        if other == name:
            return {k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix)}
    return None


def _disks(record: Record, old: Record | None, interval: float) -> dict[str, dict[str, Any]]:
    disks: dict[str, dict[str, Any]] = {}
    for name, prefix in _indexed(record, "block"):
        new = {k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix)}
        before = _find(old, "block", name)
        disk: dict[str, Any] = {key: int(new.get(src, 0)) for key, src in _DISK_COUNTERS.items()}
        disk["readRate"] = _rate(new, before, "rd.bytes", interval)
        disk["writeRate"] = _rate(new, before, "wr.bytes", interval)
        for key, op in _LATENCIES.items():
            ops = _delta(new, before, f"{op}.reqs")
            spent = _delta(new, before, f"{op}.times")
            disk[key] = spent // ops if ops and spent is not None else 0
        for key in _DISK_SIZES:
            if key in new:
                disk[key] = int(new[key])
        if "path" in new:
            disk["path"] = str(new["path"])
        disks[name] = disk
    return disks


def _network(record: Record, old: Record | None, interval: float) -> dict[str, dict[str, Any]]:
    nics: dict[str, dict[str, Any]] = {}
    for name, prefix in _indexed(record, "net"):
        new = {k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix)}
        before = _find(old, "net", name)
        nic: dict[str, Any] = {key: int(new.get(src, 0)) for key, src in _NET_COUNTERS.items()}
        nic["rxRate"] = _rate(new, before, "rx.bytes", interval)
        nic["txRate"] = _rate(new, before, "tx.bytes", interval)
        nics[name] = nic
    return nics
