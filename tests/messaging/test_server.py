"""The API server in-process, over real ZeroMQ sockets."""

from __future__ import annotations

import logging
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messaging import codec
from messaging.client import CallTimeout, Client, ClientError
from messaging.curve import ClientCurve, CurveConfig, generate_keys, start_authenticator
from messaging.errors import NoSuchVM
from messaging.events import EventPublisher
from messaging.ratelog import BURST
from messaging.schema.types import Field, Int, Str
from messaging.schema.verbs import Schema, Verb
from messaging.server import ApiServer, Binding, ServerConfig
from tests.harness import blocked_without_timeout, syscall, wait_for

pytestmark = pytest.mark.timeout(60)

SCHEMA = Schema(
    [
        Verb("Test.ping", "ping", aliases=("ping",)),
        Verb("Test.echo", "echo", (Field("value", Str()),), result="value"),
        Verb("Test.slow", "slow", (Field("seconds", Int(min=0, max=10)),), timeout=20.0),
        Verb("Test.timesOut", "sleeps past its timeout", timeout=0.3),
        Verb("Test.bug", "raises a bug"),
        Verb("Test.vdsmError", "raises NoSuchVM"),
        Verb("Test.unbound", "declared, no handler"),
        Verb("Test.unencodable", "returns an object msgpack cannot pack"),
        Verb("Test.count", "counts calls"),
        Verb("Test.hold", "waits until the test releases it", timeout=20.0),
        Verb("Test.inlineBug", "an inline handler that raises"),
    ]
)


class Handlers:
    def __init__(self) -> None:
        self.count = 0
        self.release = threading.Event()

    def bindings(self) -> dict[str, Binding]:
        def slow(p: dict[str, Any]) -> int:
            time.sleep(p["seconds"])
            return int(p["seconds"])

        def times_out(_p: dict[str, Any]) -> bool:
            self.release.wait(5)
            return True

        def bug(_p: dict[str, Any]) -> None:
            raise ZeroDivisionError("oops")

        def vdsm_error(_p: dict[str, Any]) -> None:
            raise NoSuchVM(vmID="x")

        def count(_p: dict[str, Any]) -> int:
            self.count += 1
            return self.count

        def hold(_p: dict[str, Any]) -> bool:
            self.release.wait(15)
            return True

        return {
            "Test.ping": Binding(lambda p: True, inline=True),
            "Test.echo": Binding(lambda p: p["value"]),
            "Test.slow": Binding(slow),
            "Test.timesOut": Binding(times_out),
            "Test.bug": Binding(bug),
            "Test.vdsmError": Binding(vdsm_error),
            "Test.unencodable": Binding(lambda p: object()),
            "Test.count": Binding(count),
            "Test.hold": Binding(hold),
            "Test.inlineBug": Binding(bug, inline=True),
        }


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.term()


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


def make_server(context: zmq.Context[Any], endpoint: str, handlers: Handlers,
                **kw: Any) -> ApiServer:
    return ApiServer(
        context=context,
        config=ServerConfig(endpoint=endpoint, **kw),
        schema=SCHEMA,
        bindings=handlers.bindings(),
    )


@pytest.fixture
def server(context: zmq.Context[Any], tmp_path: Path, handlers: Handlers) -> Iterator[ApiServer]:
    srv = make_server(context, f"ipc://{tmp_path}/run/api.sock", handlers,
                      limits=codec.Limits(max_frame=64 * 1024))
    srv.start()
    yield srv
    handlers.release.set()
    srv.stop()


@pytest.fixture
def client(server: ApiServer, context: zmq.Context[Any]) -> Iterator[Client]:
    with Client(server.bound_endpoint, timeout=10, context=context) as c:
        yield c


def raw_call(context: zmq.Context[Any], endpoint: str, frame: bytes,
             timeout: float = 5.0) -> Any:
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send(frame)
        if not sock.poll(int(timeout * 1000)):
            return None
        return msgpack.unpackb(sock.recv(), raw=False)
    finally:
        sock.close()


def test_ping_and_alias(client: Client) -> None:
    assert client.call("Test.ping") is True
    assert client.call("ping") is True


def test_echo_through_workers(client: Client) -> None:
    assert client.call("Test.echo", {"value": "héllo"}) == "héllo"


def test_ipc_permissions(server: ApiServer, tmp_path: Path) -> None:
    sock = tmp_path / "run" / "api.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o750


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1garbage", -32700),
        (msgpack.packb([1, 2, 3]), -32600),
        (msgpack.packb({"id": 1}), -32600),
        (msgpack.packb({"id": 1, "method": "Test.nope"}), -32601),
        (msgpack.packb({"id": 1, "method": "Test.echo", "params": {"value": 5}}), -32602),
        (msgpack.packb({"id": 1, "method": "Test.echo", "params": {"value": "a", "x": 1}}),
         -32602),
        (msgpack.packb({"id": 1, "method": "Test.echo"}), -32602),
        (msgpack.packb({"id": 1, "method": "Test.unbound"}), -32601),
        (msgpack.packb({"id": 1, "method": "Test.bug"}), -32603),
        (msgpack.packb({"id": 1, "method": "Test.unencodable"}), -32603),
        (msgpack.packb({"id": 1, "method": "Test.vdsmError"}), 1),
    ],
)
def test_bad_requests_get_the_protocol_error(
    server: ApiServer, context: zmq.Context[Any], frame: bytes, code: int
) -> None:
    reply = raw_call(context, server.bound_endpoint or "", frame)
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    # and the server keeps serving
    assert raw_call(context, server.bound_endpoint or "",
                    msgpack.packb({"id": 2, "method": "Test.ping"}))["result"] is True


def test_invalid_params_message_names_the_param(client: Client) -> None:
    with pytest.raises(ClientError) as info:
        client.call("Test.slow", {"seconds": "soon"})
    assert info.value.code == -32602
    assert "seconds" in info.value.message
    assert info.value.data == {"param": "seconds"}


def test_reply_keeps_the_id(server: ApiServer, context: zmq.Context[Any]) -> None:
    reply = raw_call(context, server.bound_endpoint or "",
                     msgpack.packb({"id": "abc", "method": "Test.nope"}))
    assert reply["id"] == "abc"
    reply = raw_call(context, server.bound_endpoint or "", b"\xc1")
    assert reply["id"] is None


def test_deep_nesting_gets_an_error(server: ApiServer, context: zmq.Context[Any]) -> None:
    value: Any = "x"
    for _ in range(100):
        value = {"a": value}
    frame = msgpack.packb({"id": 1, "method": "Test.echo", "params": {"value": value}})
    reply = raw_call(context, server.bound_endpoint or "", frame)
    assert reply["error"]["code"] == -32600


def test_frame_above_the_limit_gets_an_error(
    server: ApiServer, context: zmq.Context[Any]
) -> None:
    frame = msgpack.packb({"id": 1, "method": "Test.echo", "params": {"value": "x" * 100_000}})
    reply = raw_call(context, server.bound_endpoint or "", frame)
    assert reply["error"]["code"] == -32600
    assert "exceeds" in reply["error"]["message"]


def test_frame_above_the_hard_limit_is_dropped_and_others_are_served(
    server: ApiServer, context: zmq.Context[Any], client: Client
) -> None:
    frame = b"\x00" * (64 * 1024 * 4 + 10)
    assert raw_call(context, server.bound_endpoint or "", frame, timeout=1.0) is None
    assert client.call("Test.ping") is True


def test_slow_verb_does_not_delay_ping(server: ApiServer, context: zmq.Context[Any]) -> None:
    slow = Client(server.bound_endpoint, timeout=10, context=context)
    fast = Client(server.bound_endpoint, timeout=10, context=context)
    try:
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(slow.call("Test.slow",
                                                                         {"seconds": 2})))
        thread.start()
        time.sleep(0.2)
        for _ in range(20):
            assert fast.call("Test.ping") is True
            assert fast.call("Test.echo", {"value": "x"}) == "x"
        assert not result, "the slow verb finished before the pings: the test proves nothing"
        thread.join(10)
        assert result == [2]
    finally:
        slow.close()
        fast.close()


def test_server_side_timeout(client: Client, handlers: Handlers) -> None:
    with pytest.raises(ClientError) as info:
        client.call("Test.timesOut")
    assert info.value.code == -32603
    assert "did not finish" in info.value.message
    handlers.release.set()
    # the late result is dropped, and the next call gets its own reply
    assert client.call("Test.echo", {"value": "after"}) == "after"


def test_notification_runs_without_reply(
    server: ApiServer, context: zmq.Context[Any], handlers: Handlers
) -> None:
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(server.bound_endpoint or "")
    try:
        sock.send_multipart([b"", msgpack.packb({"method": "Test.count"})])
        deadline = time.monotonic() + 5
        while handlers.count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handlers.count == 1
        assert not sock.poll(300)
    finally:
        sock.close()


def _ping_reply_comes_first(sock: zmq.Socket[Any], request_id: int) -> None:
    """Send a ping with ``request_id``; the next reply must be its own (nothing else)."""
    sock.send_multipart([b"", msgpack.packb({"id": request_id, "method": "Test.ping"})])
    assert sock.poll(10_000), "no reply to the ping"
    reply = msgpack.unpackb(sock.recv_multipart()[-1])
    assert reply == {"id": request_id, "result": True}, f"a notification got a reply: {reply}"


@pytest.mark.parametrize(
    "notification",
    [
        {"method": "Test.nope"},                                        # unknown method
        {"method": "Test.echo", "params": {"value": 5}},                # wrong type
        {"method": "Test.echo", "params": {"value": "a", "bogus": 1}},  # unknown param
        {"method": "Test.echo"},                                        # missing param
        {"method": "Test.echo", "params": [1, 2]},                      # positional params
        {"method": "Test.unbound"},                                     # declared, no handler
        {"method": "Test.vdsmError"},                                   # a VdsmError
        {"method": "Test.bug"},                                         # a bug (-32603)
        {"method": "Test.inlineBug"},                                   # a bug, inline
        {"method": "Test.unencodable"},                                 # result not packable
        {"method": "Test.timesOut"},                                    # past its deadline
        {"id": None, "method": "Test.nope"},                            # an explicit nil id
    ],
    ids=lambda n: f"{n['method']}-{sorted(n.get('params') or [])}",
)
def test_a_notification_never_gets_a_reply(
    server: ApiServer, context: zmq.Context[Any], notification: dict[str, Any]
) -> None:
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(server.bound_endpoint or "")
    try:
        requests = server.stats["requests"]
        sock.send_multipart([b"", msgpack.packb(notification)])
        # Requests of one client are read in order: a reply to a refused notification
        # would come before the ping's.
        _ping_reply_comes_first(sock, 1)
        assert server.stats["requests"] == requests + 2
        # A notification run by a worker is done (answered, failed or expired) once nothing
        # is in flight; a reply to it would be sent before the socket thread reads again.
        wait_for(lambda: server.in_flight == 0, 10, what="the notification to finish")
        _ping_reply_comes_first(sock, 2)
    finally:
        sock.close()


def test_an_overloaded_server_does_not_answer_a_notification(
    context: zmq.Context[Any], tmp_path: Path, handlers: Handlers
) -> None:
    srv = make_server(context, f"ipc://{tmp_path}/busy.sock", handlers, max_pending=1,
                      workers=1)
    srv.start()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(srv.bound_endpoint or "")
    try:
        sock.send_multipart([b"", msgpack.packb({"id": 100, "method": "Test.hold"})])
        wait_for(lambda: srv.in_flight == 1, 10, what="the held request")
        sock.send_multipart([b"", msgpack.packb({"method": "Test.count"})])
        _ping_reply_comes_first(sock, 1)
        assert srv.stats["requests"] == 3
        handlers.release.set()
        assert sock.poll(10_000)
        assert msgpack.unpackb(sock.recv_multipart()[-1]) == {"id": 100, "result": True}
        assert handlers.count == 0  # refused as busy: neither run nor answered
    finally:
        handlers.release.set()
        sock.close()
        srv.stop()


def test_dropped_replies_are_logged_at_a_bounded_rate(
    context: zmq.Context[Any], handlers: Handlers, caplog: pytest.LogCaptureFixture
) -> None:
    # inproc: no kernel buffers, so the pipe to a client that never reads holds exactly its
    # high-water marks and every reply past them is dropped.
    srv = make_server(context, "inproc://never-reads", handlers)
    srv.start()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvhwm = 1
    sock.connect("inproc://never-reads")
    count = 20_000
    try:
        with caplog.at_level(logging.INFO, logger="messaging.server"):
            frame = msgpack.packb({"id": 1, "method": "Test.ping"})
            for _ in range(count):
                sock.send_multipart([b"", frame])
            wait_for(lambda: srv.stats["requests"] == count, 60, what="every request read")
            srv.stop()  # flushes the count of lines not logged
        dropped = srv.stats["dropped"]
        assert dropped >= count // 4, "too few replies were dropped: the test proves nothing"
        lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(lines) <= BURST + 1, f"{len(lines)} lines for {dropped} dropped replies"
        assert f"{dropped - BURST} more dropped replies were not logged" in lines[-1]
    finally:
        sock.close()
        srv.stop()


def test_overload_is_refused_with_busy(context: zmq.Context[Any], tmp_path: Path,
                                       handlers: Handlers) -> None:
    srv = make_server(context, f"ipc://{tmp_path}/busy.sock", handlers, max_pending=2,
                      workers=2)
    srv.start()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(srv.bound_endpoint or "")
    try:
        for i in range(5):
            sock.send_multipart([b"", msgpack.packb({"id": i, "method": "Test.slow",
                                                     "params": {"seconds": 1}})])
        replies = []
        while len(replies) < 5 and sock.poll(5000):
            replies.append(msgpack.unpackb(sock.recv_multipart()[-1]))
        busy = [r for r in replies if "error" in r]
        assert len(busy) == 3
        assert all("overloaded" in r["error"]["message"] for r in busy)
        assert sorted(r["result"] for r in replies if "result" in r) == [1, 1]
    finally:
        sock.close()
        srv.stop()


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:0", "tcp://localhost:0",
                                      "tcp://[::1]:0", "tcp://0.0.0.0:5999",
                                      "tcp://10.1.2.3:5999"])
def test_every_tcp_endpoint_needs_curve(context: zmq.Context[Any], handlers: Handlers,
                                        endpoint: str) -> None:
    # Loopback included: any local user can connect to a tcp port, and the agent is root.
    with pytest.raises(ValueError, match="without CURVE"):
        make_server(context, endpoint, handlers)
    with pytest.raises(ValueError, match="without CURVE"):
        EventPublisher(context=context, endpoint=endpoint)


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5999", "tcp://10.1.2.3:5999"])
def test_insecure_tcp_is_for_loopback_only(context: zmq.Context[Any], handlers: Handlers,
                                           endpoint: str) -> None:
    with pytest.raises(ValueError, match="loopback addresses only"):
        make_server(context, endpoint, handlers, insecure_tcp=True)
    with pytest.raises(ValueError, match="loopback addresses only"):
        EventPublisher(context=context, endpoint=endpoint, insecure_tcp=True)


def test_insecure_loopback_tcp_is_served_with_a_warning(
    context: zmq.Context[Any], handlers: Handlers, caplog: pytest.LogCaptureFixture
) -> None:
    srv = make_server(context, "tcp://127.0.0.1:0", handlers, insecure_tcp=True)
    publisher = EventPublisher(context=context, endpoint="tcp://127.0.0.1:0", insecure_tcp=True)
    with caplog.at_level(logging.WARNING):
        srv.start()
        publisher.start()
    try:
        with Client(srv.bound_endpoint, timeout=5, context=context) as c:
            assert c.call("Test.ping") is True
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("INSECURE" in w and str(srv.bound_endpoint) in w for w in warnings)
        assert any("INSECURE" in w and str(publisher.bound_endpoint) in w for w in warnings)
    finally:
        srv.stop()
        publisher.stop()


def test_ipc_needs_no_curve(context: zmq.Context[Any], handlers: Handlers,
                            tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    srv = make_server(context, f"ipc://{tmp_path}/ok.sock", handlers)
    with caplog.at_level(logging.WARNING):
        srv.start()
    srv.stop()
    assert not any("INSECURE" in r.getMessage() for r in caplog.records)


def test_bind_failure_is_reported(context: zmq.Context[Any], handlers: Handlers) -> None:
    srv = make_server(context, "ipc:///proc/nope/api.sock", handlers)
    with pytest.raises(OSError):
        srv.start()
    srv.stop()


def test_curve_lets_authorised_clients_in_and_refuses_others(
    context: zmq.Context[Any], tmp_path: Path, handlers: Handlers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = tmp_path / "keys"
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    server_public, server_secret = generate_keys(keys, "server")
    client_public, client_secret = generate_keys(keys, "client")
    _, stranger_secret = generate_keys(tmp_path / "stranger", "stranger")
    (authorized / "client.key").write_bytes(client_public.read_bytes())
    config = CurveConfig(server_secret, authorized)
    auth = start_authenticator(context, config)
    # Non-loopback needs CURVE; with CURVE configured the check passes. Serve on loopback
    # so that no packet leaves this machine.
    srv = make_server(context, "tcp://127.0.0.1:0", handlers, curve=config)
    srv.start()
    plain_frame = msgpack.packb({"id": 1, "method": "Test.ping"})
    try:
        good = ClientCurve(client_secret, server_public)
        with Client(srv.bound_endpoint, timeout=5, curve=good, context=context) as c:
            assert c.call("Test.echo", {"value": "secret"}) == "secret"
        bad = ClientCurve(stranger_secret, server_public)
        with caplog.at_level(logging.WARNING, logger="messaging.curve"), \
                Client(srv.bound_endpoint, timeout=1, curve=bad, context=context) as c, \
                pytest.raises(CallTimeout):
            c.call("Test.ping")
        assert any("is not authorised" in r.getMessage() and "127.0.0.1" in r.getMessage()
                   for r in caplog.records)
        assert raw_call(context, srv.bound_endpoint or "", plain_frame, timeout=1) is None
    finally:
        srv.stop()
        auth.stop()


def test_many_requests_in_flight_from_one_dealer(server: ApiServer,
                                                 context: zmq.Context[Any]) -> None:
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(server.bound_endpoint or "")
    try:
        for i in range(200):
            sock.send_multipart([b"", msgpack.packb({"id": i, "method": "Test.echo",
                                                     "params": {"value": str(i)}})])
        seen = {}
        while len(seen) < 200 and sock.poll(5000):
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            seen[reply["id"]] = reply["result"]
        assert seen == {i: str(i) for i in range(200)}
    finally:
        sock.close()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=st.one_of(
    st.binary(max_size=256),
    st.builds(
        lambda m, p: msgpack.packb({"id": 1, "method": m, "params": p}),
        st.sampled_from(["Test.ping", "Test.echo", "Test.slow", "ping", "x", ""]),
        st.dictionaries(st.text(max_size=8),
                        st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=8), st.none(),
                                  st.lists(st.integers(0, 10), max_size=3)), max_size=3),
    ),
))
def test_fuzzed_frames_get_an_answer_or_are_dropped(
    server: ApiServer, context: zmq.Context[Any], frame: bytes
) -> None:
    reply = raw_call(context, server.bound_endpoint or "", frame, timeout=5)
    assert reply is not None
    assert "result" in reply or reply["error"]["code"] in (-32700, -32600, -32601, -32602)


def test_an_idle_server_sleeps_until_a_request_comes(
        server: ApiServer, client: Client, handlers: Handlers) -> None:
    """With nothing in flight the socket thread waits with no timeout (a request, a result or
    stop() wakes it), also right after answering a request (whose deadline is moot then);
    with a request in flight it still wakes for that request's deadline."""
    assert server._thread is not None
    tid = server._thread.native_id
    assert tid is not None
    wait_for(lambda: blocked_without_timeout(tid), 30.0,
             what=f"the idle socket thread blocked with no timeout ({syscall(tid)})")
    assert client.call("Test.echo", {"value": "hi"}) == "hi"
    with pytest.raises(ClientError) as info:
        client.call("Test.timesOut")  # answered by the server's own deadline, not the result
    assert "did not finish" in info.value.message
    handlers.release.set()
    # well before the answered echo's own deadline (30 s) would have left the heap
    wait_for(lambda: blocked_without_timeout(tid), 15.0,
             what=f"the socket thread idle again ({syscall(tid)})")
    assert client.call("Test.echo", {"value": "again"}) == "again"
    wait_for(lambda: blocked_without_timeout(tid), 15.0,
             what=f"the socket thread idle after an answered request ({syscall(tid)})")
