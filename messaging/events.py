"""The event stream: one PUB socket, owned by one thread.

``publish()`` may be called from any thread and never blocks: it puts the event on a queue
that the publisher thread drains onto the socket. Every payload gets ``notify_time``
(monotonic seconds). Like any PUB socket, slow subscribers lose events at the high-water mark,
and events sent before a subscription has propagated are not seen.
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

log = logging.getLogger(__name__)

_STOP = object()


class EventPublisher:
    def __init__(
        self,
        *,
        context: zmq.Context[Any],
        endpoint: str,
        curve: CurveConfig | None = None,
        hwm: int = 10_000,
    ) -> None:
        self._context = context
        self._endpoint = endpoints.parse(endpoint)
        if not self._endpoint.is_loopback() and curve is None:
            raise ValueError(f"refusing to publish on {endpoint} without CURVE keys")
        self._curve = curve
        self._hwm = hwm
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self.bound_endpoint: str | None = None
        self.published = 0

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
            endpoints.prepare_ipc(self._endpoint)
            sock.bind(self._endpoint.url)
            endpoints.secure_ipc(self._endpoint)
            self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except Exception as e:  # noqa: BLE001 - reported to start()'s caller
            sock.close(linger=0)
            self._start_error = e
            self._ready.set()
            return
        self._ready.set()
        log.info("event publisher on %s", self.bound_endpoint)
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
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
        finally:
            sock.close(linger=0)
