"""Handlers of the Host.* verbs that belong to the host services."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from actors.directory import ServiceRef
from actors.host import caps
from actors.host.libvirtconn import LibvirtHandle
from actors.host.stats import HostStatsActor
from actors.host.udev import UdevActor
from messaging.server import Binding

STATS_TIMEOUT = 5.0


def bindings(
    *,
    stats: ServiceRef[HostStatsActor],
    udev: ServiceRef[UdevActor],
    libvirt_handle: LibvirtHandle,
    state_dir: Path,
    extra_stats: Callable[[], dict[str, Any]],
) -> dict[str, Binding]:
    def ping(_params: dict[str, Any]) -> bool:
        return True

    def get_capabilities(_params: dict[str, Any]) -> dict[str, Any]:
        conn = libvirt_handle.get()
        try:
            return caps.capabilities(conn, state_dir)
        except libvirt.libvirtError as e:
            raise libvirt_handle.translate(e) from e

    def get_stats(_params: dict[str, Any]) -> dict[str, Any]:
        sample: dict[str, Any] = stats.proxy().stats().get(timeout=STATS_TIMEOUT)
        sample.pop("_at", None)
        sample.update(extra_stats())
        return sample

    def get_device_list(_params: dict[str, Any]) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = udev.proxy().devices().get(timeout=STATS_TIMEOUT)
        return devices

    def get_hardware_info(_params: dict[str, Any]) -> dict[str, Any]:
        return caps.hardware_info()

    return {
        "Host.ping": Binding(ping, inline=True),
        "Host.getCapabilities": Binding(get_capabilities),
        "Host.getStats": Binding(get_stats),
        "Host.getHardwareInfo": Binding(get_hardware_info),
        "Host.getDeviceList": Binding(get_device_list),
    }
