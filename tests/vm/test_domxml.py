"""The domain XML builder, its metadata and the live-device XML (no libvirt needed)."""

from __future__ import annotations

import calendar
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from actors.vm import domxml
from actors.vm.params import VmParams
from tests.vm.helpers import VM_ID, raw_params, validated

POOL = "11111111-1111-4111-8111-111111111111"
DOMAIN = "22222222-2222-4222-8222-222222222222"
IMAGE = "33333333-3333-4333-8333-333333333333"
VOLUME = "44444444-4444-4444-8444-444444444444"


def params(**overrides: Any) -> VmParams:
    return VmParams.from_dict(VM_ID, validated(raw_params(**overrides)))


def build(p: VmParams, **kw: Any) -> ET.Element:
    kw.setdefault("serial_log", "/var/log/vdsm/vm.serial")
    return ET.fromstring(domxml.build_domain_xml(p, **kw))


def child(element: ET.Element, path: str) -> ET.Element:
    found = element.find(path)
    assert found is not None, f"no {path}"
    return found


def attr(element: ET.Element, path: str, name: str) -> str | None:
    return child(element, path).get(name)


def disk(root: ET.Element, target: str) -> ET.Element:
    found = root.find(f"devices/disk/target[@dev='{target}']/..")
    assert found is not None, f"no disk {target}"
    return found


@pytest.mark.timeout(5)
def test_domain_basics() -> None:
    p = params(vmName="web1", memSize=200, smp=2, emulator="qemu")
    root = build(p)
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == "web1"
    assert root.findtext("uuid") == VM_ID
    assert (root.findtext("memory"), attr(root, "memory", "unit")) == ("200", "MiB")
    assert root.findtext("vcpu") == "2"
    assert root.find("features/acpi") is not None
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("on_reboot") == "restart"
    assert root.findtext("on_crash") == "destroy"
    assert root.find("os/kernel") is None and attr(root, "os/boot", "dev") == "hd"
    serial = root.find("devices/serial[@type='file']/source")
    assert serial is not None and serial.get("path") == "/var/log/vdsm/vm.serial"
    assert root.find("devices/graphics") is None
    assert params(emulator="kvm").emulator == "kvm"
    assert build(params()).get("type") == "kvm"


@pytest.mark.timeout(5)
def test_every_vm_has_the_guest_agent_channel_and_a_reporting_balloon() -> None:
    root = build(params())
    channels = root.findall("devices/channel")
    assert [(c.get("type"), attr(c, "target", "type"), attr(c, "target", "name"))
            for c in channels] == [("unix", "virtio", "org.qemu.guest_agent.0")]
    assert channels[0].find("source") is None  # libvirt makes (and connects to) the socket
    assert attr(root, "devices/memballoon", "model") == "virtio"
    assert attr(root, "devices/memballoon/stats", "period") == "5"
    assert attr(build(params(), balloon_period=2), "devices/memballoon/stats", "period") == "2"


@pytest.mark.timeout(5)
def test_direct_kernel_boot() -> None:
    root = build(params(kernel="/k/vmlinuz", initrd="/k/initrd", kernelArgs="console=ttyS0 x=1"))
    assert root.findtext("os/kernel") == "/k/vmlinuz"
    assert root.findtext("os/initrd") == "/k/initrd"
    assert root.findtext("os/cmdline") == "console=ttyS0 x=1"
    assert root.find("os/boot") is None


@pytest.mark.timeout(5)
def test_disks_file_block_formats_and_buses() -> None:
    p = params(
        drives=[
            {"path": "/images/a.qcow2", "format": "cow", "serial": "s1"},
            {"path": "/dev/loop5", "format": "cow"},
            {"path": "/images/raw.img", "iface": "scsi", "readonly": True},
            {"path": "/images/b.img", "iface": "sata"},
            {"device": "cdrom"},
            {"device": "cdrom", "path": "/iso/x.iso", "iface": "sata"},
            {"device": "floppy", "path": "/f/floppy.img"},
            {"poolID": POOL, "domainID": DOMAIN, "imageID": IMAGE, "volumeID": VOLUME},
        ]
    )
    assert domxml.disk_targets(p) == {
        0: "vda", 1: "vdb", 2: "sda", 3: "sdb", 4: "hda", 5: "sdc", 6: "fda", 7: "vdc"
    }
    root = build(p, drive_paths={7: "/rhev/data-center/x/vol"})

    file_disk = disk(root, "vda")
    assert (file_disk.get("type"), file_disk.get("device")) == ("file", "disk")
    assert attr(file_disk, "source", "file") == "/images/a.qcow2"
    driver = file_disk.find("driver")
    assert driver is not None
    assert driver.attrib == {
        "name": "qemu", "type": "qcow2", "cache": "none", "io": "threads", "error_policy": "stop"
    }
    assert file_disk.findtext("serial") == "s1"
    assert attr(file_disk, "target", "bus") == "virtio"

    block = disk(root, "vdb")
    assert block.get("type") == "block"
    assert attr(block, "source", "dev") == "/dev/loop5"
    assert child(block, "driver").attrib == {
        "name": "qemu", "type": "qcow2", "cache": "none", "io": "native", "error_policy": "stop"
    }

    scsi = disk(root, "sda")
    assert attr(scsi, "driver", "type") == "raw"
    assert scsi.find("readonly") is not None
    assert attr(root, "devices/controller[@type='scsi']", "model") == "virtio-scsi"
    assert attr(disk(root, "sdb"), "target", "bus") == "sata"

    empty_cd = disk(root, "hda")
    assert empty_cd.get("device") == "cdrom" and empty_cd.find("source") is None
    assert empty_cd.find("readonly") is not None
    assert attr(empty_cd, "driver", "error_policy") == "report"
    assert attr(disk(root, "sdc"), "source", "file") == "/iso/x.iso"

    floppy = disk(root, "fda")
    assert floppy.get("device") == "floppy"
    assert attr(floppy, "target", "bus") == "fdc"
    assert floppy.find("readonly") is None
    assert attr(floppy, "driver", "error_policy") is None  # qemu's floppy has no rerror

    volume = disk(root, "vdc")
    assert attr(volume, "source", "file") == "/rhev/data-center/x/vol"


@pytest.mark.timeout(5)
def test_volume_drive_needs_its_prepared_path() -> None:
    p = params(drives=[{"poolID": POOL, "domainID": DOMAIN, "imageID": IMAGE, "volumeID": VOLUME}])
    with pytest.raises(ValueError, match="drive 0"):
        domxml.build_domain_xml(p, serial_log="/x")


@pytest.mark.timeout(5)
def test_many_disks_get_two_letter_names() -> None:
    p = params(drives=[{"path": f"/d/{i}"} for i in range(28)])
    targets = domxml.disk_targets(p)
    assert (targets[0], targets[25], targets[26], targets[27]) == ("vda", "vdz", "vdaa", "vdab")


@pytest.mark.timeout(5)
def test_nics_and_vnc() -> None:
    p = params(
        nics=[{"bridge": "br0", "macAddr": "52:54:00:12:34:56"}, {"bridge": "ovirtmgmt",
                                                                 "nicModel": "rtl8139"}],
        display="vnc",
    )
    root = build(p)
    first, second = root.findall("devices/interface")
    assert first.get("type") == "bridge"
    assert attr(first, "source", "bridge") == "br0"
    assert attr(first, "mac", "address") == "52:54:00:12:34:56"
    assert attr(first, "model", "type") == "virtio"
    assert second.find("mac") is None
    assert attr(second, "model", "type") == "rtl8139"
    graphics = root.find("devices/graphics")
    assert graphics is not None and graphics.get("type") == "vnc"
    assert graphics.get("listen") == "127.0.0.1"
    assert attr(graphics, "listen", "address") == "127.0.0.1"
    assert len(graphics.get("passwd", "")) == 8
    assert graphics.get("passwdValidTo") == "1970-01-01T00:00:01"  # nobody gets in yet
    assert attr(build(p, vnc_listen="192.0.2.1"), "devices/graphics", "listen") == "192.0.2.1"


@pytest.mark.timeout(5)
def test_hostile_values_stay_values() -> None:
    nasty = "/tmp/a'b\"c<d>&e]]>/f"
    p = params(
        kernel="/k",
        kernelArgs="x='1' </cmdline><evil/>",
        drives=[{"path": nasty}],
        custom={"note": "</metadata><devices/>"},
    )
    text = domxml.build_domain_xml(p, serial_log="/log/<x>")
    root = ET.fromstring(text)
    assert root.find("evil") is None and root.find("os/evil") is None
    assert root.findtext("os/cmdline") == "x='1' </cmdline><evil/>"
    assert attr(disk(root, "vda"), "source", "file") == nasty
    assert attr(root, "devices/serial/source", "path") == "/log/<x>"
    assert domxml.parse_metadata(text) == p.to_dict()


@pytest.mark.timeout(5)
def test_metadata_round_trip() -> None:
    p = params(drives=[{"path": "/a", "format": "cow"}, {"device": "cdrom"}], custom={"k": "v"})
    text = domxml.build_domain_xml(p, serial_log="/x")
    root = ET.fromstring(text)
    element = root.find(f"metadata/{{{domxml.METADATA_NS}}}vm")
    assert element is not None
    stored = domxml.parse_metadata(text)
    assert stored == p.to_dict()
    assert stored is not None
    assert VmParams.from_dict(VM_ID, stored) == p
    # The element alone, as dom.metadata(VIR_DOMAIN_METADATA_ELEMENT, NS) returns it:
    assert domxml.parse_metadata(domxml.metadata_xml(p)) == p.to_dict()
    changed = p.with_media("cdrom", "/new.iso")
    assert domxml.parse_metadata(domxml.metadata_xml(changed)) == changed.to_dict()


@pytest.mark.timeout(5)
def test_foreign_or_broken_metadata() -> None:
    assert domxml.parse_metadata("<domain type='qemu'><name>other</name></domain>") is None
    foreign = "<domain><metadata><x:vm xmlns:x='http://example.org/other'/></metadata></domain>"
    assert domxml.parse_metadata(foreign) is None
    ns = domxml.METADATA_NS
    with pytest.raises(ValueError, match="no params"):
        domxml.parse_metadata(f"<vm xmlns='{ns}'/>")
    with pytest.raises(ValueError, match="not JSON"):
        domxml.parse_metadata(f"<vm xmlns='{ns}'><params>{{nope</params></vm>")
    with pytest.raises(ValueError, match="not a JSON object"):
        domxml.parse_metadata(f"<vm xmlns='{ns}'><params>[1]</params></vm>")


LIVE = """<domain type='qemu' id='3'>
  <name>x</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='/a'/><target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw' error_policy='report'/>
      <source file='/old.iso' index='2'/>
      <backingStore/>
      <target dev='hda' bus='ide'/>
      <readonly/>
      <alias name='ide0-0-0'/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
  </devices>
</domain>"""


@pytest.mark.timeout(5)
def test_change_media_xml() -> None:
    inserted = ET.fromstring(domxml.change_media_xml(LIVE, "cdrom", "/new.iso"))
    assert inserted.tag == "disk" and inserted.get("device") == "cdrom"
    sources = inserted.findall("source")
    assert [s.attrib for s in sources] == [{"file": "/new.iso"}]
    assert inserted.find("backingStore") is None
    assert attr(inserted, "target", "dev") == "hda"
    assert inserted.find("readonly") is not None
    block = ET.fromstring(domxml.change_media_xml(LIVE, "cdrom", "/dev/sr0"))
    assert block.get("type") == "block"
    assert child(block, "source").attrib == {"dev": "/dev/sr0"}
    ejected = ET.fromstring(domxml.change_media_xml(LIVE, "cdrom", ""))
    assert ejected.find("source") is None and ejected.find("target") is not None
    with pytest.raises(LookupError, match="floppy"):
        domxml.change_media_xml(LIVE, "floppy", "/f.img")


@pytest.mark.timeout(5)
def test_graphics_ticket_xml() -> None:
    until = calendar.timegm((2031, 5, 6, 7, 8, 9))
    graphics = ET.fromstring(domxml.graphics_ticket_xml(LIVE, "s3cret", until))
    assert graphics.tag == "graphics"
    assert graphics.get("passwd") == "s3cret"
    assert graphics.get("passwdValidTo") == "2031-05-06T07:08:09"
    assert graphics.get("port") == "5900"  # the live device, unchanged otherwise
    forever = ET.fromstring(domxml.graphics_ticket_xml(LIVE, "pw", None))
    assert forever.get("passwdValidTo") is None
    with pytest.raises(LookupError, match="VNC"):
        domxml.graphics_ticket_xml("<domain><devices/></domain>", "pw", time.time())
