"""tools/setup-host is idempotent: run again on a prepared machine, it changes nothing."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.harness import TOP

pytestmark = [pytest.mark.timeout(300), pytest.mark.root]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pids(name: str) -> str:
    """The system daemon's pid (from its pid file: tests running in parallel start private
    libvirtd and virtlogd processes of their own, which come and go)."""
    try:
        return Path(f"/run/{name}.pid").read_text().strip()
    except OSError:
        return ""


def test_a_second_run_changes_nothing() -> None:
    qemu_conf = Path("/etc/libvirt/qemu.conf")
    before = (_digest(qemu_conf), _pids("libvirtd"), _pids("virtlogd"))
    done = subprocess.run([str(TOP / "tools" / "setup-host"), "--dev"], capture_output=True,
                          text=True, timeout=280, check=False, cwd=TOP)
    assert done.returncode == 0, done.stderr
    assert "installing" not in done.stderr
    assert "creating" not in done.stderr
    assert (_digest(qemu_conf), _pids("libvirtd"), _pids("virtlogd")) == before
