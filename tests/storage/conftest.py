"""Fixtures of the storage tests: a temp dir whose loop devices are checked for leaks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.storage.helpers import loop_devices_of, sh


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="storage tests need root (loop devices, mounts)")
        for item in items:
            if "tests/storage/" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``; the test fails if it leaves a loop device over it (which is detached)."""
    yield tmp_path
    leaked = loop_devices_of(tmp_path)
    for device in leaked:
        sh("losetup", "--detach", device, check=False)
    assert not leaked, f"the test leaked loop devices {leaked}"
