"""``vdsm-tool register``: announce this host to an engine and authorise the engine's key.

The protocol is :mod:`messaging.registration` (docs/registration.md). What this side
guarantees: nothing is written unless the engine approved *this* request (its fresh nonce,
this host's UUID) over a CURVE connection to the key the operator accepted; then the
engine's public key goes into the authorised keys directory, which vdsmd re-reads (``[curve]
reload_interval``, or SIGHUP), and from then on the engine can drive the agent.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from actors.storage import fileutil
from actors.tool.identity import PUBLIC_MODE, Identity, certificate, problems, read_pair
from messaging import endpoints, registration
from messaging.errors import (
    BadRegistrationMessage,
    EngineKeyMismatch,
    EngineUnreachable,
    HostNotConfigured,
    RegistrationPending,
    RegistrationRefused,
)

log = logging.getLogger(__name__)

WILDCARDS = ("0.0.0.0", "*", "::", "[::]")  # noqa: S104 (refused as announced addresses)


@dataclass(frozen=True)
class Request:
    engine: str
    identity: Identity
    api_endpoint: str
    curve_enabled: bool
    hostname: str
    fingerprint: str | None = None  # the engine key the operator expects; None: show it
    timeout: float = 10.0  # per exchange
    wait: float = 0.0  # how long to ask again while the engine says pending
    poll: float = 1.0


def caps_summary() -> dict[str, Any]:
    """What an engine needs to place the host, read without libvirt or the agent."""
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    pretty = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip('"')[:100]
    except OSError:
        pass
    try:
        version = metadata.version("vdsm-actors")
    except metadata.PackageNotFoundError:  # run from a source tree
        version = "unknown"
    return {"arch": platform.machine(), "kernel": platform.release()[:100],
            "cpuCores": os.cpu_count() or 0, "memMiB": mem_kib // 1024, "os": pretty,
            "kvm": Path("/dev/kvm").exists(), "agentVersion": version}


def _check(request: Request) -> tuple[bytes, bytes, str]:
    """This host's key pair and UUID, or why it cannot register."""
    missing = problems(request.identity)
    if missing:
        raise HostNotConfigured(reason="; ".join(missing))
    if not request.curve_enabled:
        raise HostNotConfigured(reason="the agent's API has no CURVE keys ([curve] "
                                "server_secret, docs/registration.md)")
    try:
        api = endpoints.parse(request.api_endpoint)
        engine = endpoints.parse(request.engine)
    except ValueError as e:
        raise BadRegistrationMessage(reason=str(e)) from None
    if api.transport != "tcp" or api.host in WILDCARDS:
        raise BadRegistrationMessage(reason=f"the engine cannot reach {api.url}: announce a "
                                     "tcp://HOST:PORT it can reach (--api)")
    registration.check_hostname(request.hostname)  # the engine would refuse it
    if engine.transport != "tcp":
        raise BadRegistrationMessage(reason=f"the engine endpoint {engine.url} is not tcp://")
    public, secret = read_pair(request.identity.secret_file)
    uuid_text = request.identity.uuid_file.read_text().strip()
    return public, secret, uuid_text


def _exchange(context: zmq.Context[Any], endpoint: str, frame: bytes, timeout: float, *,
              engine: str, curve: tuple[bytes, bytes, bytes] | None = None) -> bytes:
    """One request and its one-frame answer on a fresh REQ socket (closed at once after:
    a REQ socket whose answer never came cannot be used again)."""
    sock = context.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, registration.MAX_FRAME)
        if curve is not None:
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve
        sock.connect(endpoint)
        sock.send(frame)
        if not sock.poll(int(timeout * 1000)):
            raise EngineUnreachable(engine=endpoint, timeout=timeout)
        parts: list[bytes] = sock.recv_multipart()
    finally:
        sock.close(linger=0)
    if len(parts) != 1:
        raise BadRegistrationMessage(reason=f"{engine} answered {len(parts)} frames")
    return parts[0]


def engine_key(context: zmq.Context[Any], request: Request) -> tuple[str, str]:
    """Step 1: the engine's key (checked against the expected fingerprint) and endpoint."""
    frame = _exchange(context, request.engine, registration.hello(), request.timeout,
                      engine=request.engine)
    key, endpoint = registration.parse_engine(frame)
    got = registration.fingerprint(key)
    if request.fingerprint is not None and got != request.fingerprint:
        raise EngineKeyMismatch(engine=request.engine, got=got, expected=request.fingerprint)
    return key, endpoint


def register(request: Request, say: Callable[[str], None]) -> Path:
    """Register; returns the authorised key file of the engine. Raises RegistrationError."""
    public, secret, host_uuid = _check(request)
    context: zmq.Context[Any] = zmq.Context()
    try:
        key, endpoint = engine_key(context, request)
        say(f"engine key {registration.fingerprint(key)}"
            + (" (as expected)" if request.fingerprint else
               " (not checked: pass --engine-fingerprint to pin it)"))
        deadline = time.monotonic() + request.wait
        while True:
            nonce = registration.new_nonce()
            frame = registration.register(
                host_uuid=host_uuid, hostname=request.hostname, caps=caps_summary(),
                public_key=public.decode("ascii"), api_endpoint=request.api_endpoint,
                nonce=nonce, now=time.time())
            reply = registration.parse_reply(
                _exchange(context, endpoint, frame, request.timeout, engine=request.engine,
                          curve=(public, secret, key.encode("ascii"))),
                nonce=nonce, host_uuid=host_uuid, engine_key=key)
            if reply["type"] == "approved":
                break
            if reply["type"] == "refused":
                raise RegistrationRefused(engine=request.engine, reason=reply["reason"])
            if time.monotonic() + request.poll > deadline:
                raise RegistrationPending(engine=request.engine, host=host_uuid)
            say("pending: waiting for the engine's approval")
            time.sleep(request.poll)
    finally:
        context.destroy(linger=0)
    return authorise(request.identity, key)


def authorise(identity: Identity, key: str) -> Path:
    """Put ``key`` into the authorised keys (one file per key; idempotent)."""
    digest = registration.fingerprint(key).split(":", 1)[1][:16]
    path = identity.authorized_dir / f"engine-{digest}.key"
    data = certificate(key.encode("ascii"), None)
    try:
        if zmq.auth.load_certificate(path)[0] == key.encode("ascii"):
            return path
    except (OSError, ValueError):
        pass
    fileutil.write_atomic(path, data, mode=PUBLIC_MODE)
    log.info("authorised the engine key %s in %s", key, path)
    return path


def default_hostname() -> str:
    return socket.getfqdn() or socket.gethostname()
