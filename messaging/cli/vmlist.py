"""``vdsm-client VM list``: the VMs of the host at a glance, from ``Host.getAllVmStats``.

One row per VM: name, id, status, CPU (user + system, percent of its vCPUs), memory (what
the guest has, MiB), display (type and address to connect to) and uptime. With ``-o json``
or ``-o yaml`` the same rows are printed as maps.
"""

from __future__ import annotations

from typing import Any

from .output import grid

COLUMNS = ("name", "id", "status", "cpu", "memory", "display", "uptime")


def uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def display(info: Any) -> str:
    """``vnc 127.0.0.1:5900`` for the first display of ``displayInfo``, else ``-``."""
    if not isinstance(info, list) or not info or not isinstance(info[0], dict):
        return "-"
    first = info[0]
    port = first.get("port")
    where = f" {first.get('ipAddress', '')}:{port}" if port not in (None, "", "-1") else ""
    return f"{first.get('type', '?')}{where}"


def row(stats: dict[str, Any]) -> dict[str, Any]:
    cpu = None
    if stats.get("status") not in (None, "Down"):
        cpu = round(float(stats.get("cpuUser", 0)) + float(stats.get("cpuSys", 0)), 1)
    memory = stats.get("memSize")
    if memory is None and stats.get("memCurrent"):
        memory = int(stats["memCurrent"]) // 1024
    return {"name": stats.get("vmName", ""), "id": stats.get("vmID", ""),
            "status": stats.get("status", "?"), "cpu": cpu, "memory": memory,
            "display": display(stats.get("displayInfo")),
            "uptime": _uptime(stats)}


def _uptime(stats: dict[str, Any]) -> float | None:
    """Seconds since the VM started: its last sample's elapsedTime plus the sample's age."""
    if stats.get("elapsedTime") is None or stats.get("status") == "Down":
        return None
    return round(float(stats["elapsedTime"]) + float(stats.get("statsAge", 0)), 1)


def rows(all_stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((row(s) for s in all_stats), key=lambda r: (r["name"], r["id"]))


def render(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no VMs"
    header = ["NAME", "ID", "STATUS", "CPU%", "MEMORY", "DISPLAY", "UPTIME"]
    body = [[r["name"], r["id"], r["status"], "-" if r["cpu"] is None else f"{r['cpu']:.1f}",
             "-" if r["memory"] is None else f"{r['memory']} MiB", r["display"],
             uptime(r["uptime"])] for r in entries]
    return grid(header, body)
