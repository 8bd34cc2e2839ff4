"""VmParams: built from schema-validated vmParams, semantic checks, wire round trip."""

from __future__ import annotations

from typing import Any

import pytest

from actors.vm.params import Drive, Nic, VmParams, VolumeRef
from messaging.errors import InvalidParams
from tests.vm.helpers import VM_ID, raw_params, validated

POOL = "11111111-1111-4111-8111-111111111111"
DOMAIN = "22222222-2222-4222-8222-222222222222"
IMAGE = "33333333-3333-4333-8333-333333333333"
VOLUME = "44444444-4444-4444-8444-444444444444"


def build(**overrides: Any) -> VmParams:
    return VmParams.from_dict(VM_ID, validated(raw_params(**overrides)))


def invalid(**overrides: Any) -> InvalidParams:
    with pytest.raises(InvalidParams) as err:
        build(**overrides)
    assert err.value.code == -32602
    assert err.value.param in err.value.message
    return err.value


@pytest.mark.timeout(5)
def test_full_params_become_typed_records() -> None:
    p = build(
        vmName="web1",
        memSize=256,
        smp=2,
        emulator="qemu",
        kernel="/boot/vmlinuz",
        initrd="/boot/initrd.img",
        kernelArgs="console=ttyS0",
        drives=[
            {"path": "/var/lib/images/a.qcow2", "format": "cow", "serial": "disk-1"},
            {"poolID": POOL, "domainID": DOMAIN, "imageID": IMAGE, "volumeID": VOLUME,
             "iface": "scsi", "thresholdMiB": 512},
            {"device": "cdrom", "path": ""},
            {"device": "floppy", "path": "/tmp/f.img", "readonly": True},
        ],
        nics=[{"bridge": "br0", "macAddr": "52:54:00:AA:BB:CC", "nicModel": "e1000"}],
        display="vnc",
        custom={"sap_agent": "true"},
    )
    assert (p.vm_id, p.name, p.mem_mib, p.smp, p.emulator) == (VM_ID, "web1", 256, 2, "qemu")
    assert (p.kernel, p.initrd, p.kernel_args) == ("/boot/vmlinuz", "/boot/initrd.img",
                                                   "console=ttyS0")
    assert p.drives[0] == Drive(0, "disk", "virtio", "cow", path="/var/lib/images/a.qcow2",
                                serial="disk-1")
    assert p.drives[1].volume == VolumeRef(POOL, DOMAIN, IMAGE, VOLUME)
    assert p.drives[1].path is None
    assert (p.drives[1].bus, p.drives[1].threshold_mib) == ("scsi", 512)
    assert p.drives[2].is_empty and p.drives[2].bus == "ide" and p.drives[2].removable
    assert (p.drives[3].bus, p.drives[3].readonly) == ("fdc", True)
    assert p.nics == (Nic("br0", "e1000", "52:54:00:aa:bb:cc"),)
    assert p.display == "vnc"
    assert dict(p.custom) == {"sap_agent": "true"}


@pytest.mark.timeout(5)
def test_defaults_from_the_schema() -> None:
    p = build()
    assert (p.smp, p.emulator, p.drives, p.nics, p.display) == (1, "kvm", (), (), "none")
    assert p.kernel is None and p.restore_state is None


@pytest.mark.timeout(5)
def test_to_dict_round_trips_and_passes_the_schema() -> None:
    p = build(
        kernel="/k",
        drives=[
            {"path": "/dev/loop3", "format": "cow", "thresholdMiB": 64},
            {"poolID": POOL, "domainID": DOMAIN, "imageID": IMAGE, "volumeID": VOLUME},
            {"device": "cdrom"},
        ],
        nics=[{"bridge": "br0"}],
        restoreState="/var/lib/save/x",
        custom={"a": "1"},
    )
    wire = p.to_dict()
    assert validated(wire) == wire  # already complete: the schema adds nothing
    assert VmParams.from_dict(VM_ID, wire) == p
    assert VmParams.from_dict(VM_ID, validated(wire)) == p


@pytest.mark.timeout(5)
def test_records_are_frozen() -> None:
    p = build(custom={"a": "1"})
    with pytest.raises(AttributeError):
        p.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.custom["b"] = "2"  # type: ignore[index]


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("overrides", "param", "words"),
    [
        ({"drives": [{"device": "disk"}]}, "vmParams.drives[0].path", "needs a path"),
        ({"drives": [{"path": "/a"}, {"path": ""}]}, "vmParams.drives[1].path", "needs a path"),
        (
            {"drives": [{"path": "/a", "poolID": POOL, "domainID": DOMAIN, "imageID": IMAGE,
                         "volumeID": VOLUME}]},
            "vmParams.drives[0].path",
            "either path or",
        ),
        (
            {"drives": [{"poolID": POOL, "domainID": DOMAIN, "volumeID": VOLUME}]},
            "vmParams.drives[0].imageID",
            "required with",
        ),
        ({"drives": [{"device": "floppy", "iface": "ide"}]}, "vmParams.drives[0].iface", "fdc"),
        ({"drives": [{"path": "/a", "iface": "fdc"}]}, "vmParams.drives[0].iface", "fdc"),
        ({"drives": [{"device": "cdrom", "iface": "virtio"}]}, "vmParams.drives[0].iface",
         "virtio"),
        ({"drives": [{"device": "cdrom", "thresholdMiB": 5}]},
         "vmParams.drives[0].thresholdMiB", "only a disk"),
        ({"drives": [{"path": f"/d{i}", "iface": "ide"} for i in range(5)]},
         "vmParams.drives[4].iface", "only 4 slots"),
        ({"drives": [{"device": "floppy"}] * 3}, "vmParams.drives[2].iface", "only 2 slots"),
        ({"drives": [{"path": "/same"}, {"path": "/same"}]}, "vmParams.drives[1].path",
         "drives[0]"),
        ({"initrd": "/boot/initrd"}, "vmParams.kernel", "initrd"),
        ({"kernelArgs": "quiet"}, "vmParams.kernel", "kernelArgs"),
        ({"nics": [{"bridge": "br0", "macAddr": "01:00:5e:00:00:01"}]},
         "vmParams.nics[0].macAddr", "multicast"),
        (
            {"nics": [{"bridge": "br0", "macAddr": "52:54:00:00:00:01"},
                      {"bridge": "br1", "macAddr": "52:54:00:00:00:01"}]},
            "vmParams.nics[1].macAddr",
            "nics[0]",
        ),
        ({"custom": {"bad-name": "x"}}, "vmParams.custom.bad-name", "identifier"),
        ({"minGuaranteedMemoryMb": 129}, "vmParams.minGuaranteedMemoryMb",
         "more than memSize"),
    ],
)
def test_semantic_errors_name_the_field(
    overrides: dict[str, Any], param: str, words: str
) -> None:
    error = invalid(**overrides)
    assert error.param == param
    assert words in error.reason


@pytest.mark.timeout(5)
def test_read_only_disks_may_share_a_path_and_cdroms_may_be_empty() -> None:
    p = build(
        drives=[
            {"path": "/base.img", "readonly": True},
            {"path": "/base.img", "readonly": True},
            {"device": "cdrom", "path": ""},
            {"device": "cdrom"},
        ]
    )
    assert [d.path for d in p.drives] == ["/base.img", "/base.img", "", ""]


@pytest.mark.timeout(5)
def test_with_media_changes_the_first_drive_of_the_kind() -> None:
    p = build(drives=[{"path": "/a"}, {"device": "cdrom"}, {"device": "cdrom", "path": "/x.iso"}])
    inserted = p.with_media("cdrom", "/y.iso")
    assert [d.path for d in inserted.drives] == ["/a", "/y.iso", "/x.iso"]
    assert [d.path for d in inserted.with_media("cdrom", "").drives] == ["/a", "", "/x.iso"]
    assert p.drives[1].path == ""  # the original is unchanged
    with pytest.raises(LookupError, match="floppy"):
        p.with_media("floppy", "/f.img")


@pytest.mark.timeout(5)
def test_without_restore_state() -> None:
    p = build(restoreState="/save/file")
    assert p.restore_state == "/save/file"
    assert p.without_restore_state().restore_state is None
    assert "restoreState" not in p.without_restore_state().to_dict()


@pytest.mark.timeout(5)
def test_a_memory_image_is_a_path_or_a_volume_handle() -> None:
    assert build(restoreState="/var/lib/vdsm/hibernation/x").restore_state == \
        "/var/lib/vdsm/hibernation/x"
    handle = f"{DOMAIN},{POOL},{IMAGE},{VOLUME}"
    p = build(restoreState=handle)
    assert p.restore_state == VolumeRef(POOL, DOMAIN, IMAGE, VOLUME)
    assert p.to_dict()["restoreState"] == handle
    assert VmParams.from_dict(VM_ID, p.to_dict()) == p
    assert build(restoreState=handle.upper()).restore_state == p.restore_state  # as Uuid does
    for bad in ("relative/x", f"{DOMAIN},{POOL},{IMAGE}", f"{DOMAIN},{POOL},{IMAGE},x",
                f"{DOMAIN[:-1]},{POOL},{IMAGE},{VOLUME}", f"{handle},{VOLUME}",
                f"{DOMAIN},{POOL},{IMAGE},{VOLUME}\0"):
        assert "vmParams.restoreState" in invalid(restoreState=bad).message


@pytest.mark.timeout(5)
def test_the_guaranteed_memory_is_kept_through_to_dict() -> None:
    params = VmParams.from_dict(VM_ID, validated(raw_params(minGuaranteedMemoryMb=96)))
    assert params.min_guaranteed_mib == 96
    again = VmParams.from_dict(VM_ID, validated(params.to_dict()))
    assert again.min_guaranteed_mib == 96  # a recovered VM keeps its balloon's floor
    assert VmParams.from_dict(VM_ID, validated(raw_params())).min_guaranteed_mib == 0
    assert "minGuaranteedMemoryMb" not in VmParams.from_dict(
        VM_ID, validated(raw_params())).to_dict()
