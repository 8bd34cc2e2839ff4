"""The client library and the ``vdsm-client`` command.

``Client`` speaks the request/reply protocol over a DEALER socket (several requests may be in
flight; replies are matched by id). ``Subscriber`` reads the event stream. ``main`` is the
command line described in PROTOCOL.md.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import zmq

from messaging import codec, endpoints
from messaging.curve import ClientCurve, apply_client
from messaging.schema import SCHEMA
from messaging.schema.types import MISSING, Struct
from messaging.schema.verbs import Verb

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3


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


class Client:
    def __init__(
        self,
        endpoint: str | None = None,
        *,
        timeout: float = 60.0,
        curve: ClientCurve | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint = endpoint or endpoints.default_api_endpoint()
        self.timeout = timeout
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._sock: zmq.Socket[Any] = self._context.socket(zmq.DEALER)
        self._sock.linger = 0
        if curve is not None:
            apply_client(self._sock, curve)
        self._sock.connect(self.endpoint)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self._sock.close(linger=0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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


class Subscriber:
    """Reads events: ``for topic, payload in Subscriber(ep, ["|virt|"]).events(timeout)``."""

    def __init__(
        self,
        endpoint: str | None = None,
        prefixes: Sequence[str] = ("",),
        *,
        curve: ClientCurve | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint = endpoint or endpoints.default_events_endpoint()
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._sock: zmq.Socket[Any] = self._context.socket(zmq.SUB)
        self._sock.linger = 0
        if curve is not None:
            apply_client(self._sock, curve)
        for prefix in prefixes or ("",):
            self._sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self._sock.connect(self.endpoint)

    def close(self) -> None:
        self._sock.close(linger=0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode()}
    raise TypeError(f"cannot print {type(value).__name__}")


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=_json_default)


def parse_value(text: str) -> Any:
    """A value that parses as JSON is JSON; anything else is the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def verb_help(verb: Verb) -> str:
    lines = [f"{verb.name}: {verb.doc}"]
    if verb.aliases:
        lines.append(f"  aliases: {', '.join(verb.aliases)}")
    lines.append(f"  timeout: {verb.timeout:g} s")
    if verb.params:
        lines.append("  params:")
        for f in verb.params:
            flag = "required" if f.required else "optional"
            default = "" if f.required or f.default in (None, MISSING) \
                else f", default {f.default!r}"
            doc = f" - {f.doc}" if f.doc else ""
            lines.append(f"    {f.name} ({f.type.describe()}, {flag}{default}){doc}")
            if isinstance(f.type, Struct):
                for sub in f.type.fields:
                    sflag = "required" if sub.required else "optional"
                    lines.append(f"        .{sub.name} ({sub.type.describe()}, {sflag})")
    else:
        lines.append("  params: none")
    lines.append(f"  result: {verb.result}")
    return "\n".join(lines)


def namespace_help(namespace: str) -> str:
    verbs = [v for v in SCHEMA if v.namespace == namespace]
    lines = [f"{namespace} verbs:"]
    lines += [f"  {v.short_name:<24} {v.doc}" for v in verbs]
    return "\n".join(lines)


def _usage_error(message: str) -> NoReturn:
    print(f"vdsm-client: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _curve_from(args: argparse.Namespace) -> ClientCurve | None:
    if args.curve_secret or args.curve_server_key:
        if not (args.curve_secret and args.curve_server_key):
            _usage_error("--curve-secret and --curve-server-key go together")
        return ClientCurve(Path(args.curve_secret), Path(args.curve_server_key))
    return None


def _read_params_file(name: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
        params = json.loads(text)
    except (OSError, ValueError) as e:
        _usage_error(f"cannot read params from {name}: {e}")
    if not isinstance(params, dict):
        _usage_error(f"{name} must hold a JSON object of params")
    return params


def _run_events(args: argparse.Namespace, prefixes: list[str]) -> int:
    deadline = None if args.duration is None else time.monotonic() + args.duration
    count = 0
    signal.signal(signal.SIGINT, lambda *_: sys.exit(EXIT_OK))
    with Subscriber(args.events, prefixes or [""], curve=_curve_from(args)) as sub:
        while deadline is None or time.monotonic() < deadline:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            event = sub.receive(wait)
            if event is None:
                continue
            topic, payload = event
            print(json.dumps({"topic": topic, "payload": payload}, default=_json_default),
                  flush=True)
            count += 1
            if args.count is not None and count >= args.count:
                break
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vdsm-client",
        description="Call one verb of vdsmd and print the result as JSON, "
        "or stream events with 'vdsm-client events [TOPIC-PREFIX ...]'.",
        epilog="namespaces: " + ", ".join(SCHEMA.namespaces())
        + ". 'vdsm-client Namespace --help' lists verbs; "
        "'vdsm-client Namespace verb --help' shows a verb's params.",
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    parser.add_argument("--api", default=os.environ.get("VDSM_API") or
                        endpoints.default_api_endpoint(), help="request endpoint")
    parser.add_argument("--events", default=os.environ.get("VDSM_EVENTS") or
                        endpoints.default_events_endpoint(), help="event endpoint")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    parser.add_argument("-f", "--file", help="read the params map from a JSON file (- = stdin)")
    parser.add_argument("--curve-secret", help="client key pair file (CURVE)")
    parser.add_argument("--curve-server-key", help="server public key file (CURVE)")
    parser.add_argument("--count", type=int, help="events: stop after this many")
    parser.add_argument("--duration", type=float, help="events: stop after this many seconds")
    parser.add_argument("words", nargs="*", help="Namespace verb [name=value ...]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    words: list[str] = list(args.words) + [w for w in extra if w not in ("--help", "-h")]
    wants_help = args.help or any(w in ("--help", "-h") for w in extra)
    unknown_flags = [w for w in words if w.startswith("--")]
    if unknown_flags:
        _usage_error(f"unknown option {unknown_flags[0]}")
    if not words:
        parser.print_help()
        return EXIT_OK if wants_help else EXIT_USAGE
    if words[0] == "events":
        if wants_help:
            print("vdsm-client [--events EP] events [TOPIC-PREFIX ...] [--count N] "
                  "[--duration S]: print one JSON line per event")
            return EXIT_OK
        return _run_events(args, words[1:])
    if len(words) == 1:
        if words[0] in SCHEMA.namespaces():
            print(namespace_help(words[0]))
            return EXIT_OK if wants_help else EXIT_USAGE
        _usage_error(f"expected 'Namespace verb', got {words[0]!r}")
    method = f"{words[0]}.{words[1]}"
    try:
        verb = SCHEMA.lookup(method)
    except Exception:  # noqa: BLE001 - MethodNotFound, reported as a usage error
        _usage_error(f"no such verb {method}; namespaces: {', '.join(SCHEMA.namespaces())}")
    if wants_help:
        print(verb_help(verb))
        return EXIT_OK
    params: dict[str, Any] = _read_params_file(args.file) if args.file else {}
    for word in words[2:]:
        name, sep, value = word.partition("=")
        if not sep or not name:
            _usage_error(f"expected name=value, got {word!r}")
        params[name] = parse_value(value)
    try:
        with Client(args.api, timeout=args.timeout, curve=_curve_from(args)) as client:
            result = client.call(verb.name, params)
    except ClientError as e:
        print(_dump(e.to_dict()), file=sys.stderr)
        return EXIT_ERROR
    except CallTimeout as e:
        print(f"vdsm-client: {e}", file=sys.stderr)
        return EXIT_TIMEOUT
    print(_dump(result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
