"""The daemon's main thread (``Daemon.serve``) in-process, with real sockets and threads.

The whole daemon runs as a process in tests/integration; here only its main loop, fed the
components it watches, so that a dead thread can be had without a fault injector.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors import config as configuration
from actors.daemon import EXIT_FATAL, Daemon
from messaging.events import EventPublisher

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.term()


def test_a_dead_event_thread_ends_the_process(
    context: zmq.Context[Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(configuration.Config())
    publisher = EventPublisher(context=context, endpoint=f"ipc://{tmp_path}/events.sock")
    publisher.start()
    daemon._publisher = publisher  # the component the main thread watches
    daemon.request("reload", "SIGHUP")
    assert daemon.serve_once() is None  # alive, nothing to reload: goes on
    publisher.stop()  # its thread ends, as if it had failed
    with caplog.at_level(logging.CRITICAL, logger="vdsmd"):
        assert daemon.serve() == EXIT_FATAL
    assert any("the event publisher thread ended" in r.getMessage() for r in caplog.records)


def test_stop_and_fatal_requests(caplog: pytest.LogCaptureFixture) -> None:
    daemon = Daemon(configuration.Config())
    daemon.request("stop", "SIGTERM")
    assert daemon.serve() == 0
    daemon.request("fatal", "a test")
    assert daemon.serve() == EXIT_FATAL
