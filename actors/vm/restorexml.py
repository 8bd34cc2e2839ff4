"""The domain XML a VM is restored with, made safe from the XML its memory image carries.

libvirt restores a memory image only with the devices it was saved with, so the restore XML
starts from the image's own (``saveImageGetXMLDesc``). That XML is data from a file, not the
agent's word: whatever names a host resource in it (a disk's file, the kernel, the serial
log, a NIC's bridge or script, the emulator binary, a VNC socket, the guest agent channel's
socket) is replaced by what the VM's params and the agent say now, exactly as at a fresh
start; what the agent never defines (host devices, shared directories, other channels,
extra namespaces such as
``qemu:commandline``, firmware files) makes the restore fail. The display is locked again
(:func:`~actors.vm.domxml.locked_display`): the image holds no password.

:func:`restore_xml` raises ``ValueError`` saying what the image holds that the agent will
not restore.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # the XML comes from libvirtd (a save image header)
from collections.abc import Mapping

from actors.vm import domxml
from actors.vm.params import VmParams

VNC_LISTEN = "127.0.0.1"
TOP_LEVEL = frozenset({
    "name", "uuid", "title", "description", "metadata", "memory", "currentMemory", "vcpu",
    "os", "features", "cpu", "clock", "on_poweroff", "on_reboot", "on_crash", "pm", "devices",
})
REGENERATED = frozenset({"resource", "seclabel"})  # libvirt fills its own defaults in
OS_CHILDREN = frozenset({"type", "kernel", "initrd", "cmdline", "boot"})
PLAIN_DEVICES = frozenset({"controller", "input", "video", "audio", "memballoon"})
INPUTS = frozenset({"mouse", "keyboard", "tablet"})
PATH_ATTRIBUTES = ("file", "path", "dir", "socket", "evdev")  # and <source dev=...>


def restore_xml(
    image_xml: str,
    params: VmParams,
    *,
    serial_log: str,
    drive_paths: Mapping[int, str],
    owner: str,
    started: float,
) -> str:
    root = ET.fromstring(image_xml)  # from libvirtd
    if root.tag != "domain" or root.get("type") != params.emulator:
        raise ValueError(f"it is not a {params.emulator} domain")
    if (root.findtext("uuid") or "").strip().lower() != params.vm_id:
        raise ValueError(f"it holds the state of another VM, not of {params.vm_id}")
    for child in list(root):
        if child.tag in REGENERATED:
            root.remove(child)
        elif child.tag not in TOP_LEVEL:
            raise ValueError(f"it holds <{child.tag}>, which the agent never defines")
    name = root.find("name")
    if name is not None:
        name.text = params.name
    metadata = root.find("metadata")
    if metadata is not None:
        root.remove(metadata)  # ours is written anew; nobody else's is restored
    _os(root, params)
    devices = root.find("devices")
    if devices is not None:
        _devices(devices, params, serial_log, drive_paths)
    allowed = {serial_log, *drive_paths.values(),
               *(d.path for d in params.drives if d.path)}
    _check_paths(root, allowed)
    xml = ET.tostring(root, encoding="unicode")
    xml = domxml.with_metadata(xml, params.without_restore_state(), owner=owner,
                               started=started)
    return domxml.locked_display(xml)


def _os(root: ET.Element, params: VmParams) -> None:
    os_element = root.find("os")
    if os_element is None:
        raise ValueError("it has no <os>")
    for child in list(os_element):
        if child.tag not in OS_CHILDREN:
            raise ValueError(f"it holds <os><{child.tag}>, which the agent never defines")
        if child.tag in ("kernel", "initrd", "cmdline"):
            os_element.remove(child)
    for tag, value in (("kernel", params.kernel), ("initrd", params.initrd),
                       ("cmdline", params.kernel_args)):
        if value is not None and params.kernel is not None:
            ET.SubElement(os_element, tag).text = value


def _devices(devices: ET.Element, params: VmParams, serial_log: str,
             drive_paths: Mapping[int, str]) -> None:
    by_index = {drive.index: drive for drive in params.drives}
    targets = {target: by_index[i] for i, target in domxml.disk_targets(params).items()}
    nics = list(params.nics)
    for device in list(devices):
        tag = device.tag
        if tag == "emulator":
            devices.remove(device)  # libvirt's default for the domain type
        elif tag == "disk":
            target = device.find("target")
            dev = target.get("dev", "") if target is not None else ""
            drive = targets.pop(dev, None)
            if drive is None or device.get("device") != drive.device:
                raise ValueError(f"its disk {dev or '?'} is not one of the VM's drives")
            path = drive.path if drive.volume is None else drive_paths.get(drive.index)
            _set_source(device, path or "")
        elif tag == "interface":
            if device.get("type") != "bridge" or not nics:
                raise ValueError("it has a network interface the VM's params do not have")
            nic = nics.pop(0)
            for child in list(device):
                if child.tag not in ("mac", "model", "address", "alias"):
                    device.remove(child)
            ET.SubElement(device, "source", bridge=nic.bridge)
        elif tag in ("serial", "console"):
            if device.get("type") != "file":
                raise ValueError(f"its {tag} is not a log file")
            for child in device.findall("source") + device.findall("log"):
                device.remove(child)
            ET.SubElement(device, "source", path=serial_log, append="on")
        elif tag == "graphics":
            if device.get("type") != "vnc":
                raise ValueError(f"it has a {device.get('type')} display")
            for child in device.findall("listen"):
                device.remove(child)
            device.set("listen", VNC_LISTEN)
            device.set("port", "-1")
            device.set("autoport", "yes")
            ET.SubElement(device, "listen", type="address", address=VNC_LISTEN)
        elif tag == "channel":
            _agent_channel(device)
        elif tag == "input" and device.get("type") not in INPUTS:
            raise ValueError(f"it has a {device.get('type')} input device")
        elif tag not in PLAIN_DEVICES:
            raise ValueError(f"it holds <{tag}>, which the agent never defines")
    if targets:
        raise ValueError(f"it lacks the VM's drive {sorted(targets)[0]}")


def _agent_channel(channel: ET.Element) -> None:
    """The guest agent's channel keeps its port; libvirt makes its socket anew."""
    target = channel.find("target")
    if channel.get("type") != "unix" or target is None or target.get("type") != "virtio" \
            or target.get("name") != domxml.AGENT_CHANNEL:
        raise ValueError("it has a channel the agent never defines")
    for child in list(channel):
        if child.tag not in ("target", "address", "alias"):
            channel.remove(child)
    target.attrib.pop("state", None)


def _set_source(disk: ET.Element, path: str) -> None:
    for tag in ("source", "backingStore"):
        for child in disk.findall(tag):
            disk.remove(child)
    block = domxml.is_block_device(path)
    disk.set("type", "block" if block else "file")
    if path:
        source = ET.Element("source", {"dev" if block else "file": path})
        disk.insert(1 if disk.find("driver") is not None else 0, source)


def _check_paths(root: ET.Element, allowed: set[str]) -> None:
    """Whatever is left that names a file must be one the agent put there."""
    for element in root.iter():
        if element.tag.startswith("{"):
            raise ValueError(f"it holds {element.tag}, which the agent never defines")
        names = (*PATH_ATTRIBUTES, "dev") if element.tag == "source" else PATH_ATTRIBUTES
        for attribute in names:
            value = element.get(attribute)
            if value is not None and value not in allowed:
                raise ValueError(f"its <{element.tag}> names {value!r}")
