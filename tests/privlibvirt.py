"""A private libvirtd for tests that kill and restart libvirtd.

The system libvirtd serves every other test; killing it would break them. This one runs in
a private mount namespace (``unshare -m``) with its own /run/libvirt, /var/lib/libvirt,
/var/log/libvirt and /var/cache/libvirt bind-mounted from a temporary directory, so its
socket is ``<dir>/run/libvirt-sock`` and it shares no state with the system daemon.

A new mount namespace starts with a copy of every mount that exists at that moment, also
those of tests running in parallel (an ext4 on a loop device under their tmp dir): held by
the copy, such a filesystem would stay busy after its test unmounts it, and its loop device
would never be released. So the namespace first detaches every mount under /tmp and
/run/vdsm (lazily, in the namespace only): a private libvirtd needs none of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import libvirt

DIRS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}


# Detach (in the new namespace only) the mounts other tests made: deepest first.
FORGET_FOREIGN_MOUNTS = (
    "awk '$2 ~ \"^/tmp/|^/run/vdsm/\" {print $2}' /proc/self/mounts | sort -r"
    " | while read -r m; do umount -l \"$m\" 2>/dev/null; done"
)


def namespace_script(workdir: Path, *then: str) -> str:
    """The shell script run in the private mount namespace: forget other tests' mounts, bind
    the private directories, then run ``then``."""
    binds = [f"mount --bind {workdir / name} {target}" for name, target in DIRS.items()]
    return " && ".join([f"{{ {FORGET_FOREIGN_MOUNTS}; true; }}", *binds, *then])


class PrivateLibvirtd:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        for name in DIRS:
            (workdir / name).mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "run" / "libvirt-sock"
        self.uri = f"qemu+unix:///system?socket={self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        script = namespace_script(self.workdir,
                                  f"exec libvirtd -p {self.workdir / 'libvirtd.pid'}")
        log = (self.workdir / "libvirtd.log").open("ab")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"private libvirtd exited with {self.proc.returncode}")
            if self.socket.exists():
                try:
                    libvirt.open(self.uri).close()
                    return
                except libvirt.libvirtError:
                    pass
            time.sleep(0.1)
        raise TimeoutError("private libvirtd did not answer")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.socket.exists():
            self.socket.unlink()
