"""The event stream: one PUB socket, owned by one thread.

``publish()`` may be called from any thread and never blocks: it puts the event on a queue
that the publisher thread drains onto the socket. Every payload gets ``notify_time``
(monotonic seconds). Like any PUB socket, slow subscribers lose events at the high-water mark,
and events sent before a subscription has propagated are not seen.

:meth:`EventPublisher.drop_subscribers` closes every subscriber's connection (the socket is
unbound and bound again): each subscriber reconnects by itself and, with CURVE, goes through
ZAP again. The daemon calls it when an authorised key is removed, since a PUB socket cannot
drop one subscriber. Events published meanwhile may be lost, as a PUB stream allows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import zmq

from messaging import codec, endpoints
from messaging.curve import CurveConfig, apply_server
from messaging.handshakes import HandshakeLog

log = logging.getLogger(__name__)

_STOP = object()
_REBIND = object()
REBIND_ATTEMPTS = 50  # x REBIND_DELAY: the old listener closes asynchronously
REBIND_DELAY = 0.1


class EventPublisher:
    def __init__(
        self,
        *,
        context: zmq.Context[Any],
        endpoint: str,
        curve: CurveConfig | None = None,
        insecure_tcp: bool = False,
        hwm: int = 10_000,
    ) -> None:
        self._context = context
        self._endpoint = endpoints.parse(endpoint)
        self._insecure = endpoints.check_security(
            self._endpoint, curve=curve is not None, insecure_tcp=insecure_tcp
        )
        self._handshakes = HandshakeLog(context, "events") if curve is not None else None
        self._curve = curve
        self._hwm = hwm
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self.bound_endpoint: str | None = None
        self.published = 0
        self.rebinds = 0

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the event publisher did not start")
        if self._start_error is not None:
            raise self._start_error

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        """False once the publisher thread has ended (stopped, or failed)."""
        return self._thread is not None and self._thread.is_alive()

    def drop_subscribers(self) -> None:
        """Close every subscriber's connection; they reconnect (through ZAP). Never blocks."""
        self._queue.put(_REBIND)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Queue one event; safe from any thread; never blocks."""
        self._queue.put((topic, {**payload, "notify_time": time.monotonic()}))

    def _run(self) -> None:
        sock = self._context.socket(zmq.PUB)
        try:
            sock.linger = 0
            sock.sndhwm = self._hwm
            if self._curve is not None:
                apply_server(sock, self._curve)
            if self._handshakes is not None:
                self._handshakes.attach(sock)
            endpoints.prepare_ipc(self._endpoint)
            sock.bind(self._endpoint.url)
            endpoints.secure_ipc(self._endpoint)
            self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except Exception as e:  # noqa: BLE001 - reported to start()'s caller
            self._close(sock)
            self._start_error = e
            self._ready.set()
            return
        log.info("event publisher on %s", self.bound_endpoint)
        if self._insecure:
            log.warning("INSECURE: events on %s are published without CURVE (insecure_tcp is "
                        "set): every local user can read them", self.bound_endpoint)
        self._ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                if item is _REBIND:
                    self._rebind(sock)
                    continue
                topic, payload = item
                try:
                    body = codec.encode(payload)
                except (TypeError, ValueError, OverflowError):
                    log.exception("cannot encode event %s: dropped", topic)
                    continue
                try:
                    sock.send_multipart([topic.encode(), body], zmq.NOBLOCK)
                    self.published += 1
                except zmq.Again:
                    pass  # PUB does not block; a full pipe drops, as documented
        except Exception:
            log.exception("event publisher failed")
            raise
        finally:
            self._close(sock)

    def _close(self, sock: zmq.Socket[Any]) -> None:
        if self._handshakes is not None:
            self._handshakes.detach(sock)
        sock.close(linger=0)

    def _rebind(self, sock: zmq.Socket[Any]) -> None:
        """Unbind (which closes every subscriber's connection) and bind the same address."""
        bound = self.bound_endpoint
        assert bound is not None
        sock.unbind(bound)
        for _ in range(REBIND_ATTEMPTS):
            try:
                sock.bind(bound)
                break
            except zmq.ZMQError as e:
                if e.errno != zmq.EADDRINUSE:
                    raise
                time.sleep(REBIND_DELAY)  # the old listener is still closing
        else:
            raise RuntimeError(f"could not bind {bound} again after dropping its subscribers")
        endpoints.secure_ipc(self._endpoint)
        log.warning("dropped every event subscriber on %s: each reconnects through ZAP "
                    "(the authorised keys changed)", bound)
        self.rebinds += 1  # after its log line: whoever sees the count sees the line too
