"""The client library's sockets: a client that cannot connect leaves nothing open; a
subscriber knows when it is connected."""

from __future__ import annotations

import gc
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import zmq

from messaging.client import Client, Subscriber
from messaging.events import EventPublisher

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("make", [Client, Subscriber])
def test_a_bad_endpoint_fails_at_once_and_leaves_nothing_open(make: type) -> None:
    """Its socket and its own ZeroMQ context (file descriptors and threads) are closed
    before the error reaches the caller, not left to the garbage collector, which
    pyzmq reports with a ResourceWarning."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(5):
            with pytest.raises(zmq.ZMQError):
                make("nonsense://nowhere")
        gc.collect()
    unclosed = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert unclosed == []


def test_a_subscriber_waits_for_its_connection_to_the_publisher(tmp_path: Path) -> None:
    """wait_connected says when the handshake is done; the events published after that
    reach the subscriber."""
    context: zmq.Context[Any] = zmq.Context()
    publisher = EventPublisher(context=context, endpoint=f"ipc://{tmp_path}/events.sock")
    publisher.start()
    try:
        with Subscriber(f"ipc://{tmp_path}/events.sock", ["|t|"]) as sub:
            assert sub.wait_connected(10) is True
            assert sub.wait_connected(0) is True  # and stays so
            received = None
            for _ in range(50):  # the subscription itself is still on its way for a moment
                publisher.publish("|t|x", {"n": 1})
                if (received := sub.receive(0.1)) is not None:
                    break
            assert received is not None and received[1]["n"] == 1
    finally:
        publisher.stop()
        context.term()


def test_a_subscriber_with_no_publisher_there_does_not_wait_for_it(tmp_path: Path) -> None:
    with Subscriber(f"ipc://{tmp_path}/nobody.sock", [""]) as sub:
        started = time.monotonic()
        assert sub.wait_connected(20) is False
        assert time.monotonic() - started < 10  # told at once, not at the timeout
