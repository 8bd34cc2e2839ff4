"""Logs the handshakes a CURVE socket refuses before ZAP is even asked.

A client without CURVE (plain text) on a CURVE endpoint, or one with the wrong server key,
fails the ZMTP handshake inside libzmq: no ZAP request is made and nothing would be logged.
:class:`HandshakeLog` reads the socket's monitor events on a thread of its own (which
creates, uses and closes the monitor's PAIR socket) and logs each refusal, rate-limited.
libzmq's monitor names the local endpoint, not the peer.

Both ends check the other's greeting: when the client notices the mismatch first, it
closes, and the server only sees its connection drop during the handshake (no detail, an
errno). So a drop during the handshake is logged as well: a plain-text client causes one or
the other, and so may a client whose key ZAP refused, or a port scanner.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import threading
from typing import Any

import zmq

from messaging.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

# MONITOR_STOPPED: libzmq sends it on disable_monitor() only if it is in the mask.
_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
           | zmq.EVENT_MONITOR_STOPPED)
_PROTOCOL_ERRORS = {
    int(getattr(zmq, name)): name for name in dir(zmq) if name.startswith("PROTOCOL_ERROR_")
}
_MECHANISM_MISMATCH = int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
_ids = itertools.count(1)


class HandshakeLog:
    """Attach to a socket (on its owner thread) before it binds; detach before closing it."""

    def __init__(self, context: zmq.Context[Any], what: str) -> None:
        self._context = context
        self._what = what
        self._address = f"inproc://vdsm-handshakes-{next(_ids)}"
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._refused = RateLimitedLog(log, "refused handshakes")

    def attach(self, sock: zmq.Socket[Any]) -> None:
        sock.monitor(self._address, _EVENTS)
        self._thread = threading.Thread(target=self._run, name=f"handshakes-{self._what}",
                                        daemon=True)
        self._thread.start()
        self._connected.wait(5.0)

    def detach(self, sock: zmq.Socket[Any], timeout: float = 5.0) -> None:
        """Stop monitoring ``sock``: libzmq tells the thread, which then ends."""
        try:
            sock.disable_monitor()
        except zmq.ZMQError as e:
            log.debug("disable_monitor: %s", e)
        if self._thread is not None:
            self._thread.join(timeout)
        self._refused.flush()

    def _run(self) -> None:
        pair: zmq.Socket[Any] = self._context.socket(zmq.PAIR)
        try:
            pair.linger = 0
            pair.connect(self._address)
            self._connected.set()
            while True:
                frames = pair.recv_multipart()
                if len(frames) != 2 or len(frames[0]) != 6:
                    continue
                event, value = struct.unpack("=HI", frames[0])
                if event == zmq.EVENT_MONITOR_STOPPED:
                    return
                self._report(event, value, frames[1].decode("utf-8", "replace"))
        except zmq.ZMQError as e:
            if e.errno != zmq.ETERM:
                log.exception("handshake monitor of %s failed", self._what)
        finally:
            pair.close(linger=0)

    def _report(self, event: int, value: int, endpoint: str) -> None:
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
            self._refused("refused a client without CURVE (plain text or another mechanism) "
                          "on the %s endpoint %s", self._what, endpoint)
        elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            self._refused("refused a handshake on the %s endpoint %s: %s (a wrong server key "
                          "or a malformed handshake)", self._what, endpoint,
                          _PROTOCOL_ERRORS.get(value, hex(value)))
        else:
            self._refused("a client left during the handshake on the %s endpoint %s (%s): "
                          "a client without CURVE, or with a wrong or refused key",
                          self._what, endpoint, os.strerror(value) if value > 0 else value)
