"""The API server's deadline model and deferred replies, in-process over real sockets.

A handler sees its request's deadline (``messaging.deadline.current()``); a handler that
covers an operation's deadline extends the request's; a handler may return a future and the
reply is sent when it resolves, holding no worker thread meanwhile.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import zmq

from messaging import deadline as request_deadline
from messaging.client import Client, ClientError
from messaging.errors import NoSuchVM
from messaging.schema.types import Field, Int
from messaging.schema.verbs import Schema, Verb
from messaging.server import ApiServer, Binding, ServerConfig

pytestmark = pytest.mark.timeout(60)

VERB_TIMEOUT = 1.0

SCHEMA = Schema([
    Verb("Test.echo", "echo", (Field("value", Int()),)),
    Verb("Test.deadline", "the time left, as the handler sees it", timeout=VERB_TIMEOUT),
    Verb("Test.deferred", "a future resolved later", timeout=20.0),
    Verb("Test.inlineDeferred", "an inline handler's future", timeout=20.0),
    Verb("Test.covered", "an operation longer than the verb's timeout, covered",
         (Field("ms", Int(min=0, max=10_000)),), timeout=VERB_TIMEOUT),
    Verb("Test.uncovered", "an operation longer than the verb's timeout",
         (Field("ms", Int(min=0, max=10_000)),), timeout=VERB_TIMEOUT),
    Verb("Test.failsLater", "a future that fails", timeout=20.0),
])


class Operations:
    """Futures that tests resolve by hand, and operations that end after a delay."""

    def __init__(self) -> None:
        self.pending: list[Future[Any]] = []
        self.lock = threading.Lock()

    def hold(self) -> Future[Any]:
        future: Future[Any] = Future()
        with self.lock:
            self.pending.append(future)
        return future

    def resolve_all(self, value: Any) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for future in pending:
            if not future.done():
                future.set_result(value)

    @staticmethod
    def later(seconds: float, value: Any = True, error: BaseException | None = None
              ) -> Future[Any]:
        future: Future[Any] = Future()

        def finish() -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        timer = threading.Timer(seconds, finish)  # the test's own stand-in for an operation
        timer.daemon = True
        timer.start()
        return future


def bindings(ops: Operations) -> dict[str, Binding]:
    def covered(p: dict[str, Any]) -> Future[Any]:
        seconds = p["ms"] / 1000
        request_deadline.current().cover(time.monotonic() + seconds, margin=1.0)
        return ops.later(seconds, "done")

    return {
        "Test.echo": Binding(lambda p: p["value"]),
        "Test.deadline": Binding(lambda p: request_deadline.current().remaining()),
        "Test.deferred": Binding(lambda p: ops.hold()),
        "Test.inlineDeferred": Binding(lambda p: ops.hold(), inline=True),
        "Test.covered": Binding(covered),
        "Test.uncovered": Binding(lambda p: ops.later(p["ms"] / 1000, "done")),
        "Test.failsLater": Binding(lambda p: ops.later(0.05, error=NoSuchVM(vmID="x"))),
    }


@pytest.fixture
def ops() -> Iterator[Operations]:
    operations = Operations()
    yield operations
    operations.resolve_all(None)


@pytest.fixture
def server(tmp_path: Path, ops: Operations) -> Iterator[ApiServer]:
    context: zmq.Context[Any] = zmq.Context()
    srv = ApiServer(context=context,
                    config=ServerConfig(endpoint=f"ipc://{tmp_path}/api.sock", workers=1),
                    schema=SCHEMA, bindings=bindings(ops))
    srv.start()
    try:
        yield srv
    finally:
        ops.resolve_all(None)
        srv.stop()
        context.term()


def call(server: ApiServer, method: str, timeout: float = 10.0, **params: Any) -> Any:
    with Client(server.bound_endpoint or "", timeout=timeout) as client:
        return client.call(method, params)


def test_a_handler_sees_its_requests_deadline(server: ApiServer) -> None:
    remaining = call(server, "Test.deadline")
    assert 0 < remaining <= VERB_TIMEOUT


def test_outside_a_request_the_deadline_is_unbounded() -> None:
    deadline = request_deadline.current()
    assert deadline.remaining() == math.inf
    assert deadline.clamp(5.0) == 5.0


def test_deferred_replies_hold_no_worker(server: ApiServer, ops: Operations) -> None:
    # One worker, three requests waiting on operations: the worker is free for the next.
    answers: list[Any] = []
    threads = [threading.Thread(target=lambda m=m: answers.append(call(server, m)))
               for m in ("Test.deferred", "Test.deferred", "Test.inlineDeferred")]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(ops.pending) < 3:
        assert time.monotonic() < deadline, "the handlers did not run"
        time.sleep(0.01)
    assert call(server, "Test.echo", value=7, timeout=5) == 7
    ops.resolve_all("resolved")
    for thread in threads:
        thread.join(10)
    assert answers == ["resolved"] * 3


def test_a_future_that_fails_is_an_error_reply(server: ApiServer) -> None:
    with pytest.raises(ClientError) as e:
        call(server, "Test.failsLater")
    assert e.value.code == 1


def test_an_operation_covered_by_the_handler_outlives_the_verbs_timeout(
    server: ApiServer,
) -> None:
    assert call(server, "Test.covered", ms=int(VERB_TIMEOUT * 2500)) == "done"


def test_an_uncovered_operation_times_out_on_the_wire(server: ApiServer) -> None:
    started = time.monotonic()
    with pytest.raises(ClientError) as e:
        call(server, "Test.uncovered", ms=int(VERB_TIMEOUT * 4000))
    assert e.value.code == -32603 and "did not finish within 1 s" in e.value.message
    assert time.monotonic() - started < VERB_TIMEOUT * 3.5


def test_deadline_arithmetic() -> None:
    deadline = request_deadline.Deadline(10.0, now=100.0, limit=60.0)
    assert deadline.at == 110.0 and deadline.budget == 10.0
    deadline.cover(105.0, margin=5.0)  # ends earlier than it already does: unchanged
    assert deadline.at == 110.0
    deadline.cover(130.0, margin=5.0)
    assert deadline.at == 135.0 and deadline.budget == 35.0
    deadline.cover(10_000.0)  # never past the limit after acceptance
    assert deadline.at == 160.0
