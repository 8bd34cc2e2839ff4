"""The request/reply API server: one ROUTER socket, owned by one thread.

The socket thread decodes and validates every frame against the schema, then either runs the
handler inline (only for handlers declared non-blocking, such as ``Host.ping`` and the board
reads) or hands it to a bounded pool of worker threads. Workers never touch the socket: they
put the outcome on a queue and wake the socket thread through a pipe that sits in the same
poller. So a slow verb cannot delay another client's ``Host.ping``.

Every request has a :class:`~messaging.deadline.Deadline` (the verb's timeout), current while
its handler runs: waits in the handler use the time left, and a handler that starts an
operation with a longer deadline of its own extends the request's to cover it. When the
deadline passes, the client gets a timeout error and a late result is dropped.

A handler may return a :class:`concurrent.futures.Future` instead of a value: the reply is
then sent when the future resolves, and no thread waits for it. Verbs whose work runs
elsewhere with a deadline (a libvirt call on a bounded caller, a VM operation) answer this
way, so that a stalled libvirtd holds none of the shared workers.

A request without an id (a notification) never gets a reply, whatever happens to it: an
unknown method, invalid params, an overload, a failure or a timeout are logged only. Lines a
client can cause at any rate (refused requests, dropped replies) are rate-limited.

With CURVE, every request's ZAP user id (the client's public key) is checked against the
authorised keys as they are now: a key removed while its client stays connected gets
``NotAuthorized`` from then on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import zmq

from messaging import codec, endpoints
from messaging.curve import AuthorizedKeys, CurveConfig, apply_server
from messaging.deadline import Deadline, serving
from messaging.errors import (
    InternalError,
    NotAuthorized,
    NotImplementedOnHost,
    RequestTimeout,
    ServerBusy,
    VdsmError,
)
from messaging.handshakes import HandshakeLog
from messaging.ratelog import RateLimitedLog
from messaging.schema.types import Bool, Enum, Int, Uuid
from messaging.schema.verbs import Schema, Verb
from messaging.wakepipe import WakePipe

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]


class RequestObserver(Protocol):
    """Told about every request that named a declared verb, once it is answered (or refused,
    or timed out): for metrics. Called on the socket thread: must not block."""

    def observe(self, verb: str, code: int, seconds: float) -> None:
        """``code`` 0 for a result, else the error's code; ``seconds`` since acceptance."""
        ...


class ClientActivity(Protocol):
    """Told about every request accepted (valid, authorised, bound), before its handler
    runs: who sent it and which verb. Called on the socket thread: must not block."""

    def seen(self, client: str, verb: str) -> None:
        ...


def client_id(envelope: list[bytes], user: str | None) -> str:
    """Who a request comes from: with CURVE, its client's key (the same client over any
    number of connections); else its connection (the ROUTER's routing id)."""
    if user:
        return f"key:{user}"
    return f"conn:{envelope[0].hex()}" if envelope else ""


@dataclass(frozen=True)
class Binding:
    """A verb's implementation. ``inline`` handlers run on the socket thread: never block.

    A handler returns the result, or a ``concurrent.futures.Future`` of it (see above)."""

    handler: Handler
    inline: bool = False


@dataclass(frozen=True)
class ServerConfig:
    endpoint: str
    limits: codec.Limits = codec.DEFAULT_LIMITS
    workers: int = 16
    max_pending: int = 1000
    curve: CurveConfig | None = None
    # Serve a loopback tcp endpoint without CURVE (the operator's explicit, logged choice).
    insecure_tcp: bool = False
    # The hard cap ZeroMQ enforces itself (it drops the peer's connection beyond it);
    # frames between limits.max_frame and this get an error reply.
    hard_frame_factor: int = 4


@dataclass
class _Pending:
    envelope: list[bytes]
    request: codec.Request
    verb: Verb
    deadline: Deadline
    done: bool = False


_SECRET = ("password", "passwd", "secret", "token", "ticket")


def summary(verb: Verb, params: Mapping[str, Any]) -> str:
    """What a log line says of a request's params: ids, numbers, flags and choices (never
    free text, which may be long or secret)."""
    shown = []
    for field in verb.params:
        value = params.get(field.name)
        if value is None or any(s in field.name.lower() for s in _SECRET):
            continue
        if isinstance(field.type, Uuid | Int | Bool | Enum):
            shown.append(f"{field.name}={value}")
    return " ".join(shown)


class ApiServer:
    def __init__(
        self,
        *,
        context: zmq.Context[Any],
        config: ServerConfig,
        schema: Schema,
        bindings: Mapping[str, Binding],
        keys: AuthorizedKeys | None = None,
        observer: RequestObserver | None = None,
        activity: ClientActivity | None = None,
    ) -> None:
        unknown = set(bindings) - {v.name for v in schema}
        if unknown:
            raise ValueError(f"bindings for undeclared verbs: {sorted(unknown)}")
        self._context = context
        self._config = config
        self._schema = schema
        self._bindings = dict(bindings)
        self._endpoint = endpoints.parse(config.endpoint)
        self._insecure = endpoints.check_security(
            self._endpoint, curve=config.curve is not None, insecure_tcp=config.insecure_tcp
        )
        self._keys = keys
        self._observer = observer
        self._activity = activity
        self._handshakes = (HandshakeLog(context, "API") if config.curve is not None
                            else None)
        self._executor = ThreadPoolExecutor(config.workers, thread_name_prefix="api-worker")
        self._results: queue.SimpleQueue[tuple[int, Any, VdsmError | None]] = queue.SimpleQueue()
        self._wakeup = WakePipe()
        self._pending: dict[int, _Pending] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._tokens = itertools.count(1)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self.bound_endpoint: str | None = None
        self.stats = {"requests": 0, "errors": 0, "timeouts": 0, "dropped": 0}
        self._refusals = RateLimitedLog(log, "refused requests")
        self._drops = RateLimitedLog(log, "dropped replies", level=logging.INFO)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Bind and start serving; raises if the endpoint cannot be bound."""
        self._thread = threading.Thread(target=self._run, name="api-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the API server did not start")
        if self._start_error is not None:
            raise self._start_error

    def alive(self) -> bool:
        """False once the socket thread has ended (stopped, or failed)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def in_flight(self) -> int:
        """Requests handed to workers and not answered or expired yet."""
        return len(self._pending)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wakeup.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._refusals.flush()
        self._drops.flush()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._wakeup.close()

    # --- the socket thread ----------------------------------------------------------------

    def _bind(self) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self._context.socket(zmq.ROUTER)
        try:
            sock.linger = 0
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(
                zmq.MAXMSGSIZE, self._config.limits.max_frame * self._config.hard_frame_factor
            )
            sock.sndhwm = 10_000
            sock.rcvhwm = 10_000
            if self._config.curve is not None:
                apply_server(sock, self._config.curve)
            if self._handshakes is not None:
                self._handshakes.attach(sock)
            endpoints.prepare_ipc(self._endpoint)
            sock.bind(self._config.endpoint)
            endpoints.secure_ipc(self._endpoint)
        except BaseException:
            self._close(sock)
            raise
        self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self._insecure:
            log.warning("INSECURE: the API on %s is served without CURVE (insecure_tcp is "
                        "set): every local user can call it, and it runs as root",
                        self.bound_endpoint)
        return sock

    def _close(self, sock: zmq.Socket[Any]) -> None:
        if self._handshakes is not None:
            self._handshakes.detach(sock)
        sock.close(linger=0)

    def _run(self) -> None:
        try:
            sock = self._bind()
        except Exception as e:  # noqa: BLE001 - reported to start()'s caller
            self._start_error = e
            self._ready.set()
            return
        self._ready.set()
        log.info("API server listening on %s", self.bound_endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wakeup.fd, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                events = dict(poller.poll(self._poll_timeout()))
                if sock in events:
                    self._drain_socket(sock)
                if self._wakeup.fd in events:
                    self._wakeup.drain()
                self._send_results(sock)
                self._expire(sock)
        except Exception:
            log.exception("API server loop failed")
            raise
        finally:
            self._close(sock)
            log.info("API server stopped")

    def _poll_timeout(self) -> int:
        """Until the nearest deadline of a request still in flight; none (-1) without one: a
        result, a stop and a request each wake the poller (the pipe, the socket), so an idle
        server sleeps. The deadlines of answered requests leave the heap here."""
        while self._deadlines and self._deadlines[0][1] not in self._pending:
            heapq.heappop(self._deadlines)
        if not self._deadlines:
            return -1
        delay = self._deadlines[0][0] - time.monotonic()
        return max(0, min(1000, int(delay * 1000) + 1))

    def _drain_socket(self, sock: zmq.Socket[Any]) -> None:
        # Bounded batch, so replies and deadlines are served even under a flood.
        for _ in range(256):
            try:
                frames, user = self._receive(sock)
            except zmq.Again:
                return
            self._handle_frames(sock, frames, user)

    def _receive(self, sock: zmq.Socket[Any]) -> tuple[list[bytes], str | None]:
        """One message, and its ZAP user id (the client's CURVE key) when keys are checked."""
        if self._keys is None:
            return sock.recv_multipart(zmq.NOBLOCK), None
        parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
        try:
            user = parts[-1].get("User-Id")
        except zmq.ZMQError:
            user = None  # no ZAP user id: the request is refused
        return [p.bytes for p in parts], user if isinstance(user, str) else None

    def _handle_frames(self, sock: zmq.Socket[Any], frames: list[bytes],
                       user: str | None = None) -> None:
        """One request; ``user`` is its ZAP user id (the client's key) when CURVE is on."""
        self.stats["requests"] += 1
        if len(frames) < 2:
            self._drop("a message without an envelope", frames)
            return
        envelope, body = frames[:-1], frames[-1]
        value: Any = None
        verb: Verb | None = None
        accepted = time.monotonic()
        try:
            value = codec.decode(body, self._config.limits)
            if self._keys is not None and not self._keys.allows(user):
                raise NotAuthorized(key=user or "?")
            request = codec.parse_request(value)
            verb = self._schema.lookup(request.method)
            binding = self._bindings.get(verb.name)
            if binding is None:  # whatever its params: it would do nothing with them
                raise NotImplementedOnHost(method=verb.name)
            params = verb.check_params(request.params)
        except VdsmError as e:
            self.stats["errors"] += 1
            what = verb.name if verb is not None else "request"
            self._refusals("refused %s %s from %s: %s", what, _request_id(value),
                           _peer(envelope), e.message)
            if verb is not None:
                self._observe(verb.name, e.code, accepted)
            if not codec.is_notification(value):
                self._reply(sock, envelope, codec.error_reply(codec.salvage_id(value), e))
            return
        label = f"req {_printable(request.id) if request.id is not None else '-'} {verb.name}"
        log.log(logging.DEBUG if verb.queries else logging.INFO, "%s from %s%s", label,
                _peer(envelope), f": {shown}" if (shown := summary(verb, params)) else "")
        client = client_id(envelope, user)
        deadline = Deadline(verb.timeout, now=accepted, label=label, client=client)
        if self._activity is not None:
            try:
                self._activity.seen(client, verb.name)
            except Exception:  # a listener must never break serving
                log.exception("the client activity listener failed")
        if binding.inline:
            with serving(deadline):
                outcome, error = _call(binding.handler, params, verb.name)
            if not isinstance(outcome, Future):
                self._observe(verb.name, error.code if error else 0, accepted)
                if request.id is not None:
                    self._reply_outcome(sock, envelope, request.id, outcome, error)
                return
        elif len(self._pending) >= self._config.max_pending:
            error = ServerBusy(pending=len(self._pending))
            self._refusals("refused request from %s: %s", _peer(envelope), error.message)
            if request.id is not None:
                self._reply(sock, envelope, codec.error_reply(request.id, error))
            return
        token = next(self._tokens)
        self._pending[token] = _Pending(envelope, request, verb, deadline)
        heapq.heappush(self._deadlines, (deadline.at, token))
        if binding.inline:
            self._defer(token, outcome, verb.name)
        else:
            self._executor.submit(self._work, token, binding.handler, params, verb.name,
                                  deadline)

    def _work(self, token: int, handler: Handler, params: dict[str, Any], name: str,
              deadline: Deadline) -> None:
        with serving(deadline):
            outcome, error = _call(handler, params, name)
        if isinstance(outcome, Future):
            self._defer(token, outcome, name)
            return
        self._results.put((token, outcome, error))
        self._wakeup.wake()

    def _defer(self, token: int, future: Future[Any], name: str) -> None:
        """Reply when ``future`` resolves (on whichever thread resolves it)."""
        def done(f: Future[Any]) -> None:
            self._results.put((token, *_outcome(f, name)))
            self._wakeup.wake()

        future.add_done_callback(done)

    def _send_results(self, sock: zmq.Socket[Any]) -> None:
        while True:
            try:
                token, outcome, error = self._results.get_nowait()
            except queue.Empty:
                return
            pending = self._pending.pop(token, None)
            if pending is None:
                self._drops("dropping the late result of request %s (already timed out)", token)
                continue
            pending.done = True
            self._observe(pending.verb.name, error.code if error else 0,
                          pending.deadline.accepted)
            if pending.request.id is not None:
                self._reply_outcome(sock, pending.envelope, pending.request.id, outcome, error)

    def _expire(self, sock: zmq.Socket[Any]) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, token = heapq.heappop(self._deadlines)
            pending = self._pending.get(token)
            if pending is None:
                continue
            if pending.deadline.at > now:  # its handler extended it to cover an operation
                heapq.heappush(self._deadlines, (pending.deadline.at, token))
                continue
            del self._pending[token]
            self.stats["timeouts"] += 1
            error = RequestTimeout(method=pending.verb.name,
                                   timeout=round(pending.deadline.budget, 1))
            self._observe(pending.verb.name, error.code, pending.deadline.accepted)
            self._drops("%s", error.message)
            if pending.request.id is not None:
                self._reply(sock, pending.envelope, codec.error_reply(pending.request.id, error))

    def _reply_outcome(
        self,
        sock: zmq.Socket[Any],
        envelope: list[bytes],
        request_id: codec.RequestId,
        outcome: Any,
        error: VdsmError | None,
    ) -> None:
        if error is not None:
            self._reply(sock, envelope, codec.error_reply(request_id, error))
        else:
            self._reply(sock, envelope, codec.result_reply(request_id, outcome))

    def _reply(self, sock: zmq.Socket[Any], envelope: list[bytes], reply: dict[str, Any]) -> None:
        try:
            body = codec.encode(reply)
        except (TypeError, ValueError, OverflowError) as e:
            log.error("cannot encode the reply to %r: %s", reply.get("id"), e)
            error = InternalError(reason="the result could not be encoded")
            body = codec.encode(codec.error_reply(reply.get("id"), error))
        try:
            sock.send_multipart([*envelope, body], zmq.NOBLOCK)
        except zmq.ZMQError as e:
            # EHOSTUNREACH: the client went away; EAGAIN: it does not read its replies.
            self.stats["dropped"] += 1
            self._drops("reply to %s dropped: %s", _peer(envelope), e)

    def _observe(self, verb: str, code: int, accepted: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer.observe(verb, code, time.monotonic() - accepted)
        except Exception:  # metrics must never break serving
            log.exception("the request observer failed")

    def _drop(self, what: str, frames: list[bytes]) -> None:
        self.stats["dropped"] += 1
        log.warning("dropped %s (%d frames)", what, len(frames))


def _call(handler: Handler, params: dict[str, Any], name: str) -> tuple[Any, VdsmError | None]:
    """Run a handler inside the error boundary: (result, None) or (None, error)."""
    try:
        return handler(params), None
    except VdsmError as e:
        return None, e
    except Exception as e:
        log.exception("internal error in %s", name)
        return None, InternalError(reason=f"{type(e).__name__} in {name}; see the agent log")


def _outcome(future: Future[Any], name: str) -> tuple[Any, VdsmError | None]:
    """A resolved future's outcome, through the same error boundary as :func:`_call`."""
    if future.cancelled():
        return None, InternalError(reason=f"{name} was cancelled")
    error = future.exception()
    if error is None:
        return future.result(), None
    if isinstance(error, VdsmError):
        return None, error
    log.error("internal error in %s", name, exc_info=error)
    return None, InternalError(reason=f"{type(error).__name__} in {name}; see the agent log")


def _printable(request_id: codec.RequestId) -> str:
    """A client's request id as a log line may show it: short, one line, printable."""
    return "".join(c if c.isprintable() else "?" for c in str(request_id)[:40])


def _request_id(value: Any) -> str:
    salvaged = codec.salvage_id(value)
    return f"(id {_printable(salvaged)})" if salvaged is not None else "(no id)"


def _peer(envelope: list[bytes]) -> str:
    return envelope[0].hex() if envelope else "?"
