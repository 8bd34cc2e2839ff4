"""The restore XML: built from a memory image's own XML (as libvirt 9 writes it for a VM of
this agent), with every host-facing value from the params; what the agent never defines is
refused. The real restore runs in tests/vm/test_api_paths.py."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from actors.vm import domxml
from actors.vm.params import VmParams
from actors.vm.restorexml import restore_xml
from tests.vm.helpers import VM_ID, raw_params, validated

pytestmark = pytest.mark.timeout(10)

# What saveImageGetXMLDesc(path, 0) returned here for a VM of ours (libvirt 9.0), trimmed.
IMAGE = f"""<domain type='qemu'>
  <name>old-name</name>
  <uuid>{VM_ID}</uuid>
  <metadata xmlns:vdsma="http://vdsm-actors.invalid/vm/1">
    <vdsma:vm owner="/var/lib/other" started="1.0"><vdsma:params>{{}}</vdsma:params></vdsma:vm>
  </metadata>
  <memory unit='KiB'>131072</memory>
  <vcpu placement='static'>1</vcpu>
  <resource><partition>/machine</partition></resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/old/vmlinuz</kernel>
    <initrd>/old/initrd.img</initrd>
    <cmdline>console=ttyS0</cmdline>
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/old/disk.qcow2'/>
      <backingStore type='file'><source file='/old/base.qcow2'/></backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw' error_policy='report'/>
      <target dev='hda' bus='ide'/>
      <readonly/>
    </disk>
    <controller type='ide' index='0'/>
    <controller type='pci' index='0' model='pci-root'/>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:56'/>
      <source bridge='br-old'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='/old/serial.log' append='on'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target>
    </serial>
    <console type='file'>
      <source path='/old/serial.log' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <input type='mouse' bus='ps2'/>
    <graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0'
              passwdValidTo='1970-01-01T00:00:01'>
      <listen type='address' address='0.0.0.0'/>
    </graphics>
    <audio id='1' type='none'/>
    <video><model type='cirrus' vram='16384' heads='1' primary='yes'/></video>
    <channel type='unix'>
      <source mode='bind'
              path='/var/lib/libvirt/qemu/channel/target/domain-3-old/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <controller type='virtio-serial' index='0'/>
    <memballoon model='virtio'><stats period='5'/></memballoon>
  </devices>
</domain>
"""
SERIAL = "/var/log/vdsm/vms/now.log"


def params(**overrides: object) -> VmParams:
    raw = raw_params(
        vmName="now-name", emulator="qemu", display="vnc", kernel="/new/vmlinuz",
        initrd="/new/initrd.img", kernelArgs="console=ttyS0 quiet",
        drives=[{"path": "/new/disk.qcow2", "format": "cow"}, {"device": "cdrom"}],
        nics=[{"bridge": "br-new"}], restoreState="/hib/x.save", custom={"team": "red"})
    raw.update(overrides)
    return VmParams.from_dict(VM_ID, validated(raw))


def build(image: str = IMAGE, p: VmParams | None = None) -> ET.Element:
    p = p or params()
    return ET.fromstring(restore_xml(image, p, serial_log=SERIAL, drive_paths={},
                                     owner="/var/lib/vdsm", started=time.time()))


def test_host_facing_values_come_from_the_params() -> None:
    root = build()
    assert root.findtext("name") == "now-name"
    assert root.find("resource") is None and root.find("devices/emulator") is None
    assert [root.findtext(f"os/{t}") for t in ("kernel", "initrd", "cmdline")] == [
        "/new/vmlinuz", "/new/initrd.img", "console=ttyS0 quiet"]
    disk = root.find("devices/disk[@device='disk']")
    assert disk is not None and disk.find("backingStore") is None
    assert [s.get("file") for s in disk.iter("source")] == ["/new/disk.qcow2"]
    assert root.find("devices/disk[@device='cdrom']/source") is None
    assert root.find("devices/interface/source").get("bridge") == "br-new"  # type: ignore[union-attr]
    assert root.find("devices/interface/mac").get("address") == "52:54:00:12:34:56"  # type: ignore[union-attr]
    assert {s.get("path") for s in root.iterfind("devices/*/source[@path]")} == {SERIAL}
    graphics = root.find("devices/graphics")
    assert graphics is not None
    assert graphics.get("listen") == "127.0.0.1" and graphics.get("passwd")
    assert graphics.get("passwdValidTo", "").startswith("1970")
    # The guest agent's channel keeps its port; libvirt makes a new socket for it.
    channel = root.find("devices/channel")
    assert channel is not None and channel.find("source") is None
    assert channel.find("target").attrib == {"type": "virtio", "name": "org.qemu.guest_agent.0"}  # type: ignore[union-attr]
    assert channel.find("address").get("port") == "1"  # type: ignore[union-attr]
    stored = domxml.read_metadata(ET.tostring(root, encoding="unicode"))
    assert stored is not None and stored.owner == "/var/lib/vdsm"
    assert stored.params["vmName"] == "now-name" and "restoreState" not in stored.params


@pytest.mark.parametrize(("old", "new", "what"), [
    ("<emulator>/usr/bin/qemu-system-x86_64</emulator>",
     "<hostdev mode='subsystem' type='usb'/>", "hostdev"),
    ("<input type='mouse' bus='ps2'/>",
     "<filesystem type='mount'><source dir='/'/><target dir='root'/></filesystem>",
     "filesystem"),
    ("<input type='mouse' bus='ps2'/>",
     "<input type='passthrough' bus='virtio'><source evdev='/dev/input/event0'/></input>",
     "passthrough"),
    ("<on_poweroff>destroy</on_poweroff>",
     "<on_poweroff>destroy</on_poweroff><qemu:commandline "
     "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
     "<qemu:arg value='-evil'/></qemu:commandline>", "commandline"),
    ("<boot dev='hd'/>", "<boot dev='hd'/><loader>/tmp/evil.fd</loader>", "loader"),
    ("<interface type='bridge'>", "<interface type='ethernet'>", "interface"),
    ("<serial type='file'>", "<serial type='unix'>", "serial"),
    ("<audio id='1' type='none'/>", "<audio id='1' type='file' path='/etc/shadow'/>",
     "/etc/shadow"),
    ("<graphics type='vnc'", "<graphics type='spice'", "spice"),
    ("name='org.qemu.guest_agent.0' state", "name='org.qemu.other.0' state", "channel"),
    ("<channel type='unix'>", "<channel type='pty'>", "channel"),
    ("<target dev='vda' bus='virtio'/>", "<target dev='vdz' bus='virtio'/>", "vdz"),
    ("<domain type='qemu'>", "<domain type='kvm'>", "qemu"),
    (f"<uuid>{VM_ID}</uuid>", "<uuid>11111111-1111-4111-8111-111111111111</uuid>",
     "another VM"),
    ("<memory unit='KiB'>131072</memory>",
     "<memory unit='KiB'>131072</memory><sysinfo type='smbios'/>", "sysinfo"),
])
def test_what_the_agent_never_defines_is_refused(old: str, new: str, what: str) -> None:
    assert old in IMAGE
    with pytest.raises(ValueError, match=what):
        build(IMAGE.replace(old, new))


def test_a_script_is_dropped_and_a_vnc_socket_refused() -> None:
    """Two ways a save image could name host files outside the known places."""
    image = IMAGE.replace("<source bridge='br-old'/>",
                          "<source bridge='br-old'/><script path='/tmp/evil'/>")
    assert build(image).find("devices/interface/script") is None
    with pytest.raises(ValueError, match="/tmp/vnc"):
        build(IMAGE.replace("<graphics type='vnc' port='-1'",
                            "<graphics type='vnc' socket='/tmp/vnc' port='-1'"))


def test_drives_must_match_the_params() -> None:
    with pytest.raises(ValueError, match="lacks the VM's drive hdb"):
        build(p=params(drives=[{"path": "/new/disk.qcow2", "format": "cow"},
                               {"device": "cdrom"}, {"device": "cdrom"}]))
    volume = {"poolID": VM_ID, "domainID": VM_ID, "imageID": VM_ID, "volumeID": VM_ID,
              "format": "cow"}
    root = ET.fromstring(restore_xml(
        IMAGE, params(drives=[volume, {"device": "cdrom"}]), serial_log=SERIAL,
        drive_paths={0: "/run/vdsm/storage/x"}, owner="o", started=1.0))
    assert root.find("devices/disk/source").get("file") == "/run/vdsm/storage/x"  # type: ignore[union-attr]
