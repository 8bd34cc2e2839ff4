"""The private libvirtd of the tests holds none of the mounts other tests make meanwhile."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import wait_for
from tests.privlibvirt import PrivateLibvirtd

pytestmark = [pytest.mark.root, pytest.mark.libvirt, pytest.mark.timeout(90)]


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout


def test_a_private_libvirtd_keeps_no_copy_of_another_tests_mount(tmp_path: Path) -> None:
    image, mountpoint = tmp_path / "fs.img", tmp_path / "fs.mnt"
    with image.open("wb") as f:
        f.truncate(32 << 20)
    mountpoint.mkdir()
    device = sh("losetup", "--find", "--show", str(image)).strip()
    backing = Path("/sys/block") / Path(device).name / "loop" / "backing_file"
    private = PrivateLibvirtd(tmp_path / "libvirt")
    try:
        sh("mkfs.ext4", "-q", device)
        sh("mount", device, str(mountpoint))
        private.start()  # its namespace is made while the filesystem is mounted
        sh("umount", str(mountpoint))
        sh("losetup", "--detach", device)
        # Released at once: no copy of the mount in libvirtd's namespace keeps it busy.
        wait_for(lambda: not backing.exists(), 10, what=f"{device} to be released")
    finally:
        private.kill()
        subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)
        if backing.exists():
            subprocess.run(["losetup", "--detach", device], capture_output=True, check=False)
