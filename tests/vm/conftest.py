"""Fixtures of the VM tests: a libvirt connection, domain cleanup, the test guest, and a
vdsmd for the process-level tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests import guest as g
from tests.harness import Vdsmd
from tests.vm.agent import config as agent_config
from tests.vm.agent import started
from tests.vm.helpers import qemu_pid


def _quiet(_opaque: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; the tests check the exceptions."""


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    libvirt.registerErrorHandler(_quiet, None)
    c = libvirt.open("qemu:///system")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def domains(conn: libvirt.virConnect) -> Iterator[list[libvirt.virDomain]]:
    """Append every domain a test makes: each is destroyed (and undefined) in teardown, its
    qemu continued first in case the test stopped it."""
    made: list[libvirt.virDomain] = []
    yield made
    for dom in made:
        with contextlib.suppress(libvirt.libvirtError, OSError, ValueError):
            os.kill(qemu_pid(dom), signal.SIGCONT)
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isPersistent():
                dom.undefine()



# --- process-level VM tests (tests/vm/test_api_*.py) --------------------------------------


@pytest.fixture(scope="session")
def guest_image() -> g.GuestImage:
    """The tiny test guest, built (or found in its cache) once per session."""
    return g.build_guest()


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    path = tmp_path / "hooks"
    path.mkdir()
    return path


@pytest.fixture
def vm_settings() -> dict[str, Any]:
    """[vm] settings of the ``agent`` fixture's vdsmd (a test module may override this)."""
    return {}


@pytest.fixture
def agent(
    tmp_path: Path, hooks_dir: Path, conn: libvirt.virConnect, vm_settings: dict[str, Any]
) -> Iterator[Vdsmd]:
    """A vdsmd for VM tests; every domain it made is destroyed afterwards, even when it was
    killed or the test failed."""
    daemon = Vdsmd(tmp_path / "vdsmd", config=agent_config(hooks_dir, **vm_settings))
    with started(conn, daemon):
        yield daemon


def fill(path: Path, limit: int = 64 << 20) -> None:
    """Write ``path`` until its filesystem is full (ENOSPC), at most ``limit`` bytes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with pytest.raises(OSError, match="No space"):
            for _ in range(limit // 4096):
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs to hold the state directory of the agent in ``tmp_path / "vdsmd"``."""
    where = tmp_path / "vdsmd" / "state"
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], check=True,
                   timeout=30)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)
