"""The base class of every supervised actor, and what the runtime gives each actor.

pykka's failure rules (see its docs): an exception in a ``tell``-ed message stops the actor
and calls ``on_failure``; an exception in ``on_start`` stops it *without* ``on_failure``; an
exception in an ``ask`` goes back to the caller and the actor lives. :class:`SupervisedActor`
turns the two fatal cases into a :class:`ChildFailed` message to its supervisor, and a normal
stop into :class:`ChildStopped`. Subclasses implement ``setup()``/``teardown()`` instead of
``on_start``/``on_stop``.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import pykka
from pykka.typing import proxy_method

from actors.clock import Clock
from actors.directory import ActorDirectory
from actors.msgtext import describe

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Where events go (the PUB socket in the daemon; a list in tests). Never blocks."""

    def publish(self, topic: str, payload: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Runtime:
    """Services shared by all actors of one daemon; passed explicitly, never global."""

    events: EventSink
    clock: Clock
    directory: ActorDirectory
    fault_injection: bool = False


@dataclass(frozen=True)
class ActorContext:
    """Who an actor is and who supervises it. ``generation`` counts its incarnations."""

    path: str
    runtime: Runtime
    supervisor: pykka.ActorRef[Any] | None = None
    generation: int = 0

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1] or "/"

    def child(self, name: str) -> str:
        """The path of a child called ``name``."""
        return f"{self.path.rstrip('/')}/{name}"


# --- messages between an actor and its supervisor ---------------------------------------


@dataclass(frozen=True)
class ChildFailed:
    path: str
    generation: int
    reason: str
    traceback: str


@dataclass(frozen=True)
class ChildStopped:
    path: str
    generation: int


@dataclass(frozen=True)
class Ping:
    """Answered by every supervised actor once its setup is done."""


@dataclass(frozen=True)
class InjectedFault:
    """Sent by ``Actors.crash`` (fault injection): the receiving actor fails with ``reason``."""

    reason: str


class InjectedFailure(RuntimeError):
    pass


def tell_or_drop(ref: pykka.ActorRef[Any], message: Any, logger: logging.Logger,
                 who: str) -> None:
    """Tell ``message`` to ``ref``; if that actor is gone, drop the message with a debug line on
    ``logger`` naming ``who``. For callbacks on other threads (timers, futures' callbacks),
    where an ``ActorDeadError`` would have nowhere to go."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        logger.debug("%r dropped: %s is gone", message, who)


class SupervisedActor(pykka.ThreadingActor):
    """An actor that reports its failures and stops to its supervisor."""

    recent_size = 20

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__()
        self.ctx = ctx
        self._recent: deque[tuple[float, str]] = deque(maxlen=self.recent_size)
        self._reported = False
        self._handled = ctx.runtime.directory.counter(ctx.path)

    # --- hooks for subclasses ----------------------------------------------------------

    def setup(self) -> None:
        """Acquire what the actor owns (threads, sockets, connections). Runs on its thread."""

    def teardown(self) -> None:
        """Release what ``setup`` acquired. Runs after a normal stop and after a failure."""

    def describe(self) -> dict[str, Any]:
        """The actor's own view of its state, for ``Actors.inspect``. Must be cheap."""
        return {}

    # --- pykka plumbing ----------------------------------------------------------------

    def on_start(self) -> None:
        try:
            self.setup()
        except Exception as e:
            self._safe_teardown()
            self._report(ChildFailed(self.ctx.path, self.ctx.generation,
                                     f"setup failed: {e!r}", traceback.format_exc()))
            raise

    def on_stop(self) -> None:
        try:
            self.teardown()
        finally:
            self._report(ChildStopped(self.ctx.path, self.ctx.generation))

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        tb: Any,
    ) -> None:
        self._safe_teardown()
        text = "".join(traceback.format_exception(exception_type, exception_value, tb))
        self._report(ChildFailed(self.ctx.path, self.ctx.generation, repr(exception_value), text))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            return True
        if isinstance(message, InjectedFault):
            raise InjectedFailure(message.reason)
        log.warning("%s: unexpected message %r", self.ctx.path, message)
        return None

    def _handle_receive(self, message: Any) -> Any:
        # Overrides a private pykka 4 method (pinned <5) to keep a short history of what the
        # actor handled (with its arguments, secrets masked), shown by Actors.inspect, and
        # to count the messages (Actors.list's "messages": the console's rates).
        self._recent.append((time.monotonic(), describe(message, type(self))))
        self._handled.add()
        return super()._handle_receive(message)

    def recent_messages(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"ago": round(now - t, 3), "message": m} for t, m in self._recent]

    def inspect(self) -> dict[str, Any]:
        """Called (asked) by Actors.inspect."""
        return {
            "path": self.ctx.path,
            "class": type(self).__name__,
            "generation": self.ctx.generation,
            "recentMessages": self.recent_messages(),
            "detail": self.describe(),
        }

    def _safe_teardown(self) -> None:
        try:
            self.teardown()
        except Exception:
            log.exception("%s: teardown after failure failed", self.ctx.path)

    def _report(self, message: ChildFailed | ChildStopped) -> None:
        if self._reported or self.ctx.supervisor is None:
            return
        self._reported = True
        try:
            self.ctx.supervisor.tell(message)
        except pykka.ActorDeadError:
            log.debug("%s: supervisor gone, %r not delivered", self.ctx.path, message)


class InspectProxy:
    """What ``Actors.inspect`` asks of any supervised actor through its proxy (typed:
    :func:`actors.directory.typed_proxy`)."""

    inspect = proxy_method(SupervisedActor.inspect)
