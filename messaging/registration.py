"""The host registration protocol (docs/registration.md): messages, and their checks.

Two exchanges over ZeroMQ REQ/REP, each one msgpack map per frame:

1. ``hello`` on the engine's public endpoint, without CURVE: the engine answers its public
   key and the CURVE endpoint where hosts register. The host checks the key against the
   fingerprint the operator gave (or shows it, trust on first use).
2. ``register`` on that endpoint, over CURVE: the host's own key pair is the client key (so
   the engine knows the key is the host's: the handshake proves it), and the engine's key
   from step 1 the server key (so the host knows it talks to that engine). The engine
   answers ``pending``, ``refused`` or ``approved``; an answer echoes the request's fresh
   ``nonce`` and names the host, so that an old answer replayed, or one meant for another
   host, is refused.

Both sides use these functions; every message from the other side is hostile until
:func:`parse_reply` or :func:`parse_register` accepted it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from typing import Any

from zmq.utils import z85

from messaging import codec, curve
from messaging.errors import BadRegistrationMessage, VdsmError

VERSION = 1
MAX_FRAME = 64 * 1024
LIMITS = codec.Limits(max_frame=MAX_FRAME, max_depth=4, max_container_len=256,
                      max_str_len=4096)
#: a registration older or newer than this (seconds, by the engine's clock) is refused
MAX_SKEW = 300.0

_NONCE = re.compile(r"[0-9a-f]{32}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
_ENDPOINT = re.compile(r"tcp://[A-Za-z0-9.:\[\]-]{1,250}:[0-9]{1,5}")
_TEXT_LIMIT = 256


def new_nonce() -> str:
    return secrets.token_hex(16)


def fingerprint(public_key: str) -> str:
    """``SHA256:<hex>`` of a z85 public key's 32 bytes: what an operator compares."""
    return "SHA256:" + hashlib.sha256(z85.decode(check_key(public_key, "key"))).hexdigest()


def check_key(value: Any, name: str) -> str:
    if not isinstance(value, str) or not curve.is_key(value):
        raise BadRegistrationMessage(reason=f"{name} is not a 40-character z85 CURVE key")
    return value


def check_hostname(value: str) -> str:
    if not _HOSTNAME.fullmatch(value):
        raise BadRegistrationMessage(reason=f"hostname {value!r:.80} is not a DNS name")
    return value


def encode(message: dict[str, Any]) -> bytes:
    return codec.encode({"v": VERSION, **message})


def decode(frame: bytes, *, expected: tuple[str, ...]) -> dict[str, Any]:
    """A message of one of the ``expected`` types, bounded; anything else is refused."""
    if len(frame) > MAX_FRAME:
        raise BadRegistrationMessage(reason=f"a frame of {len(frame)} bytes")
    try:
        value = codec.decode(frame, LIMITS)
    except VdsmError as e:
        raise BadRegistrationMessage(reason=f"not a msgpack map ({e})") from None
    if not isinstance(value, dict) or value.get("v") != VERSION:
        raise BadRegistrationMessage(reason=f"not a version {VERSION} message")
    if value.get("type") not in expected:
        raise BadRegistrationMessage(reason=f"type {value.get('type')!r:.40}, expected "
                                     f"{' or '.join(expected)}")
    return value


def _text(message: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not value or len(value) > _TEXT_LIMIT:
        raise BadRegistrationMessage(reason=f"{name} must be a short string")
    if pattern is not None and not pattern.fullmatch(value):
        raise BadRegistrationMessage(reason=f"{name} {value!r:.80} is malformed")
    return value


def _uuid(message: dict[str, Any], name: str) -> str:
    text = _text(message, name)
    try:
        value = str(uuid.UUID(text))
    except ValueError:
        raise BadRegistrationMessage(reason=f"{name} is not a UUID") from None
    if value != text:
        raise BadRegistrationMessage(reason=f"{name} is not a canonical UUID")
    return value


# --- 1. hello ------------------------------------------------------------------------------


def hello() -> bytes:
    return encode({"type": "hello"})


def engine_reply(public_key: str, register: str) -> bytes:
    return encode({"type": "engine", "publicKey": public_key, "register": register})


def parse_engine(frame: bytes) -> tuple[str, str]:
    """The engine's public key and its registration endpoint (tcp only)."""
    message = decode(frame, expected=("engine",))
    return (check_key(message.get("publicKey"), "publicKey"),
            _text(message, "register", _ENDPOINT))


# --- 2. register ---------------------------------------------------------------------------


def register(*, host_uuid: str, hostname: str, caps: dict[str, Any], public_key: str,
             api_endpoint: str, nonce: str, now: float) -> bytes:
    return encode({"type": "register", "hostUUID": host_uuid, "hostname": hostname,
                   "caps": caps, "publicKey": public_key, "apiEndpoint": api_endpoint,
                   "nonce": nonce, "time": now})


def parse_register(frame: bytes) -> dict[str, Any]:
    """The engine side: a registration, every field checked (not yet its freshness)."""
    message = decode(frame, expected=("register",))
    caps = message.get("caps")
    if not isinstance(caps, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int | float | bool)
            for k, v in caps.items()):
        raise BadRegistrationMessage(reason="caps must map names to plain values")
    when = message.get("time")
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise BadRegistrationMessage(reason="time must be a number")
    return {"hostUUID": _uuid(message, "hostUUID"),
            "hostname": _text(message, "hostname", _HOSTNAME),
            "caps": caps,
            "publicKey": check_key(message.get("publicKey"), "publicKey"),
            "apiEndpoint": _text(message, "apiEndpoint", _ENDPOINT),
            "nonce": _text(message, "nonce", _NONCE),
            "time": float(when)}


def answer(kind: str, *, nonce: str, host_uuid: str, engine_key: str = "",
           reason: str = "") -> bytes:
    """The engine's answer: ``pending``, ``refused`` (with a reason) or ``approved``."""
    message: dict[str, Any] = {"type": kind, "nonce": nonce, "hostUUID": host_uuid}
    if kind == "approved":
        message["engineKey"] = engine_key
    if kind == "refused":
        message["reason"] = reason[:_TEXT_LIMIT]
    return encode(message)


def parse_reply(frame: bytes, *, nonce: str, host_uuid: str,
                engine_key: str) -> dict[str, Any]:
    """The host side: the engine's answer to *this* request (its nonce, this host, and
    for an approval, the key the CURVE handshake already proved), or an error."""
    message = decode(frame, expected=("pending", "refused", "approved"))
    if message.get("nonce") != nonce:
        raise BadRegistrationMessage(reason="the answer is not to this request (another "
                                     "nonce: a replayed or misrouted answer)")
    if message.get("hostUUID") != host_uuid:
        raise BadRegistrationMessage(reason="the answer names another host")
    kind = message["type"]
    if kind == "approved":
        key = check_key(message.get("engineKey"), "engineKey")
        if key != engine_key:
            raise BadRegistrationMessage(reason="the approval names another engine key than "
                                         "the one this host connected to")
        return {"type": kind, "engineKey": key}
    if kind == "refused":
        reason = message.get("reason")
        return {"type": kind, "reason": str(reason)[:_TEXT_LIMIT] if reason else "no reason"}
    return {"type": kind}
