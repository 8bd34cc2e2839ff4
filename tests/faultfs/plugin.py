"""The ``faultfs`` pytest fixture (registered by ``tests/conftest.py``'s ``pytest_plugins``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultfs.mounting import FaultFSMount, faultfs_mount


def fuse_missing() -> str:
    """Why faultfs cannot run here ('' when it can)."""
    if os.geteuid() != 0:
        return "faultfs mounts need root"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as e:  # mfusepy raises OSError when libfuse is missing
        return f"mfusepy unusable: {e}"
    return ""


@pytest.fixture
def faultfs(tmp_path: Path) -> Iterator[FaultFSMount]:
    """A fault-injecting FUSE passthrough of ``tmp_path/faultfs-src`` at ``tmp_path/faultfs``.

    Yields a :class:`~tests.faultfs.mounting.FaultFSMount` (unpacks as ``mountpoint,
    control, source``). Torn down even when the test fails: hangs released, unmounted,
    server stopped, mount checked gone.
    """
    reason = fuse_missing()
    if reason:
        pytest.skip(reason)
    with faultfs_mount(tmp_path) as fs:
        yield fs
