"""Host capabilities, as libvirt and the kernel see them. Plain functions.

The network part (networks, bridges, nics, bondings, vlans) comes from
``actors.host.network.caps``, merged in by the verb."""

from __future__ import annotations

import os
import platform
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path
from typing import Any

import libvirt

from actors.host import procfs
from actors.hostuuid import host_uuid


def _version_string(number: int) -> str:
    major, rest = divmod(number, 1_000_000)
    minor, micro = divmod(rest, 1000)
    return f"{major}.{minor}.{micro}"


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def emulators(conn: libvirt.virConnect) -> list[str]:
    """Domain types libvirt offers for x86_64 guests: 'kvm' (if /dev/kvm works), 'qemu'."""
    root = ET.fromstring(conn.getCapabilities())
    types: set[str] = set()
    for guest in root.iter("guest"):
        for domain in guest.iter("domain"):
            kind = domain.get("type")
            if kind:
                types.add(kind)
    found: list[str] = [t for t in ("kvm", "qemu") if t in types]
    if "kvm" in found and not kvm_usable():
        found.remove("kvm")
    return found


def agent_version() -> str:
    try:
        return metadata.version("vdsm-actors")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def capabilities(conn: libvirt.virConnect, state_dir: Path) -> dict[str, Any]:
    cpu = procfs.read_cpu_identity()
    mem = procfs.read_meminfo()
    return {
        "hostUUID": host_uuid(state_dir),
        "hostname": platform.node(),
        "cpuCores": cpu.cores,
        "cpuSockets": cpu.sockets,
        "cpuThreads": cpu.threads,
        "cpuModel": cpu.model,
        "cpuFlags": ",".join(cpu.flags),
        "memSize": mem.get("MemTotal", 0) // 1024,
        "kvmEnabled": kvm_usable(),
        "emulators": emulators(conn),
        "libvirtVersion": _version_string(conn.getLibVersion()),
        "qemuVersion": _version_string(conn.getVersion()),
        "kernelVersion": platform.release(),
        "operatingSystem": _os_release(),
        "version": agent_version(),
    }


def _os_release() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key in ("ID", "VERSION_ID", "PRETTY_NAME"):
                info[key.lower()] = value.strip('"')
    except OSError:
        pass
    return info


def hardware_info() -> dict[str, str]:
    """DMI identity of the machine (empty strings where the kernel does not tell)."""
    dmi = Path("/sys/class/dmi/id")
    names = {
        "systemManufacturer": "sys_vendor",
        "systemProductName": "product_name",
        "systemVersion": "product_version",
        "systemSerialNumber": "product_serial",
        "systemUUID": "product_uuid",
        "systemFamily": "product_family",
    }
    info = {}
    for key, filename in names.items():
        try:
            info[key] = (dmi / filename).read_text().strip()
        except OSError:
            info[key] = ""
    return info
