"""Handlers of the Host.* verbs that belong to the host services.

``Host.ping`` and ``Host.getStats`` (the host stats actor's :class:`LastSample` plus what the
subsystems keep on their boards) run inline on the API server's socket thread: they never
block and need no worker. ``Host.getCapabilities`` needs libvirt: it runs on a
:class:`LibvirtCaller` thread with the request's deadline, off the shared worker pool, and
concurrent requests share the one call in flight (capabilities do not change from one
request to the next). While libvirt is down or stalled it answers ``LibvirtUnavailable``
(101) at once; a call that libvirtd leaves unanswered past its deadline answers 101 too, and
until it returns the next request is refused at once instead of queueing behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import libvirt

from actors.calls import BoundedCaller, Call
from actors.clock import Clock
from actors.directory import ServiceRef
from actors.host import caps
from actors.host.libvirthandle import LibvirtHandle
from actors.host.proxies import UdevProxy
from actors.host.stats import HostStatsActor, LastSample
from actors.host.udev import UdevActor
from messaging.deadline import current as current_deadline
from messaging.errors import LibvirtUnavailable
from messaging.server import Binding

STATS_TIMEOUT = 5.0
CAPS_MARGIN = 1.0  # the call's deadline ends this long before the request's


class LibvirtCaller(BoundedCaller):
    """Host-level libvirt calls on ``libvirt-*`` threads, each holding a lease on the
    connection; a call libvirtd does not answer in time is ``LibvirtUnavailable``."""

    thread_prefix = "libvirt"

    def __init__(self, handle: LibvirtHandle, *, clock: Clock, max_outstanding: int = 1) -> None:
        super().__init__("host", clock=clock, max_outstanding=max_outstanding,
                         lease=handle.lease)

    def timeout_error(self, call: Call) -> Exception:
        return LibvirtUnavailable(
            reason=f"libvirtd did not answer {call.name} within {call.timeout:.1f} s")

    def busy_error(self, call: str, kind: str, pending: Call) -> Exception:
        return LibvirtUnavailable(
            reason=f"libvirtd has not answered {pending.name} for "
                   f"{time.monotonic() - pending.started:.1f} s")


class SharedCall:
    """One call of ``kind`` in flight at a time; concurrent requests get its future."""

    def __init__(self, caller: BoundedCaller, kind: str, fn: Callable[[], Any]) -> None:
        self._caller = caller
        self._kind = kind
        self._fn = fn
        self._lock = threading.Lock()
        self._future: Future[Any] | None = None

    def submit(self, timeout: float) -> Future[Any]:
        with self._lock:
            if self._future is None or self._future.done():
                self._future = self._caller.submit(self._kind, self._fn, timeout=timeout,
                                                   name=self._kind)
            return self._future


def bindings(
    *,
    stats: ServiceRef[HostStatsActor],
    last_stats: LastSample,
    udev: ServiceRef[UdevActor],
    libvirt_handle: LibvirtHandle,
    clock: Clock,
    state_dir: Path,
    extra_stats: Callable[[], dict[str, Any]],
    network_caps: Callable[[], dict[str, Any]] = dict,
) -> dict[str, Binding]:
    caller = LibvirtCaller(libvirt_handle, clock=clock)

    def read_capabilities() -> dict[str, Any]:
        conn = libvirt_handle.get()  # leased by the caller's thread
        try:
            found = caps.capabilities(conn, state_dir)
        except libvirt.libvirtError as e:
            raise libvirt_handle.translate(e) from e
        found.update(network_caps())  # networks, bridges, nics, bondings, vlans (netlink)
        return found

    capabilities = SharedCall(caller, "getCapabilities", read_capabilities)

    def ping(_params: dict[str, Any]) -> bool:
        return True

    def get_capabilities(_params: dict[str, Any]) -> Future[Any]:
        libvirt_handle.check()  # down or stalled: 101 at once
        return capabilities.submit(max(0.0, current_deadline().remaining() - CAPS_MARGIN))

    def get_stats(_params: dict[str, Any]) -> dict[str, Any]:
        stats.ref()  # ActorUnavailable (102) while the sampler is not running: no stale data
        sample = last_stats.get()
        taken = sample.pop("_at", None)
        if taken is not None:
            sample["sampleTime"] = round(taken, 3)
            sample["statsAge"] = round(max(0.0, time.monotonic() - taken), 3)
        sample.update(extra_stats())
        return sample

    def get_device_list(_params: dict[str, Any]) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = udev.proxy(UdevProxy).devices().get(
            timeout=current_deadline().clamp(STATS_TIMEOUT))
        return devices

    def get_hardware_info(_params: dict[str, Any]) -> dict[str, Any]:
        return caps.hardware_info()

    return {
        "Host.ping": Binding(ping, inline=True),
        "Host.getCapabilities": Binding(get_capabilities, inline=True),
        "Host.getStats": Binding(get_stats, inline=True),
        "Host.getHardwareInfo": Binding(get_hardware_info),
        "Host.getDeviceList": Binding(get_device_list),
    }
