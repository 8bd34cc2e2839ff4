"""Network interfaces, found through udev (pyudev), with counters read from sysfs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyudev


@dataclass(frozen=True)
class Nic:
    name: str
    syspath: str
    kind: str  # "nic" (has a device), "bridge", "virtual"


def list_nics(context: pyudev.Context) -> list[Nic]:
    """All network interfaces but loopback."""
    nics = []
    for device in context.list_devices(subsystem="net"):
        name = device.sys_name
        if name == "lo":
            continue
        syspath = Path(device.sys_path)
        if (syspath / "bridge").is_dir():
            kind = "bridge"
        elif (syspath / "device").exists():
            kind = "nic"
        else:
            kind = "virtual"
        nics.append(Nic(name, device.sys_path, kind))
    return sorted(nics, key=lambda n: n.name)


@dataclass(frozen=True)
class NicCounters:
    rx_bytes: int
    tx_bytes: int
    state: str
    speed: int  # Mb/s, 0 when unknown


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def read_counters(nic: Nic) -> NicCounters | None:
    """Counters of one nic, or None if it vanished meanwhile."""
    base = Path(nic.syspath)
    try:
        rx = int((base / "statistics" / "rx_bytes").read_text())
        tx = int((base / "statistics" / "tx_bytes").read_text())
    except (OSError, ValueError):
        return None
    try:
        speed = max(0, int(_read(base / "speed", "0") or "0"))
    except ValueError:
        speed = 0
    return NicCounters(rx, tx, _read(base / "operstate", "unknown"), speed)


def bridge_ports(nic: Nic) -> list[str]:
    brif = Path(nic.syspath) / "brif"
    try:
        return sorted(p.name for p in brif.iterdir())
    except OSError:
        return []
