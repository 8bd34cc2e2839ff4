"""Block devices as udev and sysfs describe them. Plain functions.

On a host with udevd the udev database gives vendor, model, serial and the filesystem type;
without it (containers, this test machine) the same facts come from sysfs, and an LVM
physical volume is recognised by reading its label (``LABELONE`` ... ``LVM2 001`` in one of
the first four sectors), as blkid does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyudev

SECTOR = 512
LABEL_SECTORS = 4
# Kinds of block device never offered as storage.
IGNORED_PREFIXES = ("ram", "zram", "sr", "fd", "dm-", "md")


def _attr(device: pyudev.Device, name: str) -> str:
    try:
        value = device.attributes.get(name)
    except (OSError, KeyError):
        return ""
    if value is None:
        return ""
    return value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else str(value)


def _sysfs(device: pyudev.Device, relative: str) -> str:
    try:
        return (Path(device.sys_path) / relative).read_text().strip()
    except OSError:
        return ""


def _has_holders(device: pyudev.Device) -> bool:
    holders = Path(device.sys_path, "holders")
    try:
        return any(holders.iterdir())
    except OSError:
        return False


def parse_lvm_label(head: bytes) -> str | None:
    """The PV UUID (dashed, as LVM prints it) if ``head`` holds an LVM2 label, else None."""
    for sector in range(LABEL_SECTORS):
        base = sector * SECTOR
        if head[base:base + 8] != b"LABELONE":
            continue
        if head[base + 24:base + 32] != b"LVM2 001":
            return None
        offset = int.from_bytes(head[base + 20:base + 24], "little")
        raw = head[base + offset:base + offset + 32].decode("ascii", "replace")
        if len(raw) != 32:
            return None
        parts = (raw[0:6], raw[6:10], raw[10:14], raw[14:18], raw[18:22], raw[22:26],
                 raw[26:32])
        return "-".join(parts)
    return None


def read_lvm_label(devnode: str) -> str | None:
    """Read the first sectors of ``devnode`` (may block on a dead path: call off-actor)."""
    fd = os.open(devnode, os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = os.pread(fd, SECTOR * LABEL_SECTORS, 0)
    finally:
        os.close(fd)
    return parse_lvm_label(head)


def is_candidate(device: pyudev.Device) -> bool:
    """Whole disks (and loop devices) with a size: what a storage domain can be built on."""
    name = device.sys_name
    if device.device_type != "disk" or name.startswith(IGNORED_PREFIXES):
        return False
    size = _attr(device, "size")
    return bool(size) and size != "0"


def describe(device: pyudev.Device) -> dict[str, Any]:
    """The getDeviceList entry of one device (without the PV probe)."""
    props = device.properties
    name = device.sys_name
    sectors = int(_attr(device, "size") or "0")
    vendor = props.get("ID_VENDOR") or _sysfs(device, "device/vendor")
    model = props.get("ID_MODEL") or _sysfs(device, "device/model")
    serial = props.get("ID_SERIAL_SHORT") or props.get("ID_SERIAL") \
        or _sysfs(device, "device/serial")
    wwid = props.get("ID_WWN") or _sysfs(device, "device/wwid") or _sysfs(device, "wwid")
    backing = _sysfs(device, "loop/backing_file")
    if name.startswith("loop"):
        vendor = vendor or "Linux"
        model = model or "loop"
        serial = serial or backing
    entry: dict[str, Any] = {
        "GUID": wwid or name,
        "devname": name,
        "devpath": device.device_node or f"/dev/{name}",
        "capacity": sectors * SECTOR,
        "logicalBlockSize": int(_sysfs(device, "queue/logical_block_size") or SECTOR),
        "vendor": vendor,
        "productID": model,
        "serial": serial,
        "devtype": "loop" if name.startswith("loop") else (props.get("ID_BUS") or "block"),
        "readonly": _attr(device, "ro") == "1",
        "status": "used" if _has_holders(device) else "free",
        "fsType": props.get("ID_FS_TYPE", ""),
    }
    if backing:
        entry["backingFile"] = backing
    pv = props.get("ID_FS_UUID") if props.get("ID_FS_TYPE") == "LVM2_member" else None
    if pv:
        entry["pvUUID"] = pv
    return entry
