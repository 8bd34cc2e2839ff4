"""The libvirt domain XML of a VM, built with ``xml.etree`` from :class:`VmParams`.

User values only ever become element text or attribute values, never markup. The vmParams are
stored as JSON in ``<metadata>`` under :data:`METADATA_NS`, so that an agent restarted while
its VMs run finds its own domains and their parameters again (:func:`parse_metadata`,
:func:`read_metadata`). The metadata element also names its ``owner`` (the agent that made
the domain: several agents may share one libvirtd, e.g. parallel tests) and the POSIX time
the VM ``started``.

Every VM gets the QEMU guest agent's virtio-serial channel (:data:`AGENT_CHANNEL`, see
:mod:`actors.vm.qga`) and a virtio balloon whose driver reports the guest's memory every
:data:`BALLOON_STATS_PERIOD` seconds (the agent asks for its own stats interval).

Device names (``vda``, ``hdc``, ``fda``...) follow the drives' order per bus
(:func:`disk_targets`); the stats and thin-provisioning code key disks by them.

The other builders return the small device XML that ``dom.updateDeviceFlags`` takes to change
CD-ROM/floppy media (:func:`change_media_xml`) and the VNC ticket
(:func:`graphics_ticket_xml`); both start from the live domain XML so that the device they
return matches the running one.
"""

from __future__ import annotations

import copy
import json
import secrets
import stat
import time
import xml.etree.ElementTree as ET  # the XML comes from our builder or from libvirtd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from actors.vm.params import Drive, Nic, VmParams

METADATA_NS = "http://vdsm-actors.invalid/vm/1"
METADATA_PREFIX = "vdsma"
ET.register_namespace(METADATA_PREFIX, METADATA_NS)

#: An instant long past: a display password valid until then lets nobody in until
#: VM.setTicket sets a real one.
EXPIRED = 1.0
LOCKABLE = ("vnc", "spice")  # the display types that take a password
AGENT_CHANNEL = "org.qemu.guest_agent.0"  # the QEMU guest agent's virtio-serial port
BALLOON_STATS_PERIOD = 5  # s: how often the guest's balloon driver reports its memory

_PREFIX = {"virtio": "vd", "ide": "hd", "scsi": "sd", "sata": "sd", "fdc": "fd"}
_FORMAT = {"cow": "qcow2", "raw": "raw"}


def is_block_device(path: str) -> bool:
    """A path under /dev (a loop device, an LV, a multipath map), or a link to a block
    device such as the storage layer's prepared-volume links, is a block device.

    Follows symlinks with stat(): call it off the actor thread (the XML is built there)."""
    if path.startswith("/dev/"):
        return True
    try:
        return stat.S_ISBLK(Path(path).stat().st_mode)
    except OSError:
        return False


def disk_targets(params: VmParams) -> dict[int, str]:
    """The target device name of each drive, by drive index, in the order of the drives."""
    counts: dict[str, int] = {}
    targets: dict[int, str] = {}
    for drive in params.drives:
        prefix = _PREFIX[drive.bus]
        number = counts.get(prefix, 0)
        counts[prefix] = number + 1
        targets[drive.index] = prefix + _letters(number)
    return targets


def _letters(number: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa, as libvirt and the kernel name disks."""
    text = ""
    number += 1
    while number:
        number, rest = divmod(number - 1, 26)
        text = chr(ord("a") + rest) + text
    return text


def build_domain_xml(
    params: VmParams,
    *,
    serial_log: str,
    drive_paths: Mapping[int, str] | None = None,
    vnc_listen: str = "127.0.0.1",
    owner: str = "",
    started: float | None = None,
    balloon_period: int = BALLOON_STATS_PERIOD,
) -> str:
    """The domain XML to hand ``createXML``/``defineXML``.

    ``serial_log`` is the file the guest's serial console is appended to. ``drive_paths``
    gives the prepared path of each drive named by volume ids (by drive index); a drive named
    by path uses its own. Raises ``ValueError`` when a volume drive has no prepared path.
    ``owner`` and ``started`` go into the metadata (see :func:`read_metadata`).
    ``balloon_period`` (s) is how often the guest's balloon driver reports its memory.
    """
    paths = dict(drive_paths or {})
    root = ET.Element("domain", type=params.emulator)
    _text(root, "name", params.name)
    _text(root, "uuid", params.vm_id)
    _text(root, "memory", str(params.mem_mib), unit="MiB")
    _text(root, "currentMemory", str(params.mem_mib), unit="MiB")
    _text(root, "vcpu", str(params.smp), placement="static")
    root.append(_os(params))
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    ET.SubElement(root, "clock", offset="utc")
    _text(root, "on_poweroff", "destroy")
    _text(root, "on_reboot", "restart")
    _text(root, "on_crash", "destroy")

    devices = ET.SubElement(root, "devices")
    targets = disk_targets(params)
    for drive in params.drives:
        path = drive.path if drive.volume is None else paths.get(drive.index)
        if path is None:
            raise ValueError(f"drive {drive.index} is a volume without a prepared path")
        devices.append(_disk(drive, path, targets[drive.index]))
    if any(d.bus == "scsi" for d in params.drives):
        ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for nic in params.nics:
        devices.append(_interface(nic))
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=serial_log, append="on")
    ET.SubElement(serial, "target", port="0")
    if params.display == "vnc":
        devices.append(_vnc(vnc_listen))
    devices.append(agent_channel())
    balloon = ET.SubElement(devices, "memballoon", model="virtio")
    ET.SubElement(balloon, "stats", period=str(max(1, balloon_period)))

    metadata = ET.SubElement(root, "metadata")
    metadata.append(_metadata_element(params, owner, started))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def agent_channel() -> ET.Element:
    """The guest agent's virtio-serial channel; libvirt makes (and connects to) its socket."""
    channel = ET.Element("channel", type="unix")
    ET.SubElement(channel, "target", type="virtio", name=AGENT_CHANNEL)
    return channel


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = text
    return element


def _os(params: VmParams) -> ET.Element:
    os_element = ET.Element("os")
    _text(os_element, "type", "hvm")
    if params.kernel is not None:
        _text(os_element, "kernel", params.kernel)
        if params.initrd is not None:
            _text(os_element, "initrd", params.initrd)
        if params.kernel_args is not None:
            _text(os_element, "cmdline", params.kernel_args)
    else:
        ET.SubElement(os_element, "boot", dev="hd")
    return os_element


def _disk(drive: Drive, path: str, target: str) -> ET.Element:
    block = is_block_device(path)
    disk = ET.Element("disk", type="block" if block else "file", device=drive.device)
    driver = ET.SubElement(disk, "driver", name="qemu", type=_FORMAT[drive.format])
    if drive.device == "disk":
        # Pause the guest on ENOSPC/EIO instead of failing its I/O: a thin volume is then
        # extended and the VM resumed. cache=none keeps shared storage coherent (migration).
        driver.set("cache", "none")
        driver.set("io", "native" if block else "threads")
        driver.set("error_policy", "stop")
    elif drive.device == "cdrom":
        driver.set("error_policy", "report")
    # A floppy gets no error policy: QEMU's floppy device has no rerror/werror property
    # (qemu 7.2 refuses to start: "Property 'floppy.rerror' not found").
    if path:
        ET.SubElement(disk, "source", {"dev" if block else "file": path})
    ET.SubElement(disk, "target", dev=target, bus=drive.bus)
    if drive.readonly or drive.device == "cdrom":
        ET.SubElement(disk, "readonly")
    if drive.serial:
        _text(disk, "serial", drive.serial)
    return disk


def _interface(nic: Nic) -> ET.Element:
    interface = ET.Element("interface", type="bridge")
    if nic.mac is not None:
        ET.SubElement(interface, "mac", address=nic.mac)
    ET.SubElement(interface, "source", bridge=nic.bridge)
    ET.SubElement(interface, "model", type=nic.model)
    return interface


def _vnc(listen: str) -> ET.Element:
    graphics = ET.Element("graphics", type="vnc", port="-1", autoport="yes", listen=listen)
    _lock(graphics)
    ET.SubElement(graphics, "listen", type="address", address=listen)
    return graphics


def display_info(domain_xml: str) -> tuple[dict[str, Any], ...]:
    """The VM stats' ``displayInfo``: ``{type, port, tlsPort, ipAddress}`` of each display of
    the live domain XML (ports as libvirt allocated them; -1 when none)."""
    displays = []
    for graphics in ET.fromstring(domain_xml).iterfind("devices/graphics"):
        listen = graphics.find("listen[@type='address']")
        address = listen.get("address") if listen is not None else None
        displays.append({
            "type": graphics.get("type", "?"),
            "port": _port(graphics.get("port")),
            "tlsPort": _port(graphics.get("tlsPort")),
            "ipAddress": address or graphics.get("listen") or "",
        })
    return tuple(displays)


def _port(text: str | None) -> int:
    try:
        return int(text) if text is not None else -1
    except ValueError:
        return -1


def _lock(graphics: ET.Element) -> None:
    graphics.set("passwd", secrets.token_urlsafe(6)[:8])
    graphics.set("passwdValidTo", _timestamp(EXPIRED))


def locked_display(domain_xml: str) -> str:
    """``domain_xml`` with every VNC/SPICE display locked: a random password that expired
    long ago, so that nobody gets in until ``VM.setTicket`` sets one. Every path that
    (re)defines a domain passes its final XML through here (after the hooks), whatever the
    XML came from (our builder, a hook, a saved state image). A display without a password
    is open; QEMU also cannot take a password later for a display started without one."""
    root = ET.fromstring(domain_xml)  # from our builder, a site hook or libvirtd
    displays = [g for g in root.iterfind("devices/graphics") if g.get("type") in LOCKABLE]
    if not displays:
        return domain_xml
    for graphics in displays:
        _lock(graphics)
    return ET.tostring(root, encoding="unicode")


def _timestamp(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))


# --- metadata ------------------------------------------------------------------------------


def _owner_attrs(owner: str, started: float | None) -> dict[str, str]:
    attrs = {"owner": owner} if owner else {}
    if started is not None:
        attrs["started"] = repr(round(started, 3))
    return attrs


def _metadata_element(params: VmParams, owner: str = "", started: float | None = None,
                      ) -> ET.Element:
    vm = ET.Element(f"{{{METADATA_NS}}}vm", _owner_attrs(owner, started))
    stored = ET.SubElement(vm, f"{{{METADATA_NS}}}params")
    stored.text = json.dumps(params.to_dict(), sort_keys=True)
    return vm


def metadata_xml(params: VmParams, *, owner: str = "", started: float | None = None) -> str:
    """The metadata element for ``dom.setMetadata(VIR_DOMAIN_METADATA_ELEMENT, xml,
    METADATA_PREFIX, METADATA_NS, flags)`` after the stored params change (e.g. a new CD).

    It carries no namespace: libvirt puts it in ``METADATA_NS`` itself (and refuses an
    element that declares one: "failed to create a new XML namespace").
    """
    vm = ET.Element("vm", _owner_attrs(owner, started))
    stored = ET.SubElement(vm, "params")
    stored.text = json.dumps(params.to_dict(), sort_keys=True)
    return ET.tostring(vm, encoding="unicode")


def parse_metadata(xml: str) -> dict[str, Any] | None:
    """The vmParams stored in a domain XML, or in the element that
    ``dom.metadata(VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)`` returns (libvirt hands that
    one back without its namespace: ``<vm><params>...``).

    None when a domain XML holds no metadata of ours (a domain this agent did not create).
    Raises ``ValueError`` when it does but the content is not a JSON object.
    """
    stored = read_metadata(xml)
    return None if stored is None else stored.params


@dataclass(frozen=True)
class StoredVm:
    """What a domain's metadata holds: the vmParams, who made the domain and when it started
    (POSIX time; None when not recorded)."""

    params: dict[str, Any]
    owner: str
    started: float | None


def read_metadata(xml: str) -> StoredVm | None:
    """Like :func:`parse_metadata`, with the owner and start time as well."""
    vm = _metadata_vm(ET.fromstring(xml))  # from libvirtd or our own builder
    if vm is None:
        return None
    try:
        started: float | None = float(vm.get("started", ""))
    except ValueError:
        started = None
    return StoredVm(_stored_params(vm), vm.get("owner", ""), started)


def _metadata_vm(root: ET.Element) -> ET.Element | None:
    tag = f"{{{METADATA_NS}}}vm"
    if root.tag in (tag, "vm"):
        return root
    return root.find(f"metadata/{tag}")


def with_metadata(domain_xml: str, params: VmParams, *, owner: str, started: float) -> str:
    """``domain_xml`` (e.g. from a saved state image) with our metadata replaced."""
    root = ET.fromstring(domain_xml)  # from libvirtd (a save image) or our own builder
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    old = _metadata_vm(root)
    if old is not None:
        metadata.remove(old)
    metadata.append(_metadata_element(params, owner, started))
    return ET.tostring(root, encoding="unicode")


def domain_uuid(domain_xml: str) -> str:
    """The ``<uuid>`` of a domain XML ("" when it has none)."""
    return (ET.fromstring(domain_xml).findtext("uuid") or "").strip().lower()


def _stored_params(vm: ET.Element) -> dict[str, Any]:
    stored = vm.find(f"{{{METADATA_NS}}}params")
    if stored is None:
        stored = vm.find("params")
    if stored is None or not stored.text:
        raise ValueError("the VM metadata has no params")
    try:
        params = json.loads(stored.text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the stored VM params are not JSON: {e}") from None
    if not isinstance(params, dict):
        raise ValueError("the stored VM params are not a JSON object")
    return params


# --- live device changes -------------------------------------------------------------------


def change_media_xml(domain_xml: str, device: Literal["cdrom", "floppy"], path: str) -> str:
    """The disk XML for ``dom.updateDeviceFlags`` that puts ``path`` in the first ``device``
    drive of the (live) domain XML, or ejects its media when ``path`` is empty.

    Raises ``LookupError`` when the domain has no such drive.
    """
    root = ET.fromstring(domain_xml)
    found = root.find(f"devices/disk[@device='{device}']")
    if found is None:
        raise LookupError(f"the VM has no {device} drive")
    disk = copy.deepcopy(found)
    for tag in ("source", "backingStore"):
        for child in disk.findall(tag):
            disk.remove(child)
    block = is_block_device(path)
    disk.set("type", "block" if block else "file")
    if path:
        source = ET.Element("source", {"dev" if block else "file": path})
        disk.insert(1 if disk.find("driver") is not None else 0, source)
    return ET.tostring(disk, encoding="unicode")


def graphics_ticket_xml(domain_xml: str, password: str, valid_to: float | None) -> str:
    """The graphics XML for ``dom.updateDeviceFlags`` that sets the VNC password.

    ``valid_to`` is a POSIX time (``time.time() + ttl``); None means no expiry. Raises
    ``LookupError`` when the (live) domain XML has no VNC display.
    """
    root = ET.fromstring(domain_xml)
    found = root.find("devices/graphics[@type='vnc']")
    if found is None:
        raise LookupError("the VM has no VNC display")
    graphics = copy.deepcopy(found)
    graphics.set("passwd", password)
    if valid_to is None:
        graphics.attrib.pop("passwdValidTo", None)
    else:
        graphics.set("passwdValidTo", _timestamp(valid_to))
    return ET.tostring(graphics, encoding="unicode")
