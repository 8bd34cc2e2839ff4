"""Calling another host's agent: tcp with CURVE, bounded in time, failures told apart.

An agent calls a peer's verbs (``VM.migrationCreate`` and its fellows) as a client of the
peer's API: this host's key pair is its identity, the peer's server public key is how it
knows it talks to the right agent. :meth:`PeerClient.call` watches the connection through
the socket's monitor so that a failure says what went wrong, at once where it can:

- nothing listens there, or no route (``connect`` keeps being retried) within
  ``connect_timeout``: :class:`~messaging.errors.PeerUnreachable`, "connection refused";
- the peer's ZAP refused this host's key (``HANDSHAKE_FAILED_AUTH``): ``PeerUnreachable``
  at once, "it does not authorise this host's key";
- the CURVE handshake failed otherwise (the configured server key is not the peer's):
  ``PeerUnreachable`` at once;
- the handshake succeeded but no answer came within ``timeout``: ``PeerUnreachable``, "no
  answer";
- the peer answered with an error: :class:`~messaging.errors.PeerError` with its code and
  message.

Each call uses a socket (and a ZeroMQ context) of its own, closed when the call ends, so a
call abandoned at its deadline leaves nothing behind, and calls from several threads never
share a socket.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from messaging import codec
from messaging.curve import ClientCurve, apply_client
from messaging.errors import PeerError, PeerUnreachable

log = logging.getLogger(__name__)

_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECT_DELAYED
           | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
           | zmq.EVENT_DISCONNECTED)
_ids = itertools.count(1)


class PeerClient:
    """The agent called ``name`` at ``endpoint`` (tcp), reached with ``curve``."""

    def __init__(self, name: str, endpoint: str, curve: ClientCurve, *,
                 connect_timeout: float = 10.0) -> None:
        self.name = name
        self.endpoint = endpoint
        self.curve = curve
        self.connect_timeout = connect_timeout

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             timeout: float) -> Any:
        """``method``'s result; PeerUnreachable or PeerError (see the module doc)."""
        context: zmq.Context[Any] = zmq.Context()
        try:
            return self._call(context, method, params or {}, timeout)
        finally:
            context.destroy(linger=0)

    def _unreachable(self, reason: str) -> PeerUnreachable:
        return PeerUnreachable(peer=self.name, endpoint=self.endpoint, reason=reason)

    def _call(self, context: zmq.Context[Any], method: str, params: dict[str, Any],
              timeout: float) -> Any:
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        try:
            apply_client(sock, self.curve)
        except (OSError, ValueError) as e:
            raise self._unreachable(f"this host's CURVE keys are unusable: {e}") from None
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(self.connect_timeout * 1000))
        monitor = sock.get_monitor_socket(_EVENTS)
        request_id = next(_ids)
        started = time.monotonic()
        connect_by = started + self.connect_timeout
        answer_by = started + max(timeout, self.connect_timeout)
        handshaken = False
        problem = "no answer"
        try:
            sock.connect(self.endpoint)
            sock.send_multipart([b"", codec.encode(
                {"id": request_id, "method": method, "params": params})])
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            while True:
                now = time.monotonic()
                limit = answer_by if handshaken else min(connect_by, answer_by)
                if now >= limit:
                    if handshaken:
                        raise self._unreachable(f"no answer to {method} within "
                                                f"{timeout:g} s")
                    raise self._unreachable(f"{problem} (after {self.connect_timeout:g} s)")
                ready = dict(poller.poll(int((limit - now) * 1000) + 1))
                if monitor in ready:
                    handshaken, problem = self._on_event(recv_monitor_message(monitor),
                                                         handshaken, problem)
                if sock in ready:
                    reply = codec.decode(sock.recv_multipart()[-1],
                                         codec.Limits(max_frame=64 << 20))
                    if isinstance(reply, dict) and reply.get("id") == request_id:
                        return self._outcome(method, reply)
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)

    def _on_event(self, event: dict[str, Any], handshaken: bool,
                  problem: str) -> tuple[bool, str]:
        kind = event["event"]
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return True, problem
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            raise self._unreachable(
                f"it does not authorise this host's key (ZAP status {event['value']}): "
                "add this host's public key to its authorized_keys")
        if kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            raise self._unreachable(
                "the CURVE handshake failed: is the peer's public_key its server key, and "
                "does it serve CURVE?")
        if kind in (zmq.EVENT_CONNECT_RETRIED, zmq.EVENT_CONNECT_DELAYED) and not handshaken:
            return handshaken, "connection refused or no route to it"
        if kind == zmq.EVENT_CONNECTED and not handshaken:
            return handshaken, "connected, but no CURVE handshake"
        if kind == zmq.EVENT_DISCONNECTED and not handshaken:
            return handshaken, "it closed the connection during the handshake"
        return handshaken, problem

    def _outcome(self, method: str, reply: dict[str, Any]) -> Any:
        if "error" not in reply:
            return reply.get("result")
        error = reply["error"] if isinstance(reply["error"], dict) else {}
        code = error.get("code", -32603)
        message = str(error.get("message", ""))[:2000]
        raise PeerError(peer=self.name, method=method,
                        peer_code=code if isinstance(code, int) else -32603,
                        peer_message=message)
