"""pytest fixtures of the test bed (registered in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed.bed import Bed


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    """Two hosts, ``a`` and ``b``, with their libvirtds up (start the agents with
    ``bed.start_agents(...)``); torn down after the test, whatever happened."""
    with Bed(tmp_path / "bed") as started:
        yield started
