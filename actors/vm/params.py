"""Typed VM parameters: frozen records built from the validated ``vmParams`` dict.

The API validates a request against ``messaging.schema.vm.VM_PARAMS`` (types, ranges, enums,
unknown members) and fills in defaults. :meth:`VmParams.from_dict` adds the checks that a type
schema cannot express (a drive names its media either by path or by four volume ids; a disk
needs media, a CD-ROM may be empty; a floppy sits on the ``fdc`` bus; an initrd needs a
kernel; ...), raising :class:`~messaging.errors.InvalidParams` with the dotted path of the
offending value, e.g. ``vmParams.drives[1].path``.

:meth:`VmParams.to_dict` gives back the wire form (the same keys as vmParams), which the domain
XML stores in its metadata; ``VmParams.from_dict(vm_id, p.to_dict()) == p`` always holds.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, cast

from messaging.errors import InvalidParams

DeviceKind = Literal["disk", "cdrom", "floppy"]
Bus = Literal["virtio", "ide", "scsi", "sata", "fdc"]
DriveFormat = Literal["cow", "raw"]
Emulator = Literal["kvm", "qemu"]

ROOT = "vmParams"
VOLUME_KEYS = ("poolID", "domainID", "imageID", "volumeID")

# Slots of the buses whose size is fixed on the i440fx machine libvirt picks by default.
BUS_SLOTS: Mapping[str, int] = MappingProxyType({"ide": 4, "fdc": 2})
DEFAULT_BUS: Mapping[str, Bus] = MappingProxyType(
    {"disk": "virtio", "cdrom": "ide", "floppy": "fdc"}
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters XML 1.0 cannot carry (libvirt's parser refuses the domain XML), lone surrogates
# included; and control characters, which a kernel command line must not hold either.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_NUL = re.compile("\x00")


@dataclass(frozen=True)
class VolumeRef:
    """A volume in the shared storage, resolved to a path by the storage pool."""

    pool_id: str
    domain_id: str
    image_id: str
    volume_id: str

    @property
    def handle(self) -> str:
        """The volume as a memory image handle (vdsm's order: sd, sp, image, volume)."""
        return ",".join((self.domain_id, self.pool_id, self.image_id, self.volume_id))


#: Where a memory image is: a path (of the hibernation directory) or a storage volume.
MemoryImage = str | VolumeRef


def memory_image(text: str, where: str) -> MemoryImage:
    """Parse ``hiberVolHandle``/``restoreState``: an absolute path, or a volume handle
    ``sdUUID,spUUID,imgUUID,volUUID`` (vdsm's order) that storage prepares."""
    if text.startswith("/"):
        return text
    parts = text.split(",")
    ids = []
    for part in parts:
        try:
            ids.append(str(uuid.UUID(part)))
        except ValueError:
            ids.append("")
    if len(parts) != 4 or not all(i == p.lower() for i, p in zip(ids, parts, strict=True)):
        raise InvalidParams(where, f"{text[:120]!r} is neither an absolute path nor a volume "
                                   "handle 'sdUUID,spUUID,imgUUID,volUUID'")
    sd, sp, img, vol = ids
    return VolumeRef(pool_id=sp, domain_id=sd, image_id=img, volume_id=vol)


@dataclass(frozen=True)
class Drive:
    """One entry of ``vmParams.drives``.

    Exactly one of ``path`` and ``volume`` is set. ``path == ""`` is an empty CD-ROM or floppy
    drive (no media). ``index`` is the position in ``vmParams.drives``.
    """

    index: int
    device: DeviceKind
    bus: Bus
    format: DriveFormat
    path: str | None = None
    volume: VolumeRef | None = None
    readonly: bool = False
    serial: str | None = None
    threshold_mib: int | None = None

    @property
    def is_empty(self) -> bool:
        """A removable drive without media."""
        return self.path == ""

    @property
    def removable(self) -> bool:
        return self.device != "disk"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.volume is not None:
            out.update(
                poolID=self.volume.pool_id,
                domainID=self.volume.domain_id,
                imageID=self.volume.image_id,
                volumeID=self.volume.volume_id,
            )
        else:
            out["path"] = self.path
        out["format"] = self.format
        out["iface"] = self.bus
        out["device"] = self.device
        out["readonly"] = self.readonly
        if self.serial is not None:
            out["serial"] = self.serial
        if self.threshold_mib is not None:
            out["thresholdMiB"] = self.threshold_mib
        return out


@dataclass(frozen=True)
class Nic:
    """One entry of ``vmParams.nics``: a NIC on a Linux bridge. ``mac`` None: libvirt picks."""

    bridge: str
    model: str = "virtio"
    mac: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bridge": self.bridge, "nicModel": self.model}
        if self.mac is not None:
            out["macAddr"] = self.mac
        return out


@dataclass(frozen=True)
class VmParams:
    """The parameters of one VM. ``vm_id`` is the VM's UUID (also the libvirt domain UUID)."""

    vm_id: str
    name: str
    mem_mib: int
    smp: int = 1
    emulator: Emulator = "kvm"
    kernel: str | None = None
    initrd: str | None = None
    kernel_args: str | None = None
    drives: tuple[Drive, ...] = ()
    nics: tuple[Nic, ...] = ()
    display: Literal["vnc", "none"] = "none"
    restore_state: MemoryImage | None = None
    custom: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    min_guaranteed_mib: int = 0  # the balloon never takes the guest below this

    @classmethod
    def from_dict(cls, vm_id: str, params: Mapping[str, Any]) -> VmParams:
        """Build from a vmParams dict already validated by the schema; check its semantics."""
        _check_text(params, ROOT)
        drives = tuple(_drive(i, d) for i, d in enumerate(params.get("drives", ())))
        _check_drives(drives)
        nics = tuple(_nic(i, n) for i, n in enumerate(params.get("nics", ())))
        _check_nics(nics)
        kernel = params.get("kernel")
        for key in ("initrd", "kernelArgs"):
            if params.get(key) and not kernel:
                raise InvalidParams(f"{ROOT}.kernel", f"required when {key} is given")
        guaranteed = int(params.get("minGuaranteedMemoryMb", 0))
        if guaranteed > params["memSize"]:
            raise InvalidParams(f"{ROOT}.minGuaranteedMemoryMb",
                                f"{guaranteed} MiB is more than memSize ({params['memSize']} MiB)")
        custom = dict(params.get("custom", {}))
        for key in custom:
            if _ENV_NAME.fullmatch(key) is None:
                raise InvalidParams(
                    f"{ROOT}.custom.{key}", "a custom property name must be a shell identifier"
                )
        return cls(
            vm_id=vm_id,
            name=params["vmName"],
            mem_mib=params["memSize"],
            smp=params.get("smp", 1),
            emulator=params.get("emulator", "kvm"),
            kernel=kernel,
            initrd=params.get("initrd"),
            kernel_args=params.get("kernelArgs"),
            drives=drives,
            nics=nics,
            display=params.get("display", "none"),
            restore_state=(None if params.get("restoreState") is None
                           else memory_image(params["restoreState"], f"{ROOT}.restoreState")),
            custom=MappingProxyType(custom),
            min_guaranteed_mib=guaranteed,
        )

    def to_dict(self) -> dict[str, Any]:
        """The wire form (vmParams keys): what the domain metadata stores."""
        out: dict[str, Any] = {
            "vmName": self.name,
            "memSize": self.mem_mib,
            "smp": self.smp,
            "emulator": self.emulator,
        }
        for key, value in (
            ("kernel", self.kernel),
            ("initrd", self.initrd),
            ("kernelArgs", self.kernel_args),
        ):
            if value is not None:
                out[key] = value
        out["drives"] = [d.to_dict() for d in self.drives]
        out["nics"] = [n.to_dict() for n in self.nics]
        out["display"] = self.display
        if isinstance(self.restore_state, VolumeRef):
            out["restoreState"] = self.restore_state.handle
        elif self.restore_state is not None:
            out["restoreState"] = self.restore_state
        out["custom"] = dict(self.custom)
        if self.min_guaranteed_mib:
            out["minGuaranteedMemoryMb"] = self.min_guaranteed_mib
        return out

    def removable(self, device: Literal["cdrom", "floppy"]) -> Drive | None:
        """The first drive of that kind (the one VM.changeCD / VM.changeFloppy acts on)."""
        return next((d for d in self.drives if d.device == device), None)

    def with_media(self, device: Literal["cdrom", "floppy"], path: str) -> VmParams:
        """A copy whose first ``device`` drive holds ``path`` ("" = ejected).

        Raises ``LookupError`` when the VM has no such drive.
        """
        drive = self.removable(device)
        if drive is None:
            raise LookupError(f"the VM has no {device} drive")
        changed = replace(drive, path=path, volume=None)
        drives = tuple(changed if d.index == drive.index else d for d in self.drives)
        return replace(self, drives=drives)

    def without_restore_state(self) -> VmParams:
        """A copy to store once a restore is done (a restart must not restore again)."""
        return replace(self, restore_state=None)


def check_plain_text(value: str, where: str) -> str:
    """``value`` if it holds no control character (e.g. a display password, which becomes
    an XML attribute); InvalidParams naming ``where`` otherwise."""
    found = _CONTROL.search(value) or _NOT_XML.search(value)
    if found is not None:
        raise InvalidParams(where, f"character {found.group()!r} at offset {found.start()} "
                                   "is not allowed here")
    return value


def _check_text(value: Any, where: str) -> None:
    """Refuse text that libvirt's XML or the kernel cannot take, wherever it is in vmParams:
    NUL and XML-invalid characters anywhere, any control character in ``kernelArgs``. A
    custom property only becomes an environment variable (and JSON): only NUL is refused."""
    if isinstance(value, str):
        if where.startswith(f"{ROOT}.custom."):
            pattern = _NUL
        elif where == f"{ROOT}.kernelArgs":
            pattern = _CONTROL
        else:
            pattern = _NOT_XML
        found = pattern.search(value)
        if found is not None:
            raise InvalidParams(where, f"character {found.group()!r} at offset "
                                       f"{found.start()} is not allowed here")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_text(item, f"{where}[{index}]")


def _drive(index: int, spec: Mapping[str, Any]) -> Drive:
    where = f"{ROOT}.drives[{index}]"
    device = cast(DeviceKind, spec.get("device", "disk"))
    ids = {key: spec[key] for key in VOLUME_KEYS if spec.get(key)}
    path = spec.get("path")
    volume: VolumeRef | None = None
    if ids:
        if path:
            raise InvalidParams(f"{where}.path", "give either path or the four volume ids")
        missing = [key for key in VOLUME_KEYS if key not in ids]
        if missing:
            raise InvalidParams(
                f"{where}.{missing[0]}", f"required with {', '.join(sorted(ids))}"
            )
        volume = VolumeRef(ids["poolID"], ids["domainID"], ids["imageID"], ids["volumeID"])
        path = None
    elif path is None or (path == "" and device == "disk"):
        if device == "disk":
            raise InvalidParams(f"{where}.path", "a disk needs a path or the four volume ids")
        path = ""
    bus = cast(Bus, spec.get("iface") or DEFAULT_BUS[device])
    if (device == "floppy") != (bus == "fdc"):
        raise InvalidParams(f"{where}.iface", "a floppy drive and only it sits on the fdc bus")
    if device == "cdrom" and bus == "virtio":
        raise InvalidParams(f"{where}.iface", "a cdrom cannot sit on the virtio bus")
    threshold = spec.get("thresholdMiB")
    if threshold is not None and device != "disk":
        raise InvalidParams(f"{where}.thresholdMiB", "only a disk can have a threshold")
    return Drive(
        index=index,
        device=device,
        bus=bus,
        format=cast(DriveFormat, spec.get("format", "raw")),
        path=path,
        volume=volume,
        readonly=bool(spec.get("readonly", False)),
        serial=spec.get("serial"),
        threshold_mib=threshold,
    )


def _check_drives(drives: tuple[Drive, ...]) -> None:
    used: dict[str, int] = {}
    writers: dict[str, int] = {}
    for drive in drives:
        where = f"{ROOT}.drives[{drive.index}]"
        used[drive.bus] = used.get(drive.bus, 0) + 1
        slots = BUS_SLOTS.get(drive.bus)
        if slots is not None and used[drive.bus] > slots:
            raise InvalidParams(f"{where}.iface", f"the {drive.bus} bus has only {slots} slots")
        if drive.path and drive.device == "disk" and not drive.readonly:
            if drive.path in writers:
                raise InvalidParams(
                    f"{where}.path", f"already used by drives[{writers[drive.path]}]"
                )
            writers[drive.path] = drive.index


def _nic(index: int, spec: Mapping[str, Any]) -> Nic:
    mac = spec.get("macAddr")
    if mac is not None:
        mac = mac.lower()
        if int(mac[:2], 16) & 1:
            raise InvalidParams(f"{ROOT}.nics[{index}].macAddr", "a multicast MAC address")
    return Nic(bridge=spec["bridge"], model=spec.get("nicModel", "virtio"), mac=mac)


def _check_nics(nics: tuple[Nic, ...]) -> None:
    seen: dict[str, int] = {}
    for index, nic in enumerate(nics):
        if nic.mac is None:
            continue
        if nic.mac in seen:
            raise InvalidParams(
                f"{ROOT}.nics[{index}].macAddr", f"already used by nics[{seen[nic.mac]}]"
            )
        seen[nic.mac] = index
