"""Fixtures of the storage tests: a temp dir whose loop devices are checked for leaks."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.base import Runtime
from actors.clock import Clock
from actors.directory import ActorDirectory
from tests.storage.helpers import autoclear, loop_devices_of, sh
from tests.storage.rig import Rig

log = logging.getLogger(__name__)

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0,
                                reason="storage tests need root (loop devices, mounts)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/storage/" in str(item.fspath):
            item.add_marker(NEEDS_ROOT)


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``; the test fails if it leaves a loop device over it (which is detached).

    A device the test did detach but that something else still holds open is not a leak:
    the kernel marked it to clear itself (autoclear) when the holder lets go. That happens
    when another process made a mount namespace while the test's filesystem was mounted
    (another test's private libvirtd, on this shared machine): its copy of the mount keeps
    the device until that namespace ends.
    """
    yield tmp_path
    devices = loop_devices_of(tmp_path)
    pending = [d for d in devices if autoclear(d)]
    leaked = [d for d in devices if d not in pending]
    for device in leaked:
        sh("losetup", "--detach", device, check=False)
    if pending:
        log.warning("loop devices %s were detached and wait for their last user", pending)
    assert not leaked, f"the test leaked loop devices {leaked}"


@pytest.fixture
def rig(tmp: Path) -> Iterator[Rig]:
    """A vdsmd with storage on ``tmp`` (started by the test); everything undone at the end."""
    storage = Rig(tmp)
    try:
        yield storage
    finally:
        storage.cleanup()


class Sink:
    """Events published by in-process actors."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((topic, payload))

    def of(self, prefix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for t, p in self.events if t.startswith(prefix)]


@pytest.fixture
def runtime(stop_all_actors: None) -> Iterator[Runtime]:
    """A runtime for in-process actors (a real clock); every actor is stopped at the end."""
    clock = Clock()
    clock.start()
    try:
        yield Runtime(events=Sink(), clock=clock, directory=ActorDirectory())
    finally:
        clock.stop()
