"""Readers of /proc and /sys: CPU times, memory, CPU identity. Plain functions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate jiffies from the first line of /proc/stat."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @property
    def total(self) -> int:
        return (self.user + self.nice + self.system + self.idle + self.iowait + self.irq
                + self.softirq + self.steal)


def read_cpu_times(proc: Path = PROC) -> CpuTimes:
    with (proc / "stat").open() as f:
        fields = f.readline().split()
    if not fields or fields[0] != "cpu":
        raise ValueError("unexpected /proc/stat format")
    values = [int(v) for v in fields[1:9]] + [0] * max(0, 8 - len(fields[1:9]))
    return CpuTimes(*values[:8])


@dataclass(frozen=True)
class CpuPercent:
    user: float
    sys: float
    idle: float


def cpu_percent(before: CpuTimes, after: CpuTimes) -> CpuPercent:
    total = after.total - before.total
    if total <= 0:
        return CpuPercent(0.0, 0.0, 100.0)
    user = (after.user + after.nice) - (before.user + before.nice)
    system = (after.system + after.irq + after.softirq) - (
        before.system + before.irq + before.softirq)
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    return CpuPercent(
        round(100.0 * user / total, 2),
        round(100.0 * system / total, 2),
        round(100.0 * idle / total, 2),
    )


def read_meminfo(proc: Path = PROC) -> dict[str, int]:
    """/proc/meminfo in KiB."""
    info: dict[str, int] = {}
    with (proc / "meminfo").open() as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                info[key] = int(parts[0])
    return info


@dataclass(frozen=True)
class CpuIdentity:
    model: str
    flags: tuple[str, ...]
    sockets: int
    cores: int
    threads: int


def read_cpu_identity(proc: Path = PROC) -> CpuIdentity:
    model = ""
    flags: tuple[str, ...] = ()
    sockets: set[str] = set()
    cores: set[tuple[str, str]] = set()
    threads = 0
    physical = "0"
    with (proc / "cpuinfo").open() as f:
        for line in f:
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "processor":
                threads += 1
            elif key == "model name" and not model:
                model = value
            elif key == "flags" and not flags:
                flags = tuple(value.split())
            elif key == "physical id":
                physical = value
                sockets.add(value)
            elif key == "core id":
                cores.add((physical, value))
    threads = threads or (os.cpu_count() or 1)
    return CpuIdentity(
        model=model,
        flags=flags,
        sockets=max(1, len(sockets)),
        cores=len(cores) or threads,
        threads=threads,
    )


def read_loadavg(proc: Path = PROC) -> float:
    with (proc / "loadavg").open() as f:
        return float(f.read().split()[0])
