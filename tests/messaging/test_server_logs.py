"""What the API server tells the log and the metrics: the verb and request id of each
action, refused requests with their verb and reason, every answer to the request observer;
and a declared-but-unimplemented verb answers -32601 whatever its params."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from messaging import logcontext
from messaging.client import Client, ClientError
from messaging.errors import NoSuchVM
from messaging.schema.types import Field, Int, Str, Uuid
from messaging.schema.verbs import Schema, Verb
from messaging.server import ApiServer, Binding, ServerConfig

pytestmark = pytest.mark.timeout(60)

VM_ID = "6f1b9e4a-4a4e-4c53-9c0c-2f5c1e0e7b11"
log = logging.getLogger("tests.handler")

SCHEMA = Schema([
    Verb("Test.getThing", "a read", (Field("vmID", Uuid()),)),
    Verb("Test.act", "an action", (Field("vmID", Uuid()), Field("password", Str()),
                                   Field("count", Int()))),
    Verb("Test.fail", "raises NoSuchVM"),
    Verb("Test.unbound", "declared, no handler", (Field("value", Int()),)),
])


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def observe(self, verb: str, code: int, seconds: float) -> None:
        assert seconds >= 0
        with self.lock:
            self.seen.append((verb, code))


@pytest.fixture
def observer() -> Observer:
    return Observer()


@pytest.fixture
def api(tmp_path: Path, observer: Observer) -> Iterator[str]:
    def act(params: dict[str, Any]) -> bool:
        log.info("acting on %s", params["vmID"])
        return True

    def fail(_params: dict[str, Any]) -> None:
        raise NoSuchVM(vmID=VM_ID)

    context: zmq.Context[Any] = zmq.Context()
    endpoint = f"ipc://{tmp_path}/api.sock"
    server = ApiServer(context=context, config=ServerConfig(endpoint=endpoint), schema=SCHEMA,
                       bindings={"Test.getThing": Binding(lambda p: True, inline=True),
                                 "Test.act": Binding(act),
                                 "Test.fail": Binding(fail)},
                       observer=observer)
    server.start()
    try:
        yield endpoint
    finally:
        server.stop()
        context.term()


def test_each_request_is_logged_with_its_verb_and_id(
        api: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handler_lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_lines.append(record.request)  # type: ignore[attr-defined]

    capture = Capture()
    capture.addFilter(logcontext.RequestFilter())
    log.addHandler(capture)
    try:
        with Client(api, timeout=10) as c:
            assert c.call("Test.act", {"vmID": VM_ID, "password": "s3cret", "count": 2})
            assert c.call("Test.getThing", {"vmID": VM_ID})
    finally:
        log.removeHandler(capture)
    server_lines = [r for r in caplog.records if r.name == "messaging.server"]
    action = next(r for r in server_lines if "Test.act" in r.getMessage())
    assert action.levelno == logging.INFO
    assert "req 1 Test.act from" in action.getMessage()
    assert f"vmID={VM_ID}" in action.getMessage() and "count=2" in action.getMessage()
    assert "s3cret" not in action.getMessage()  # free text, and a password: never logged
    read = next(r for r in server_lines if "Test.getThing" in r.getMessage())
    assert read.levelno == logging.DEBUG
    # what the handler logged while serving carries the request
    assert handler_lines == [" [req 1 Test.act]"]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "outside", None, None)
    logcontext.RequestFilter().filter(record)
    assert record.request == ""  # type: ignore[attr-defined]


def test_refused_requests_name_the_verb_and_the_reason(
        api: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="messaging.server")
    with Client(api, timeout=10) as c:
        with pytest.raises(ClientError):
            c.call("Test.act", {"vmID": "web1"})
        with pytest.raises(ClientError):
            c.call("Test.nothing")
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any("refused Test.act (id 1)" in m and "vmID" in m for m in refused), refused
    assert any("refused request (id 2)" in m and "Test.nothing" in m for m in refused), refused


def test_an_unimplemented_verb_answers_32601_whatever_its_params(api: str) -> None:
    with Client(api, timeout=10) as c:
        for params in ({}, {"value": "not a number"}, {"unknown": 1}):
            with pytest.raises(ClientError) as info:
                c.call("Test.unbound", params)
            assert info.value.code == -32601
            assert "declared but not implemented" in info.value.message


def test_every_answer_reaches_the_observer(api: str, observer: Observer) -> None:
    with Client(api, timeout=10) as c:
        c.call("Test.getThing", {"vmID": VM_ID})
        c.call("Test.act", {"vmID": VM_ID, "password": "x", "count": 1})
        with pytest.raises(ClientError):
            c.call("Test.fail")
        with pytest.raises(ClientError):
            c.call("Test.act", {})
        with pytest.raises(ClientError):
            c.call("Test.unbound")
    assert sorted(observer.seen) == sorted([
        ("Test.getThing", 0), ("Test.act", 0), ("Test.fail", 1), ("Test.act", -32602),
        ("Test.unbound", -32601)])
