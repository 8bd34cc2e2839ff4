"""The registration protocol's messages: what either side accepts from the other.

The exchanges over real sockets are tests/integration/test_registration.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgpack
import pytest
import zmq

from messaging import registration
from messaging.errors import BadRegistrationMessage

pytestmark = pytest.mark.timeout(30)

HOST = str(uuid.uuid4())
KEY = zmq.curve_keypair()[0].decode("ascii")
ENGINE_KEY = zmq.curve_keypair()[0].decode("ascii")


def frame(**changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "host_uuid": HOST, "hostname": "node1.example.com", "caps": {"cpuCores": 4},
        "public_key": KEY, "api_endpoint": "tcp://192.0.2.10:54321",
        "nonce": registration.new_nonce(), "now": 1.7e9}
    fields.update(changes)
    return registration.register(**fields)


def raw(message: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(message))


def bad(data: bytes) -> str:
    with pytest.raises(BadRegistrationMessage) as caught:
        registration.parse_register(data)
    assert caught.value.code == 604
    return caught.value.message


def test_a_registration_round_trips() -> None:
    parsed = registration.parse_register(frame())
    assert parsed["hostUUID"] == HOST and parsed["publicKey"] == KEY
    assert parsed["caps"] == {"cpuCores": 4} and parsed["time"] == 1.7e9


def test_hostile_registrations_are_refused() -> None:
    assert "version 1" in bad(raw({"type": "register"}))
    assert "not a msgpack map" in bad(b"\xc1garbage")
    assert "bytes" in bad(b"\x00" * (registration.MAX_FRAME + 1))
    assert "expected register" in bad(registration.hello())
    assert "hostUUID" in bad(frame(host_uuid="../../etc"))
    assert "canonical" in bad(frame(host_uuid=HOST.upper()))
    assert "hostname" in bad(frame(hostname="a b;rm -rf"))
    assert "hostname" in bad(frame(hostname="x" * 300))
    assert "publicKey" in bad(frame(public_key="A" * 39))
    assert "publicKey" in bad(frame(public_key="\x00" * 40))
    assert "apiEndpoint" in bad(frame(api_endpoint="ipc:///run/vdsm/api.sock"))
    assert "apiEndpoint" in bad(frame(api_endpoint="tcp://$(id):1"))
    assert "nonce" in bad(frame(nonce="0" * 31))
    assert "caps" in bad(frame(caps={"nested": {"deep": 1}}))
    assert "caps" in bad(frame(caps=[1]))
    assert "time" in bad(frame(now=True))
    nested: Any = 1
    for _ in range(10):
        nested = [nested]
    assert "not a msgpack map" in bad(raw({"v": 1, "type": "register", "caps": nested}))


def test_the_host_accepts_only_the_answer_to_its_own_request() -> None:
    nonce = registration.new_nonce()

    def parse(data: bytes) -> dict[str, Any]:
        return registration.parse_reply(data, nonce=nonce, host_uuid=HOST,
                                        engine_key=ENGINE_KEY)

    ok = registration.answer("approved", nonce=nonce, host_uuid=HOST, engine_key=ENGINE_KEY)
    assert parse(ok) == {"type": "approved", "engineKey": ENGINE_KEY}
    assert parse(registration.answer("pending", nonce=nonce, host_uuid=HOST))["type"] == (
        "pending")
    for data, why in (
        (registration.answer("approved", nonce=registration.new_nonce(), host_uuid=HOST,
                             engine_key=ENGINE_KEY), "another nonce"),
        (registration.answer("approved", nonce=nonce, host_uuid=str(uuid.uuid4()),
                             engine_key=ENGINE_KEY), "another host"),
        (registration.answer("approved", nonce=nonce, host_uuid=HOST, engine_key=KEY),
         "another engine key"),
        (registration.answer("approved", nonce=nonce, host_uuid=HOST, engine_key="x"),
         "z85"),
        (registration.engine_reply(ENGINE_KEY, "tcp://127.0.0.1:1"), "expected pending"),
    ):
        with pytest.raises(BadRegistrationMessage, match=why):
            parse(data)


def test_the_engine_hello_answer_is_checked() -> None:
    assert registration.parse_engine(registration.engine_reply(ENGINE_KEY,
                                                               "tcp://127.0.0.1:4000")) == (
        ENGINE_KEY, "tcp://127.0.0.1:4000")
    with pytest.raises(BadRegistrationMessage, match="register"):
        registration.parse_engine(registration.engine_reply(ENGINE_KEY, "ipc:///tmp/x"))
    with pytest.raises(BadRegistrationMessage, match="publicKey"):
        registration.parse_engine(registration.engine_reply("short", "tcp://127.0.0.1:1"))
    fp = registration.fingerprint(ENGINE_KEY)
    assert fp.startswith("SHA256:") and len(fp) == 7 + 64
