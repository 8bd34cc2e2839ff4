"""Thin provisioning, the plain part: one thin drive's state, its write rate, its chunk.

A *thin drive* is a VM disk whose volume is a qcow2 inside a block volume of fixed size (a
loop-domain volume here, an LV with device-mapper): the guest's writes grow the qcow2 until
it reaches the end of the volume. The agent watches the qcow2's highest written offset with
a libvirt block threshold set ``watermark`` bytes below the volume's end, and when it fires
has the SPM extend the volume by one ``chunk`` (never past ``limit``: a fully allocated
qcow2 of the virtual size, as ``qemu-img measure`` says), refreshes the device here and sets
the next threshold. Everything here runs on the VM actor's thread
(:class:`~actors.vm.extender.Extender` owns it); the blocking steps are in
:mod:`actors.vm.thinwork`.

The chunk adapts to the drive (:class:`ChunkPolicy`): it holds ``headroom`` seconds of writes
at the drive's measured allocation rate (:class:`RateMeter`, a peak that decays with a half
life), bounded by ``[thin] chunk_mib`` .. ``chunk_max_mib``; the watermark is half a chunk
(or the drive's ``thresholdMiB`` when larger), so a fast writer gets room well before it can
reach the end.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Any

from actors.config import ThinConfig
from actors.storage.handle import VolumeHandle

MiB = 1 << 20
RATE_HALF_LIFE = 20.0  # s: a measured rate counts half as much this long after
MIN_SPAN = 0.05  # s: samples closer than this say nothing about the rate
LATENCIES_KEPT = 32


class RateMeter:
    """The rate a drive's allocation grows at (bytes/s): the peak of what was measured
    between successive samples, decaying with :data:`RATE_HALF_LIFE`."""

    def __init__(self) -> None:
        self.rate = 0.0
        self._last: tuple[float, int] | None = None

    def sample(self, at: float, allocation: int) -> None:
        last, self._last = self._last, (at, allocation)
        if last is None:
            return
        span = at - last[0]
        if span < MIN_SPAN:
            # Too close to tell a rate (or older, a late event): the next sample measures
            # from the earlier one, so what was written meanwhile still counts.
            self._last = last
            return
        decayed = self.rate * 0.5 ** (span / RATE_HALF_LIFE)
        self.rate = max(decayed, max(0, allocation - last[1]) / span)


class ChunkPolicy:
    def __init__(self, config: ThinConfig) -> None:
        self.least = config.chunk_mib * MiB
        self.most = config.chunk_max_mib * MiB
        self.adaptive = config.adaptive
        self.headroom = config.headroom

    def chunk(self, rate: float) -> int:
        """How much one extension adds for a drive written at ``rate`` bytes/s."""
        if not self.adaptive:
            return self.least
        wanted = math.ceil(rate * self.headroom / MiB) * MiB
        return min(self.most, max(self.least, wanted))

    @staticmethod
    def watermark(chunk: int, drive_mib: int | None) -> int:
        """How far below the volume's end the threshold sits."""
        return max(chunk // 2, (drive_mib or 0) * MiB)


def next_size(physical: int, chunk: int, limit: int) -> int:
    """The size to ask for: one chunk more, never past ``limit``."""
    return min(physical + chunk, limit)


def threshold_for(physical: int, watermark: int, limit: int) -> int:
    """The threshold for a volume of ``physical`` bytes; 0 (none) once it cannot grow."""
    if physical >= limit:
        return 0
    return max(1, physical - watermark)


def needs_room(allocation: int, physical: int, watermark: int) -> bool:
    return allocation >= physical - watermark


@dataclass
class ThinDrive:
    """A thin drive of a running VM, as the VM actor knows it."""

    target: str  # the disk's target ("vda"): stats and blockInfo name it so
    node: str  # the top layer's indexed name ("vda[1]"): the threshold is set on it
    volume: VolumeHandle
    source: str  # the path libvirt has for it: I/O error events name it
    alias: str  # the device alias ("virtio-disk0"): I/O error events name it too
    capacity: int
    limit: int
    physical: int
    allocation: int = 0
    watermark_mib: int | None = None  # the drive's thresholdMiB
    threshold: int = 0  # as last set (0: none)
    extensions: int = 0
    events: int = 0  # threshold events received
    missed: int = 0  # extensions the slow check found needed, no event asking (one was lost)
    busy: bool = False  # a job of this drive runs
    again: bool = False  # another was asked for meanwhile: it runs next
    forced: bool = False  # the next job extends whatever the allocation (ENOSPC)
    known: bool = False  # the next job may trust ``allocation`` (an event said it)
    checked: bool = False  # the next job is only the slow check's (nothing else asked)
    since: float | None = None  # when the first unserved request came (latency start)
    failures: int = 0  # consecutive failed jobs
    retry_at: float = 0.0
    last_error: str = ""
    rate: RateMeter = field(default_factory=RateMeter)
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCIES_KEPT))

    @property
    def full(self) -> bool:
        return self.physical >= self.limit

    def stats(self) -> dict[str, Any]:
        """This drive's part of ``VM.getStats``' ``disks``."""
        return {"physical": self.physical, "threshold": self.threshold,
                "extensions": self.extensions}

    def describe(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        recent = sorted(self.latencies)
        return {
            **self.stats(), "node": self.node, "volumeID": self.volume.vol,
            "capacity": self.capacity, "limit": self.limit, "allocation": self.allocation,
            "rate": round(self.rate.rate), "busy": self.busy, "again": self.again,
            "events": self.events, "missed": self.missed,
            "failures": self.failures, "lastError": self.last_error,
            "retryIn": round(max(0.0, self.retry_at - now), 3) if self.failures else 0.0,
            "latency": {"last": round(self.latencies[-1], 6),
                        "p50": round(recent[len(recent) // 2], 6),
                        "max": round(recent[-1], 6)} if recent else None,
        }
