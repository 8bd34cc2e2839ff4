"""A minimal engine side of the registration protocol (docs/registration.md), on loopback.

A test double for the management engine (oVirt's engine is not part of this project and
cannot run here): real ZeroMQ sockets, real CURVE, the engine-side checks the protocol asks
for. It answers ``hello`` with its key, keeps each registration pending until the test
approves the host, and refuses a nonce it has seen, a registration too old or too new, and
one whose ``publicKey`` is not the key the CURVE handshake proved. For the host-side checks
it can misbehave on demand (:attr:`Engine.canned`: answer a recorded frame instead).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from messaging import registration
from messaging.curve import ClientCurve, generate_keys
from messaging.errors import BadRegistrationMessage


@dataclass
class Seen:
    frame: bytes
    user: str
    answer: bytes = b""
    parsed: dict[str, Any] = field(default_factory=dict)


class Engine:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.public_file, self.secret_file = generate_keys(workdir / "keys", "engine")
        public, secret = zmq.auth.load_certificate(self.secret_file)
        assert secret is not None
        self.key = public.decode("ascii")
        self.fingerprint = registration.fingerprint(self.key)
        self.context: zmq.Context[Any] = zmq.Context()
        self.auth = ThreadAuthenticator(self.context)
        self.auth.start()
        # any client key may ask to register; the registration's key must be the client's
        self.auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        self.hello_sock = self.context.socket(zmq.REP)
        self.hello_sock.setsockopt(zmq.LINGER, 0)
        self.hello_sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.hello_sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.reg_sock = self.context.socket(zmq.ROUTER)
        self.reg_sock.setsockopt(zmq.LINGER, 0)
        self.reg_sock.curve_secretkey, self.reg_sock.curve_publickey = secret, public
        self.reg_sock.curve_server = True
        self.reg_sock.bind("tcp://127.0.0.1:*")
        self.register_endpoint = self.reg_sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._lock = threading.Lock()
        self.approved: set[str] = set()
        self.refused: set[str] = set()
        self.nonces: set[str] = set()
        self.seen: list[Seen] = []
        self.hosts: dict[str, dict[str, Any]] = {}  # hostUUID -> its approved registration
        self.canned: bytes | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="engine", daemon=True)
        self._thread.start()

    # --- the operator's side ---------------------------------------------------------------

    def approve(self, host_uuid: str) -> None:
        with self._lock:
            self.approved.add(host_uuid)

    def refuse(self, host_uuid: str) -> None:
        with self._lock:
            self.refused.add(host_uuid)

    def host_curve(self, host_uuid: str) -> ClientCurve:
        """What the engine needs to drive an approved host: its own secret, the host's key."""
        with self._lock:
            host = self.hosts[host_uuid]
        public = self.workdir / f"{host_uuid}.key"
        public.write_text(f'metadata\ncurve\n    public-key = "{host["publicKey"]}"\n')
        return ClientCurve(self.secret_file, public)

    # --- the protocol ----------------------------------------------------------------------

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.hello_sock, zmq.POLLIN)
        poller.register(self.reg_sock, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(50))
            if self.hello_sock in ready:
                self.hello_sock.recv()
                self.hello_sock.send(registration.engine_reply(self.key,
                                                               self.register_endpoint))
            if self.reg_sock in ready:
                parts = self.reg_sock.recv_multipart(copy=False)
                user = parts[-1].get("User-Id")
                seen = Seen(parts[-1].bytes, user if isinstance(user, str) else "")
                seen.answer = self._answer(seen)
                with self._lock:
                    self.seen.append(seen)
                self.reg_sock.send_multipart([parts[0].bytes, b"", seen.answer])

    def _answer(self, seen: Seen) -> bytes:
        if self.canned is not None:
            return self.canned
        try:
            message = registration.parse_register(seen.frame)
        except BadRegistrationMessage as e:
            return registration.answer("refused", nonce="", host_uuid="", reason=e.message)
        seen.parsed = message
        host, nonce = message["hostUUID"], message["nonce"]

        def refused(reason: str) -> bytes:
            return registration.answer("refused", nonce=nonce, host_uuid=host, reason=reason)

        with self._lock:
            if message["publicKey"] != seen.user:
                return refused("publicKey is not the key of this CURVE connection")
            if abs(time.time() - message["time"]) > registration.MAX_SKEW:
                return refused("the registration's time is too far from the engine's")
            if nonce in self.nonces:
                return refused("replayed: this nonce was used before")
            self.nonces.add(nonce)
            if host in self.refused:
                return refused("the operator refused this host")
            if host not in self.approved:
                return registration.answer("pending", nonce=nonce, host_uuid=host)
            self.hosts[host] = message
        return registration.answer("approved", nonce=nonce, host_uuid=host,
                                   engine_key=self.key)

    def send_raw(self, frame: bytes, curve: tuple[bytes, bytes]) -> dict[str, Any]:
        """Send a recorded registration frame over a new CURVE connection with the key pair
        ``curve`` (public, secret), as a replaying attacker would; the engine's answer."""
        sock = self.context.socket(zmq.REQ)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.curve_publickey, sock.curve_secretkey = curve
            sock.curve_serverkey = self.key.encode("ascii")
            sock.connect(self.register_endpoint)
            sock.send(frame)
            assert sock.poll(30_000), "the engine did not answer"
            return registration.decode(sock.recv(),
                                       expected=("pending", "refused", "approved"))
        finally:
            sock.close(linger=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.hello_sock.close(linger=0)
        self.reg_sock.close(linger=0)
        self.auth.stop()
        self.context.destroy(linger=0)
