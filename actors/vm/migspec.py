"""What a migration is asked to do, and what libvirt says about one: plain values.

:class:`MigrationSpec` is a ``VM.migrate`` request, checked: the destination peer, the
limits (downtime, bandwidth, timeout) and the options (auto-converge, post-copy).
:func:`libvirt_flags` and :func:`libvirt_params` turn it into ``migrateToURI3``'s
arguments (live, peer to peer: the source's libvirtd drives the migration itself and keeps
driving it if this agent dies); :func:`sample` turns ``virDomainGetJobStats`` into what
``|virt|VM_migration_status|<vmID>`` and ``VM.getMigrationStatus`` report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import libvirt

from actors.config import MigrationConfig

MIB = 1 << 20
UNLIMITED_BANDWIDTH = 8_796_093_022_207  # libvirt's largest migration bandwidth (MiB/s)


@dataclass(frozen=True)
class MigrationSpec:
    job_id: str
    peer: str  # the destination's name in [peers]
    endpoint: str  # its agent's API (tcp)
    host: str  # its host, as the endpoint names it ({host} of the URIs)
    downtime: int  # ms
    bandwidth: int  # MiB/s; 0: no limit
    timeout: float  # s of libvirt migration before the timeout action
    auto_converge: bool = False
    post_copy: bool = False  # at the timeout, switch to post-copy instead of aborting

    def with_limits(self, *, bandwidth: int | None = None,
                    downtime: int | None = None) -> MigrationSpec:
        return replace(self, bandwidth=self.bandwidth if bandwidth is None else bandwidth,
                       downtime=self.downtime if downtime is None else downtime)

    def details(self) -> dict[str, Any]:
        """What the job record says about the request (``Host.getJobs``)."""
        return {"dst": self.peer, "dstEndpoint": self.endpoint, "timeout": self.timeout,
                "maxDowntime": self.downtime, "maxBandwidth": self.bandwidth,
                "autoConverge": self.auto_converge, "postCopy": self.post_copy}


def default_timeout(config: MigrationConfig, mem_mib: int) -> float:
    """vdsm's rule: so many seconds per GiB of guest memory, counting at least one GiB."""
    return config.max_time_per_gib * max(1.0, mem_mib / 1024)


def libvirt_flags(spec: MigrationSpec, *, unsafe: bool) -> int:
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
             | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)
    if spec.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if spec.post_copy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY  # allows the switch; it happens on request
    if unsafe:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    return int(flags)


def libvirt_params(spec: MigrationSpec, *, dest_xml: str, migrate_uri: str) -> dict[str, Any]:
    params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml}
    if spec.bandwidth:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = spec.bandwidth
    if migrate_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri.format(host=spec.host)
    return params


def active(stats: dict[str, Any]) -> bool:
    """Whether ``jobStats()`` describes a job in progress."""
    return int(stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE)) not in (
        libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED,
        libvirt.VIR_DOMAIN_JOB_FAILED, libvirt.VIR_DOMAIN_JOB_CANCELLED)


def outgoing(stats: dict[str, Any]) -> bool:
    """Whether ``jobStats()`` describes an outgoing migration in progress."""
    operation = stats.get("operation")
    return active(stats) and (operation is None or
                              operation == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT)


def sample(stats: dict[str, Any], before: int = 0,
           previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Progress from ``jobStats()``: percent (never below ``before``, 100 only once done),
    bytes remaining, the bandwidth (MiB/s: QEMU's figure, or measured since ``previous``,
    the stats of the sample before, while QEMU has none yet), the iteration, ms elapsed."""
    total = int(stats.get("data_total") or stats.get("memory_total") or 0)
    remaining = int(stats.get("data_remaining", stats.get("memory_remaining", 0)) or 0)
    percent = 0 if total <= 0 else int(100 * (total - min(remaining, total)) / total)
    bps = int(stats.get("memory_bps", 0) or 0)
    if not bps and previous is not None:
        moved = int(stats.get("data_processed", 0) or 0) - \
            int(previous.get("data_processed", 0) or 0)
        took = int(stats.get("time_elapsed", 0) or 0) - int(previous.get("time_elapsed", 0) or 0)
        bps = moved * 1000 // took if moved > 0 and took > 0 else 0
    out: dict[str, Any] = {
        "progress": max(before, min(99, percent)),
        "dataRemaining": remaining,
        "bandwidth": round(bps / MIB, 1),
        "iteration": int(stats.get("memory_iteration", 0) or 0),
        "elapsed": int(stats.get("time_elapsed", 0) or 0),
    }
    if stats.get("memory_dirty_rate") is not None:
        out["dirtyRate"] = int(stats["memory_dirty_rate"])
    return out


def completed_downtime(stats: dict[str, Any]) -> int | None:
    """The guest's pause at the switch-over (ms) from completed job stats, if libvirt knows."""
    value = stats.get("downtime")
    return None if value is None else int(value)
