"""The host statistics sampler: one actor that samples CPU, memory and NIC counters.

Every ``interval`` seconds (a clock tick) it reads /proc and sysfs and keeps the rates since
the previous sample in a :class:`LastSample`, which ``Host.getStats`` reads inline on the API
server's socket thread: a request never does I/O and never waits for the actor.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pyudev

from actors.base import ActorContext, SupervisedActor
from actors.clock import TimerHandle
from actors.host import nics, procfs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Tick:
    pass


@dataclass(frozen=True)
class _Sample:
    at: float
    cpu: procfs.CpuTimes
    counters: dict[str, nics.NicCounters]


class LastSample:
    """The last host stats sample, written by the actor, read by any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {}

    def set(self, stats: dict[str, Any]) -> None:
        with self._lock:
            self._stats = stats

    def get(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._stats)


class HostStatsActor(SupervisedActor):
    def __init__(self, ctx: ActorContext, *, interval: float = 5.0,
                 last: LastSample | None = None) -> None:
        super().__init__(ctx)
        self._interval = interval
        self._last = last if last is not None else LastSample()
        self._timer: TimerHandle | None = None
        self._udev: pyudev.Context | None = None
        self._previous: _Sample | None = None
        self._stats: dict[str, Any] = {}
        self._started = time.monotonic()
        self._samples = 0

    def setup(self) -> None:
        self._udev = pyudev.Context()
        self._sample()
        me = self.actor_ref
        self._timer = self.ctx.runtime.clock.call_every(self._interval, lambda: me.tell(_Tick()))

    def teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Tick):
            self._sample()
            return None
        return super().on_receive(message)

    def stats(self) -> dict[str, Any]:
        """The last sample (asked by Host.getStats)."""
        return dict(self._stats)

    def describe(self) -> dict[str, Any]:
        return {"interval": self._interval, "samples": self._samples,
                "lastSampleAgo": round(time.monotonic() - self._stats.get("_at", 0.0), 3)}

    def _sample(self) -> None:
        assert self._udev is not None
        now = time.monotonic()
        cpu = procfs.read_cpu_times()
        counters = {}
        for nic in nics.list_nics(self._udev):
            value = nics.read_counters(nic)
            if value is not None:
                counters[nic.name] = value
        mem = procfs.read_meminfo()
        previous = self._previous
        self._previous = _Sample(now, cpu, counters)
        self._samples += 1
        if previous is None:
            percent = procfs.CpuPercent(0.0, 0.0, 100.0)
            elapsed = 0.0
        else:
            percent = procfs.cpu_percent(previous.cpu, cpu)
            elapsed = now - previous.at
        network = {}
        for name, value in counters.items():
            before = previous.counters.get(name) if previous else None
            rx_rate = tx_rate = 0.0
            if before is not None and elapsed > 0:
                rx_rate = max(0, value.rx_bytes - before.rx_bytes) / elapsed
                tx_rate = max(0, value.tx_bytes - before.tx_bytes) / elapsed
            network[name] = {
                "rxBytes": value.rx_bytes,
                "txBytes": value.tx_bytes,
                "rxRate": round(rx_rate, 1),
                "txRate": round(tx_rate, 1),
                "state": value.state,
                "speed": value.speed,
            }
        total = mem.get("MemTotal", 0) // 1024
        available = mem.get("MemAvailable", mem.get("MemFree", 0)) // 1024
        self._stats = {
            "_at": now,
            "cpuUser": percent.user,
            "cpuSys": percent.sys,
            "cpuIdle": percent.idle,
            "cpuLoad": procfs.read_loadavg(),
            "memTotal": total,
            "memFree": available,
            "memUsed": total - available,
            "memCommitted": mem.get("Committed_AS", 0) // 1024,
            "swapTotal": mem.get("SwapTotal", 0) // 1024,
            "swapFree": mem.get("SwapFree", 0) // 1024,
            "network": network,
            "elapsedTime": round(now - self._started, 3),
            "sampleInterval": self._interval,
        }
        self._last.set(self._stats)
