"""PeerClient against a real API server over loopback tcp with CURVE: each way a peer can
be unreachable or refuse is told apart, at once where it can be."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from messaging.curve import (
    Authenticator,
    ClientCurve,
    CurveConfig,
    generate_keys,
    start_authenticator,
)
from messaging.errors import MigrationLimit, PeerError, PeerUnreachable
from messaging.peer import PeerClient
from messaging.schema.verbs import Schema, Verb
from messaging.server import ApiServer, Binding, ServerConfig

pytestmark = pytest.mark.timeout(60)

SCHEMA = Schema([Verb("Test.ping", "ping"), Verb("Test.busy", "busy"),
                 Verb("Test.slow", "slow", timeout=60.0)])


class Peer:
    def __init__(self, tmp: Path) -> None:
        self.authorized = tmp / "authorized"
        self.authorized.mkdir()
        self.public, self.secret = generate_keys(tmp / "server", "server")
        self.me_public, self.me_secret = generate_keys(tmp / "me", "me")
        self.stranger_public, self.stranger_secret = generate_keys(tmp / "stranger", "x")
        (self.authorized / "me.key").write_bytes(self.me_public.read_bytes())
        self.release = threading.Event()

    def client(self, endpoint: str, *, secret: Path | None = None,
               server_key: Path | None = None, connect_timeout: float = 3.0) -> PeerClient:
        curve = ClientCurve(secret or self.me_secret, server_key or self.public)
        return PeerClient("b", endpoint, curve, connect_timeout=connect_timeout)


@pytest.fixture
def peer(tmp_path: Path) -> Peer:
    return Peer(tmp_path)


@pytest.fixture
def server(peer: Peer) -> Iterator[ApiServer]:
    context: zmq.Context[Any] = zmq.Context()
    auth: Authenticator = start_authenticator(context, CurveConfig(peer.secret,
                                                                   peer.authorized))

    def busy(_p: dict[str, Any]) -> Any:
        raise MigrationLimit(running=2, direction="incoming")

    srv = ApiServer(
        context=context,
        config=ServerConfig(endpoint="tcp://127.0.0.1:0",
                            curve=CurveConfig(peer.secret, peer.authorized)),
        schema=SCHEMA,
        bindings={"Test.ping": Binding(lambda p: "pong", inline=True),
                  "Test.busy": Binding(busy),
                  "Test.slow": Binding(lambda p: peer.release.wait(30))},
        keys=auth.keys,
    )
    srv.start()
    try:
        yield srv
    finally:
        peer.release.set()
        srv.stop()
        auth.stop()
        context.term()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_peer_answers(server: ApiServer, peer: Peer) -> None:
    assert server.bound_endpoint is not None
    assert peer.client(server.bound_endpoint).call("Test.ping", timeout=5) == "pong"


def test_an_error_reply_keeps_the_peers_code_and_message(server: ApiServer,
                                                         peer: Peer) -> None:
    assert server.bound_endpoint is not None
    with pytest.raises(PeerError) as e:
        peer.client(server.bound_endpoint).call("Test.busy", timeout=5)
    assert e.value.peer_code == 48 and "the most this host allows" in e.value.peer_message
    assert e.value.code == 10 and "Test.busy" in e.value.message


def test_nothing_listening_is_connection_refused_after_the_connect_timeout(
        peer: Peer) -> None:
    started = time.monotonic()
    with pytest.raises(PeerUnreachable) as e:
        peer.client(f"tcp://127.0.0.1:{_free_port()}", connect_timeout=1.0).call(
            "Test.ping", timeout=30)
    assert "connection refused" in e.value.message and e.value.code == 10
    assert 1.0 <= time.monotonic() - started < 10


def test_a_key_the_peer_does_not_authorise_is_refused_at_once(server: ApiServer,
                                                             peer: Peer) -> None:
    assert server.bound_endpoint is not None
    started = time.monotonic()
    with pytest.raises(PeerUnreachable) as e:
        peer.client(server.bound_endpoint, secret=peer.stranger_secret,
                    connect_timeout=20.0).call("Test.ping", timeout=30)
    assert "does not authorise this host's key" in e.value.message
    assert time.monotonic() - started < 10  # told by the handshake, not by a timeout


def test_a_wrong_server_key_fails_the_handshake(server: ApiServer, peer: Peer) -> None:
    assert server.bound_endpoint is not None
    with pytest.raises(PeerUnreachable) as e:
        peer.client(server.bound_endpoint, server_key=peer.stranger_public,
                    connect_timeout=2.0).call("Test.ping", timeout=30)
    assert "handshake" in e.value.message, e.value.message


def test_a_peer_that_does_not_answer_in_time(server: ApiServer, peer: Peer) -> None:
    assert server.bound_endpoint is not None
    started = time.monotonic()
    with pytest.raises(PeerUnreachable) as e:
        peer.client(server.bound_endpoint).call("Test.slow", timeout=1.0)
    assert "no answer to Test.slow within 1 s" in e.value.message
    assert time.monotonic() - started < 10
