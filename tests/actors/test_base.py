"""Helpers of actors/base.py, with real pykka actors."""

from __future__ import annotations

import logging
import queue
from typing import Any

import pykka
import pytest

from actors.base import tell_or_drop

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("stop_all_actors")]


class Inbox(pykka.ThreadingActor):
    def __init__(self, received: queue.SimpleQueue[Any]) -> None:
        super().__init__()
        self.received = received

    def on_receive(self, message: Any) -> None:
        self.received.put(message)


def test_tell_or_drop_delivers_to_a_live_actor() -> None:
    received: queue.SimpleQueue[Any] = queue.SimpleQueue()
    ref = Inbox.start(received)
    tell_or_drop(ref, "hello", logging.getLogger("test"), "the inbox")
    assert received.get(timeout=10) == "hello"


def test_tell_or_drop_drops_a_message_to_a_dead_actor_with_a_debug_line(
        caplog: pytest.LogCaptureFixture) -> None:
    ref = Inbox.start(queue.SimpleQueue())
    ref.stop()
    with caplog.at_level(logging.DEBUG, logger="test.base"):
        tell_or_drop(ref, "late", logging.getLogger("test.base"), "the inbox")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("test.base", "'late' dropped: the inbox is gone")]
