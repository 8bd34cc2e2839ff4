"""The client library and the ``vdsm-client`` command.

``Client`` speaks the request/reply protocol over a DEALER socket (several requests may be in
flight; replies are matched by id). ``Subscriber`` reads the event stream. ``main`` is the
``vdsm-client`` command (:mod:`messaging.cli`).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, Self

import zmq
from zmq.utils.monitor import recv_monitor_message

from messaging import codec, endpoints
from messaging.curve import ClientCurve, apply_client


class ClientError(Exception):
    """An error reply: ``code``, ``message`` and optional ``data`` as the server sent them."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class CallTimeout(Exception):
    pass


class _Connected:
    """One socket connected to ``endpoint``, closed by :meth:`close` (or the ``with`` block),
    with the ZeroMQ context it made when none was given."""

    def __init__(self, endpoint: str, kind: int, *, curve: ClientCurve | None,
                 context: zmq.Context[Any] | None, subscribe: Sequence[str] = (),
                 monitor: int = 0) -> None:
        self.endpoint = endpoint
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._sock: zmq.Socket[Any] = self._context.socket(kind)
        self._monitor: zmq.Socket[Any] | None = None
        try:
            self._sock.linger = 0
            if curve is not None:
                apply_client(self._sock, curve)
            for prefix in subscribe:
                self._sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
            if monitor:  # before connect: its first events are the ones that matter
                self._monitor = self._sock.get_monitor_socket(monitor)
            self._sock.connect(self.endpoint)
        except BaseException:
            self.close()  # a bad endpoint or key: nothing left open (socket, own context)
            raise

    def close(self) -> None:
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        self._sock.close(linger=0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(_Connected):
    def __init__(
        self,
        endpoint: str | None = None,
        *,
        timeout: float = 60.0,
        curve: ClientCurve | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.timeout = timeout
        super().__init__(endpoint or endpoints.default_api_endpoint(), zmq.DEALER, curve=curve,
                         context=context)
        self._ids = itertools.count(1)

    def call(self, method: str, params: dict[str, Any] | None = None,
             *, timeout: float | None = None) -> Any:
        """Call ``method``; its result, or ClientError / CallTimeout."""
        request_id = next(self._ids)
        request: dict[str, Any] = {"id": request_id, "method": method}
        if params:
            request["params"] = params
        self._sock.send_multipart([b"", codec.encode(request)])
        reply = self._wait(request_id, self.timeout if timeout is None else timeout)
        if "error" in reply:
            error = reply["error"]
            raise ClientError(error.get("code", -32603), error.get("message", ""),
                              error.get("data"))
        return reply.get("result")

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a request without id: executed, never answered."""
        request: dict[str, Any] = {"method": method}
        if params:
            request["params"] = params
        self._sock.send_multipart([b"", codec.encode(request)])

    def _wait(self, request_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sock.poll(int(remaining * 1000) + 1):
                raise CallTimeout(f"no reply within {timeout:g} s from {self.endpoint}")
            frames = self._sock.recv_multipart()
            reply = codec.decode(frames[-1], codec.Limits(max_frame=1 << 30))
            if isinstance(reply, dict) and reply.get("id") == request_id:
                return reply
            # a late reply to an earlier request that timed out: skip it


_CONNECTED = zmq.EVENT_HANDSHAKE_SUCCEEDED
_NOT_CONNECTED = (zmq.EVENT_CLOSED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class Subscriber(_Connected):
    """Reads events: ``for topic, payload in Subscriber(ep, ["|virt|"]).events(timeout)``.

    Like any SUB socket it misses what is published before its subscription reaches the
    publisher: :meth:`wait_connected` before the request whose events are wanted."""

    def __init__(
        self,
        endpoint: str | None = None,
        prefixes: Sequence[str] = ("",),
        *,
        curve: ClientCurve | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        super().__init__(endpoint or endpoints.default_events_endpoint(), zmq.SUB, curve=curve,
                         context=context, subscribe=prefixes or ("",),
                         monitor=_CONNECTED | _NOT_CONNECTED)
        self._connected = False

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the connection to the publisher has done its handshake, after which
        this socket sends its subscriptions at once: events of a request sent from now on
        reach it (the publisher reads the subscriptions, which left first, while that
        request is being served). False, without waiting longer, when nothing accepts the
        connection or the handshake fails (no agent there, a refused key), or after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._connected and self._monitor is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not self._monitor.poll(int(left * 1000) + 1):
                return False
            event = recv_monitor_message(self._monitor)["event"]
            if event == _CONNECTED:
                self._connected = True
            elif event & _NOT_CONNECTED:
                return False
        return self._connected

    def receive(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The next event, or None if none came within ``timeout`` seconds."""
        if not self._sock.poll(int(timeout * 1000)):
            return None
        topic, body = self._sock.recv_multipart()[:2]
        return topic.decode("utf-8", "replace"), codec.decode(body, codec.Limits(1 << 30))

    def events(self, timeout: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events until ``timeout`` seconds pass without one (forever when None)."""
        while True:
            event = self.receive(3600.0 if timeout is None else timeout)
            if event is None:
                if timeout is None:
                    continue
                return
            yield event


# --- the command line ---------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A value that parses as JSON is JSON; anything else is the string itself (the console's
    ``call``, which does not know the verb's types; vdsm-client uses the schema)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    from messaging.cli.main import main as cli_main  # noqa: PLC0415 - cli imports this module

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
