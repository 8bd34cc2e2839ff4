"""Fixtures of the in-process policy tests: a runtime (clock, directory) for real actors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from actors.base import Runtime
from actors.clock import Clock
from actors.directory import ActorDirectory


class _Sink:
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        pass


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    clock = Clock()
    clock.start()
    try:
        yield Runtime(events=_Sink(), clock=clock, directory=ActorDirectory())
    finally:
        pykka.ActorRegistry.stop_all(block=True, timeout=10)
        clock.stop()
