"""Loop devices: expose a file as a real block device, refresh its size, find and list them.

``losetup`` does the attaching (``--find --show``, with ``--direct-io=on`` so that the page
cache is not used twice, falling back without it where the backing filesystem refuses
O_DIRECT). What is attached is read from ``/sys/block/loop*/loop/``, never from a cache of
ours, so the answer stays right across a daemon restart.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from actors.storage.command import run
from messaging.errors import StorageCommandError, StorageError

log = logging.getLogger(__name__)

LOSETUP = "losetup"
SYS_BLOCK = Path("/sys/block")
TIMEOUT = 30.0
ATTACH_ATTEMPTS = 5
"""``--find`` races with other attachers; a lost race (EBUSY) is retried this many times."""
_DELETED = " (deleted)"
DETACH_WAIT = 5.0
"""Seconds a detach waits for a device still held open by someone else to go."""


@dataclass(frozen=True)
class LoopDevice:
    device: str
    """``/dev/loopN``"""
    backing_file: str
    size: int
    """Bytes, as the kernel sees them now (changes after :func:`refresh`)."""
    direct_io: bool
    read_only: bool
    deleted: bool
    """The backing file was unlinked while attached."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _device(node: Path) -> LoopDevice | None:
    backing = _read(node / "loop" / "backing_file")
    if backing is None:
        return None
    deleted = backing.endswith(_DELETED)
    if deleted:
        backing = backing[: -len(_DELETED)]
    sectors = _read(node / "size") or "0"
    return LoopDevice(
        device=f"/dev/{node.name}",
        backing_file=backing,
        size=int(sectors) * 512,
        direct_io=_read(node / "loop" / "dio") == "1",
        read_only=_read(node / "ro") == "1",
        deleted=deleted,
    )


def list_devices(sys_block: Path = SYS_BLOCK) -> tuple[LoopDevice, ...]:
    """Every attached loop device, by device number."""
    nodes = [p for p in sys_block.glob("loop*") if p.name[4:].isdigit()]
    nodes.sort(key=lambda p: int(p.name[4:]))
    found = (_device(node) for node in nodes)
    return tuple(dev for dev in found if dev is not None)


def info(device: str, sys_block: Path = SYS_BLOCK) -> LoopDevice:
    """The loop device ``device``; :class:`StorageError` when it is not attached."""
    name = Path(device).name
    if not (name.startswith("loop") and name[4:].isdigit()):
        raise StorageError(reason=f"{device} is not a loop device")
    dev = _device(sys_block / name)
    if dev is None:
        raise StorageError(reason=f"loop device {device} is not attached")
    return dev


def find(path: str | os.PathLike[str], sys_block: Path = SYS_BLOCK) -> tuple[LoopDevice, ...]:
    """The loop devices whose backing file is ``path`` (symlinks resolved; none if unlinked)."""
    target = os.path.realpath(path)
    return tuple(d for d in list_devices(sys_block) if not d.deleted and d.backing_file == target)


def attach(path: str | os.PathLike[str], *, read_only: bool = False, direct_io: bool = True,
           timeout: float = TIMEOUT) -> str:
    """Attach the file ``path`` to a free loop device and return ``/dev/loopN``."""
    target = os.path.realpath(path)
    if not Path(target).is_file():
        raise StorageError(reason=f"cannot attach {target}: not a regular file")
    base = [LOSETUP, "--find", "--show"]
    if read_only:
        base.append("--read-only")
    deadline = time.monotonic() + timeout
    last: StorageCommandError | None = None
    for attempt in range(ATTACH_ATTEMPTS):
        args = [*base, "--direct-io=on"] if direct_io else base
        left = max(1.0, deadline - time.monotonic())
        try:
            device = run([*args, target], timeout=left).out.strip()
        except StorageCommandError as e:
            last = e
            reason = str(e.fields.get("reason", ""))
            if direct_io and "direct" in reason.lower():
                log.info("loop device for %s: O_DIRECT refused (%s), attaching buffered",
                         target, reason)
                direct_io = False
                continue
            if "busy" in reason.lower() and attempt + 1 < ATTACH_ATTEMPTS:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise
        log.info("attached %s to %s", target, device)
        return device
    raise last or StorageError(reason=f"cannot attach {target}: no free loop device")


def detach(device: str, *, timeout: float = TIMEOUT) -> None:
    """Detach ``device``; nothing to do when it is not attached any more."""
    name = Path(device).name
    if not (name.startswith("loop") and name[4:].isdigit()):
        raise StorageError(reason=f"{device} is not a loop device")
    if _read(SYS_BLOCK / name / "loop" / "backing_file") is None:
        log.debug("%s is already detached", device)
        return
    run([LOSETUP, "--detach", f"/dev/{name}"], timeout=timeout)
    # A device someone still has open (udev's blkid, another agent reading its label) is
    # only marked for auto-clear: wait until it is really free, so that a prepare right
    # after this cannot pick up a device about to vanish.
    deadline = time.monotonic() + DETACH_WAIT
    while _read(SYS_BLOCK / name / "loop" / "backing_file") is not None:
        if time.monotonic() >= deadline:
            log.warning("%s is still in use %g s after its detach: it goes when released",
                        device, DETACH_WAIT)
            return
        time.sleep(0.02)
    log.info("detached %s", device)


def detach_file(path: str | os.PathLike[str], *, timeout: float = TIMEOUT) -> int:
    """Detach every loop device backed by ``path``; return how many there were."""
    devices = find(path)
    for dev in devices:
        detach(dev.device, timeout=timeout)
    return len(devices)


def refresh(device: str, *, timeout: float = TIMEOUT) -> int:
    """Make the kernel re-read the backing file's size (``losetup -c``); the new size."""
    run([LOSETUP, "--set-capacity", device], timeout=timeout)
    return info(device).size
