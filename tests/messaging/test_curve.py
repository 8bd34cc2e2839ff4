"""CURVE keys that change while the agent runs, over real ZeroMQ sockets (loopback tcp)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from messaging.client import CallTimeout, Client, ClientError, Subscriber
from messaging.curve import (
    Authenticator,
    AuthorizedKeys,
    ClientCurve,
    CurveConfig,
    generate_keys,
    start_authenticator,
)
from messaging.events import EventPublisher
from messaging.schema.verbs import Schema, Verb
from messaging.server import ApiServer, Binding, ServerConfig
from tests.harness import wait_for

pytestmark = pytest.mark.timeout(60)

SCHEMA = Schema([Verb("Test.ping", "ping")])


@dataclass
class Keys:
    config: CurveConfig
    authorized: Path
    server_public: Path
    secrets: dict[str, Path]
    publics: dict[str, Path]

    def curve(self, name: str) -> ClientCurve:
        return ClientCurve(self.secrets[name], self.server_public)

    def authorize(self, name: str) -> None:
        (self.authorized / f"{name}.key").write_bytes(self.publics[name].read_bytes())

    def revoke(self, name: str) -> None:
        (self.authorized / f"{name}.key").unlink()


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    server_public, server_secret = generate_keys(tmp_path / "server", "server")
    secrets, publics = {}, {}
    for name in ("alice", "bob", "carol"):
        publics[name], secrets[name] = generate_keys(tmp_path / name, name)
    result = Keys(CurveConfig(server_secret, authorized), authorized, server_public, secrets,
                  publics)
    result.authorize("alice")
    result.authorize("bob")
    return result


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.term()


@pytest.fixture
def auth(context: zmq.Context[Any], keys: Keys) -> Iterator[Authenticator]:
    authenticator = start_authenticator(context, keys.config)
    yield authenticator
    authenticator.stop()


@pytest.fixture
def server(context: zmq.Context[Any], keys: Keys, auth: Authenticator) -> Iterator[ApiServer]:
    srv = ApiServer(
        context=context,
        config=ServerConfig(endpoint="tcp://127.0.0.1:0", curve=keys.config),
        schema=SCHEMA,
        bindings={"Test.ping": Binding(lambda p: True, inline=True)},
        keys=auth.keys,
    )
    srv.start()
    yield srv
    srv.stop()


def client(server: ApiServer, context: zmq.Context[Any], keys: Keys, name: str,
           timeout: float = 10.0) -> Client:
    return Client(server.bound_endpoint, timeout=timeout, curve=keys.curve(name),
                  context=context)


def test_a_removed_key_is_refused_on_the_connection_it_holds(
    server: ApiServer, context: zmq.Context[Any], keys: Keys, auth: Authenticator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with client(server, context, keys, "alice") as alice, \
            client(server, context, keys, "bob") as bob:
        assert alice.call("Test.ping") is True
        assert bob.call("Test.ping") is True
        keys.revoke("alice")
        change = auth.keys.reload()
        assert change.removed == {keys.publics["alice"].read_text().split('"')[1]}
        # ZAP ran at alice's handshake only: her connection is still open, and yet every
        # request on it is refused from now on.
        with caplog.at_level(logging.WARNING, logger="messaging.server"), \
                pytest.raises(ClientError) as e:
            alice.call("Test.ping")
        assert e.value.code == 105
        assert "not authorised" in e.value.message
        assert any("refused request" in r.getMessage() for r in caplog.records)
        assert bob.call("Test.ping") is True
    # and a new connection with her key fails its handshake
    with client(server, context, keys, "alice", timeout=1.0) as again, \
            pytest.raises(CallTimeout):
        again.call("Test.ping")


def test_a_revoked_notification_gets_no_reply(
    server: ApiServer, context: zmq.Context[Any], keys: Keys, auth: Authenticator,
) -> None:
    with client(server, context, keys, "alice") as alice:
        assert alice.call("Test.ping") is True
        keys.revoke("alice")
        auth.keys.reload()
        errors = server.stats["errors"]
        alice.notify("Test.ping")
        with pytest.raises(ClientError) as e:
            alice.call("Test.ping")  # had the notification been answered, it came first
        assert e.value.code == 105
        assert server.stats["errors"] == errors + 2


def test_an_added_key_is_let_in_after_a_reload(
    server: ApiServer, context: zmq.Context[Any], keys: Keys, auth: Authenticator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="messaging.curve"), \
            client(server, context, keys, "carol", timeout=1.0) as carol, \
            pytest.raises(CallTimeout):
        carol.call("Test.ping")
    carol_key = keys.publics["carol"].read_text().split('"')[1]
    assert any(carol_key in r.getMessage() and "127.0.0.1" in r.getMessage()
               for r in caplog.records), "the refused key and address are logged"
    keys.authorize("carol")
    assert auth.keys.reload().added == {carol_key}
    with client(server, context, keys, "carol") as carol:
        assert carol.call("Test.ping") is True


def test_a_plain_text_client_is_refused_and_logged(
    server: ApiServer, context: zmq.Context[Any], caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="messaging.handshakes"):
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(server.bound_endpoint or "")
        try:
            sock.send_multipart([b"", msgpack.packb({"id": 1, "method": "Test.ping"})])
            assert not sock.poll(500)

            def logged() -> bool:
                # which end notices the mismatch first is a race: either line may come
                pattern = (r"(without CURVE .*|during the handshake) on the API endpoint "
                           + re.escape(str(server.bound_endpoint)))
                return any(re.search(pattern, r.getMessage()) for r in caplog.records)

            wait_for(logged, 10, what="the refusal in the log")
        finally:
            sock.close()


def test_changes_of_the_directory_are_noticed(keys: Keys) -> None:
    ring = AuthorizedKeys(keys.authorized)
    assert ring.changed()
    ring.reload()
    assert len(ring) == 2
    assert not ring.changed()
    keys.revoke("bob")
    assert ring.changed()
    assert len(ring.reload().removed) == 1
    assert not ring.changed()
    keys.authorize("carol")
    assert ring.changed()


def test_broken_files_are_skipped_and_a_missing_directory_lets_nobody_in(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    (keys.authorized / "garbage.key").write_text("public-key = \"not a key\"\n")
    (keys.authorized / "empty.key").write_text("")
    # 40 characters outside z85's alphabet (pyzmq's decoder raised KeyError on these)
    (keys.authorized / "tilde.key").write_text('public-key = "' + "~" * 40 + '"\n')
    ring = AuthorizedKeys(keys.authorized)
    with caplog.at_level(logging.WARNING, logger="messaging.curve"):
        ring.reload()
    assert len(ring) == 2
    assert sum("ignoring" in r.getMessage() for r in caplog.records) == 3
    alice = keys.publics["alice"].read_text().split('"')[1]
    assert ring.allows(alice)
    assert not ring.allows(None)
    assert not ring.allows("")
    for path in keys.authorized.iterdir():
        path.unlink()
    keys.authorized.rmdir()
    assert ring.changed()
    with caplog.at_level(logging.ERROR, logger="messaging.curve"):
        change = ring.reload()
    assert len(change.removed) == 2
    assert not ring.allows(alice)
    assert any("no client is authorised" in r.getMessage() for r in caplog.records)


def test_a_removed_key_loses_its_event_subscription(
    context: zmq.Context[Any], keys: Keys, auth: Authenticator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher = EventPublisher(context=context, endpoint="tcp://127.0.0.1:0",
                               curve=keys.config)
    publisher.start()
    endpoint = publisher.bound_endpoint
    try:
        with Subscriber(endpoint, ["|t|"], curve=keys.curve("alice"), context=context) as alice, \
                Subscriber(endpoint, ["|t|"], curve=keys.curve("bob"), context=context) as bob:
            for sub in (alice, bob):
                _receive_while_publishing(publisher, sub, "before")
            keys.revoke("alice")
            assert auth.keys.reload().removed
            with caplog.at_level(logging.WARNING, logger="messaging.events"):
                publisher.drop_subscribers()
                wait_for(lambda: publisher.rebinds == 1, 10, what="the rebind")
                # logged just after the count goes up, on the publisher's thread
                wait_for(lambda: any("dropped every event subscriber" in r.getMessage()
                                     for r in caplog.records), 10, what="the rebind's log")
            # bob reconnects through ZAP and gets the new events; alice is refused there
            _receive_while_publishing(publisher, bob, "after")
            while (event := alice.receive(0)) is not None:
                assert event[1]["phase"] == "before", "a removed key still gets events"
    finally:
        publisher.stop()


def _receive_while_publishing(publisher: EventPublisher, sub: Subscriber, phase: str) -> None:
    """Publish until ``sub`` receives an event of ``phase`` (PUB drops until connected)."""
    def received() -> bool:
        publisher.publish("|t|x", {"phase": phase})
        event = sub.receive(0.05)
        while event is not None and event[1]["phase"] != phase:
            event = sub.receive(0.05)
        return event is not None

    wait_for(received, 20, interval=0.0, what=f"an event of phase {phase}")
