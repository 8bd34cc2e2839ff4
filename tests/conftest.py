"""Shared fixtures: a real vdsmd process on temporary endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

from actors.clock import Clock
from tests.harness import Vdsmd, running_vdsmd

pytest_plugins = [
    "tests.faultfs.plugin",  # the faultfs fixture (fault-injecting FUSE)
    "tests.testbed.fixtures",  # the bed fixture (several hosts on one machine)
]


@pytest.fixture
def vdsmd(tmp_path: Path) -> Iterator[Vdsmd]:
    """A vdsmd with default settings (fault injection on, for supervision tests)."""
    with running_vdsmd(tmp_path / "vdsmd", config="[debug]\nfault_injection = true\n") as d:
        yield d.wait_ready()


@pytest.fixture
def stop_all_actors() -> Iterator[None]:
    """Every in-process actor test stops all actors in teardown, even when it fails."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


@pytest.fixture
def clock() -> Iterator[Clock]:
    """The daemon's one timer thread, for in-process tests (deadlines, ticks)."""
    timer = Clock()
    timer.start()
    try:
        yield timer
    finally:
        timer.stop()
