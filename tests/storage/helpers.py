"""Real storage for tests: loop devices, ext4 mounts and frozen filesystems, always cleaned up.

Every helper is a context manager whose ``finally`` undoes what it did (thaw, unmount,
detach), so a failing test leaves no loop device, mount or frozen filesystem behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

CMD_TIMEOUT = 30


def sh(*args: str, timeout: float = CMD_TIMEOUT, check: bool = True) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def sparse_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


@contextlib.contextmanager
def loop_device(path: Path) -> Iterator[str]:
    """``path`` attached to a loop device, detached at the end."""
    device = sh("losetup", "--find", "--show", str(path)).strip()
    try:
        yield device
    finally:
        detach(device)


def detach(device: str, wait: float = 10.0) -> None:
    """Detach ``device`` and wait until it is really gone.

    ``losetup --detach`` of a device that someone still has open (another vdsmd's udev actor
    reading its LVM label after a uevent, a lazily unmounted filesystem) only marks it for
    auto-clear; it goes when the last user lets go, which this waits for (bounded).
    """
    sh("losetup", "--detach", device, check=False)
    backing = Path("/sys/block") / Path(device).name / "loop" / "backing_file"
    deadline = time.monotonic() + wait
    while backing.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def unmount(mountpoint: Path) -> None:
    """Unmount, retrying a busy filesystem for a while before a lazy unmount."""
    for _attempt in range(20):
        result = subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=30,
                                check=False)
        if result.returncode == 0 or not is_mounted(mountpoint):
            return
        time.sleep(0.1)
    subprocess.run(["umount", "--lazy", str(mountpoint)], timeout=30, check=False)


def is_mounted(mountpoint: Path) -> bool:
    target = str(mountpoint.resolve())
    with Path("/proc/self/mounts").open() as f:
        return any(line.split()[1] == target for line in f)


@contextlib.contextmanager
def ext4(tmp: Path, size: int = 64 << 20, name: str = "fs") -> Iterator[Path]:
    """A fresh ext4 filesystem on a loop device, mounted at ``tmp/<name>.mnt``."""
    image = sparse_file(tmp / f"{name}.img", size)
    mountpoint = tmp / f"{name}.mnt"
    mountpoint.mkdir()
    with loop_device(image) as device:
        sh("mkfs.ext4", "-q", "-m", "0", device, timeout=60)
        sh("mount", device, str(mountpoint))
        try:
            yield mountpoint
        finally:
            unmount(mountpoint)


@contextlib.contextmanager
def frozen(mountpoint: Path) -> Iterator[None]:
    """The filesystem at ``mountpoint`` frozen (every write to it blocks) until the end."""
    sh("fsfreeze", "--freeze", str(mountpoint))
    try:
        yield
    finally:
        sh("fsfreeze", "--unfreeze", str(mountpoint), check=False)


def autoclear(device: str) -> bool:
    """Whether loop ``device`` is marked to detach itself once its last user closes it
    (what ``losetup --detach`` does to a device still in use)."""
    flag = Path("/sys/block") / Path(device).name / "loop" / "autoclear"
    try:
        return flag.read_text().strip() == "1"
    except OSError:
        return False


def loop_devices_of(directory: Path) -> list[str]:
    """Loop devices whose backing file lies under ``directory`` (for leak checks)."""
    found = []
    prefix = str(directory.resolve()) + "/"
    for node in Path("/sys/block").glob("loop*"):
        try:
            backing = (node / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(prefix):
            found.append(f"/dev/{node.name}")
    return found



@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``mountpoint`` (created), unmounted at the end."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint))
    try:
        yield mountpoint
    finally:
        unmount(mountpoint)


def fill(directory: Path, name: str = "filler") -> Path:
    """Fill the filesystem of ``directory`` with one file until it is full; that file."""
    path = directory / name
    chunk = b"\1" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(1 << 20):  # bounded: 4 GiB at most
            try:
                os.write(fd, chunk)
            except OSError:
                break
    finally:
        os.close(fd)
    return path
