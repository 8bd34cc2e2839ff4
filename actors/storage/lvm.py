"""LVM commands: build them, run them, parse their JSON reports into records.

Every command gets a ``--config`` that limits scanning to the domain's devices (so that a
broken disk elsewhere on the host cannot stall us), turns off the per-command metadata
backups (the domain's VG metadata changes on every volume operation) and, on a kernel
without device-mapper, passes ``--driverloaded n``: LVM then edits metadata only, which is
enough for create/extend/remove/tag, while activation fails with a clear error.

Measured on a kernel without device-mapper (see ENVIRONMENT.md): pvcreate, vgcreate, vgs,
lvs, and with ``--driverloaded n`` lvcreate (even without ``-an``), lvextend, lvremove, tag
changes and deactivation work. Without ``--driverloaded n`` a plain ``lvcreate`` fails
("striped: Required device-mapper target(s) not detected") and so do ``lvchange -ay`` and
``--refresh``; with it, ``lvchange -ay`` exits 0 without activating anything, so
:class:`Lvm` refuses activation and refresh itself when ``activation`` is off.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from actors.storage.command import CommandResult, run
from messaging.errors import NoSpace, StorageCommandError, StorageError

log = logging.getLogger(__name__)

LVM = "lvm"
TIMEOUT = 60.0
PROC_MISC = Path("/proc/misc")
TAG_RE = re.compile(r"[A-Za-z0-9_+.\-/=!:&#]{1,1024}")
_NO_DM = ("device-mapper", "Required device-mapper target")
_LV_FIELDS = "lv_name,vg_name,lv_uuid,lv_size,lv_attr,lv_tags"
_VG_FIELDS = ("vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count,"
              "vg_tags,pv_count")


def device_mapper_available(proc_misc: Path = PROC_MISC) -> bool:
    """Whether this kernel has device-mapper (so that LVs can be activated)."""
    try:
        return any(line.split()[-1:] == ["device-mapper"]
                   for line in proc_misc.read_text().splitlines())
    except OSError:
        return False


def check_tag(tag: str) -> str:
    """``tag`` if LVM accepts it as a tag, else ValueError."""
    if TAG_RE.fullmatch(tag) is None or tag.startswith("-"):
        raise ValueError(f"not a valid LVM tag: {tag[:80]!r}")
    return tag


def _tag_args(add: Sequence[str], delete: Sequence[str]) -> list[str]:
    """The options of a ``vgchange``/``lvchange`` that deletes then adds tags (each checked)."""
    args: list[str] = []
    for tag in delete:
        args += ["--deltag", check_tag(tag)]
    for tag in add:
        args += ["--addtag", check_tag(tag)]
    return args


@dataclass(frozen=True)
class VgInfo:
    name: str
    uuid: str
    size: int
    free: int
    extent_size: int
    extent_count: int
    free_count: int
    tags: tuple[str, ...]
    pv_count: int


@dataclass(frozen=True)
class LvInfo:
    name: str
    vg_name: str
    uuid: str
    size: int
    attr: str
    tags: tuple[str, ...]

    @property
    def active(self) -> bool:
        return len(self.attr) > 4 and self.attr[4] == "a"

    @property
    def path(self) -> str:
        return f"/dev/{self.vg_name}/{self.name}"


def _tags(text: str) -> tuple[str, ...]:
    return tuple(t for t in text.split(",") if t)


def _report(result: CommandResult, kind: str) -> list[dict[str, str]]:
    try:
        rows: list[dict[str, str]] = []
        for report in json.loads(result.out)["report"]:
            rows.extend(report.get(kind, []))
        return rows
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError(reason=f"cannot parse the LVM {kind} report: {e!r}") from None


class Lvm:
    """LVM commands over ``devices`` (empty: the host's lvm.conf filter applies).

    ``activation`` None means "when this kernel has device-mapper".
    """

    def __init__(self, *, devices: Sequence[str] = (), activation: bool | None = None,
                 timeout: float = TIMEOUT) -> None:
        self.devices = tuple(devices)
        self.activation = device_mapper_available() if activation is None else activation
        self.timeout = timeout

    def with_devices(self, devices: Sequence[str]) -> Lvm:
        return Lvm(devices=devices, activation=self.activation, timeout=self.timeout)

    def config(self) -> str:
        parts = ["devices { use_devicesfile=0 "]
        if self.devices:
            accept = ", ".join(f'"a|^{re.escape(d)}$|"' for d in self.devices)
            parts.append(f'filter=[{accept}, "r|.*|"] ')
        parts.append("} global { use_lvmpolld=0 } backup { backup=0 archive=0 }")
        return "".join(parts)

    def command(self, verb: str, *args: str) -> list[str]:
        argv = [LVM, verb, "--config", self.config()]
        if not self.activation:
            argv += ["--driverloaded", "n"]
        return [*argv, *args]

    def _run(self, verb: str, *args: str, where: str = "") -> CommandResult:
        name = " ".join([f"lvm {verb}", *args])
        try:
            return run(self.command(verb, *args), timeout=self.timeout, name=name[:200],
                       env={"LVM_SUPPRESS_FD_WARNINGS": "1"})
        except StorageCommandError as e:
            reason = str(e.fields.get("reason", ""))
            if "insufficient free space" in reason or "Insufficient free space" in reason:
                raise NoSpace(where=where or name, reason=reason) from None
            if any(marker in reason for marker in _NO_DM):
                raise StorageCommandError(
                    command=name[:200], rc=e.fields.get("rc"),
                    reason=f"device-mapper is not available in this kernel ({reason[-200:]})",
                ) from None
            raise

    # --- physical volumes and volume groups ---------------------------------------------

    def pvcreate(self, devices: Sequence[str], *, metadata_size: int | None = None) -> None:
        args = ["--yes"]
        if metadata_size is not None:
            args += ["--metadatasize", f"{metadata_size}b"]
        self._run("pvcreate", *args, *devices)

    def pvremove(self, devices: Sequence[str]) -> None:
        self._run("pvremove", "--yes", *devices)

    def pvs(self, vg_name: str | None = None) -> tuple[tuple[str, str], ...]:
        """``(pv_name, vg_name)`` pairs, of one VG or all."""
        args = ["--reportformat", "json", "-o", "pv_name,vg_name"]
        if vg_name is not None:
            args += ["--select", f"vg_name={vg_name}"]
        rows = _report(self._run("pvs", *args), "pv")
        return tuple((r["pv_name"], r["vg_name"]) for r in rows)

    def vgcreate(self, name: str, devices: Sequence[str], *, extent_size: int = 128 << 20,
                 tags: Sequence[str] = ()) -> VgInfo:
        args = ["--physicalextentsize", f"{extent_size}b"]
        for tag in tags:
            args += ["--addtag", check_tag(tag)]
        self._run("vgcreate", *args, name, *devices, where=name)
        return self.vg(name)

    def vgremove(self, name: str) -> None:
        self._run("vgremove", "--force", name)

    def vgs(self, name: str | None = None) -> tuple[VgInfo, ...]:
        args = ["--reportformat", "json", "--units", "b", "--nosuffix", "-o", _VG_FIELDS]
        if name is not None:
            args.append(name)
        return tuple(
            VgInfo(
                name=r["vg_name"], uuid=r["vg_uuid"], size=int(r["vg_size"]),
                free=int(r["vg_free"]), extent_size=int(r["vg_extent_size"]),
                extent_count=int(r["vg_extent_count"]), free_count=int(r["vg_free_count"]),
                tags=_tags(r["vg_tags"]), pv_count=int(r["pv_count"]),
            )
            for r in _report(self._run("vgs", *args), "vg")
        )

    def vg(self, name: str) -> VgInfo:
        found = self.vgs(name)
        if len(found) != 1:
            raise StorageError(reason=f"volume group {name} not found")
        return found[0]

    def vg_tags(self, name: str, *, add: Sequence[str] = (), delete: Sequence[str] = ()) -> None:
        """Add and delete VG tags in one metadata commit (atomic)."""
        args = _tag_args(add, delete)
        if args:
            self._run("vgchange", *args, name)

    # --- logical volumes ----------------------------------------------------------------

    def lvs(self, vg_name: str, name: str | None = None) -> tuple[LvInfo, ...]:
        """The LVs of ``vg_name`` (only ``name`` if given; empty when it does not exist)."""
        args = ["--reportformat", "json", "--units", "b", "--nosuffix", "-o", _LV_FIELDS]
        if name is not None:
            args += ["--select", f"lv_name={name}"]
        rows = _report(self._run("lvs", *args, vg_name), "lv")
        return tuple(
            LvInfo(name=r["lv_name"], vg_name=r["vg_name"], uuid=r["lv_uuid"],
                   size=int(r["lv_size"]), attr=r["lv_attr"], tags=_tags(r["lv_tags"]))
            for r in rows
        )

    def lv(self, vg_name: str, name: str) -> LvInfo | None:
        found = self.lvs(vg_name, name)
        return found[0] if found else None

    def lvcreate(self, vg_name: str, name: str, size: int, *, tags: Sequence[str] = (),
                 activate: bool = False) -> LvInfo:
        """Create an LV of at least ``size`` bytes (rounded up to extents), not zeroed."""
        if activate:
            self._need_activation(f"create {vg_name}/{name} active")
        args = ["--name", name, "--size", f"{size}b", "--zero", "n", "--wipesignatures", "n",
                "--activate", "y" if activate else "n", "--yes"]
        for tag in tags:
            args += ["--addtag", check_tag(tag)]
        self._run("lvcreate", *args, vg_name, where=f"volume group {vg_name}")
        created = self.lv(vg_name, name)
        if created is None:
            raise StorageError(reason=f"lvcreate reported success but {vg_name}/{name} is absent")
        return created

    def lvextend(self, vg_name: str, name: str, size: int) -> None:
        """Grow the LV to at least ``size`` bytes; nothing when it is already that big."""
        current = self.lv(vg_name, name)
        if current is None:
            raise StorageError(reason=f"logical volume {vg_name}/{name} not found")
        if current.size >= size:
            return
        self._run("lvextend", "--size", f"{size}b", f"{vg_name}/{name}",
                  where=f"volume group {vg_name}")

    def _need_activation(self, what: str) -> None:
        # With --driverloaded n, lvchange -ay "succeeds" without activating anything.
        if not self.activation:
            raise StorageError(reason=f"cannot {what}: device-mapper is not available in "
                               "this kernel (LVs cannot be activated or refreshed)")

    def refresh(self, vg_name: str, name: str) -> None:
        """Make an active LV's mapping match its (extended) metadata."""
        self._need_activation(f"refresh {vg_name}/{name}")
        self._run("lvchange", "--refresh", f"{vg_name}/{name}")

    def activate(self, vg_name: str, names: Sequence[str]) -> None:
        if names:
            self._need_activation(f"activate {vg_name}/{', '.join(names)}")
            self._run("lvchange", "--activate", "y", *(f"{vg_name}/{n}" for n in names))

    def deactivate(self, vg_name: str, names: Sequence[str]) -> None:
        if names:
            self._run("lvchange", "--activate", "n", *(f"{vg_name}/{n}" for n in names))

    def lv_tags(self, vg_name: str, name: str, *, add: Sequence[str] = (),
                delete: Sequence[str] = ()) -> None:
        """Add and delete LV tags in one metadata commit (atomic)."""
        args = _tag_args(add, delete)
        if args:
            self._run("lvchange", *args, f"{vg_name}/{name}")

    def lvremove(self, vg_name: str, names: Sequence[str]) -> None:
        if names:
            self._run("lvremove", "--force", *(f"{vg_name}/{n}" for n in names))

