"""The client library's sockets: a client that cannot connect leaves nothing open."""

from __future__ import annotations

import gc
import warnings

import pytest
import zmq

from messaging.client import Client, Subscriber

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
