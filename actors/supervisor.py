"""One-for-one supervision for pykka actors (pykka has none).

A :class:`Supervisor` starts its children in order and stops them in reverse order. When a
child fails, only that child is restarted, after a backoff that doubles with each recent
restart. A child that fails more than ``max_restarts`` times within ``within`` seconds is
given up on: it stays down, the give-up is logged, published and escalated to the parent
supervisor (which records it), and its siblings are untouched.

Restart kinds, as in OTP:
  * ``permanent``: restarted after a failure and after an unexpected normal stop;
  * ``transient``: restarted after a failure only (a VM actor that stops because its VM is
    gone is simply removed);
  * ``temporary``: never restarted.

Every start, failure, restart, stop and give-up is logged and published as an
``|actors|status|<path>`` event, and kept in the :class:`~actors.directory.ActorDirectory`.

A child's ``setup()`` must not ask its supervisor anything (the supervisor waits for the
child to come up) and should be quick: long work goes to messages after the start.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pykka
from pykka.typing import proxy_method

from actors.base import ActorContext, ChildFailed, ChildStopped, Ping, Runtime, SupervisedActor
from actors.directory import (
    GAVE_UP,
    RESTARTING,
    RUNNING,
    STARTING,
    STOPPING,
    ActorInfo,
)

log = logging.getLogger(__name__)

Factory = Callable[[ActorContext], pykka.ActorRef[Any]]
RestartKind = Literal["permanent", "transient", "temporary"]


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    within: float = 60.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0

    def backoff(self, recent_restarts: int) -> float:
        return float(min(self.backoff_max, self.backoff_initial * 2**recent_restarts))

    def to_wire(self) -> dict[str, Any]:
        return {
            "strategy": "one_for_one",
            "maxRestarts": self.max_restarts,
            "within": self.within,
            "backoffInitial": self.backoff_initial,
            "backoffMax": self.backoff_max,
        }


@dataclass(frozen=True)
class ChildSpec:
    name: str
    factory: Factory
    cls: str
    restart: RestartKind = "permanent"
    start_timeout: float = 10.0
    stop_timeout: float = 10.0


@dataclass(frozen=True)
class ChildGaveUp:
    """Escalation: a child supervisor gave up on one of its children."""

    path: str
    reason: str


@dataclass(frozen=True)
class _Restart:
    name: str
    generation: int


class ChildStartError(Exception):
    """A child could not be started; the message says why."""


class ChildExists(Exception):
    pass


@dataclass
class _Child:
    spec: ChildSpec
    path: str
    generation: int = 0
    ref: pykka.ActorRef[Any] | None = None
    state: str = STARTING
    restarts: int = 0
    recent: deque[float] = field(default_factory=deque)


class Supervisor(SupervisedActor):
    def __init__(
        self,
        ctx: ActorContext,
        *,
        policy: RestartPolicy | None = None,
        children: Sequence[ChildSpec] = (),
    ) -> None:
        super().__init__(ctx)
        self.policy = policy or RestartPolicy()
        self._initial = tuple(children)
        self._children: dict[str, _Child] = {}
        self._escalations: deque[tuple[float, str, str]] = deque(maxlen=20)

    @property
    def _runtime(self) -> Runtime:
        return self.ctx.runtime

    # --- lifecycle -----------------------------------------------------------------------

    def setup(self) -> None:
        self._runtime.directory.update(self.ctx.path, policy=self.policy.to_wire())
        for spec in self._initial:
            self.start_child(spec)

    def teardown(self) -> None:
        for name in reversed(list(self._children)):
            self.stop_child(name)

    # --- API (called through a proxy) ----------------------------------------------------

    def start_child(self, spec: ChildSpec) -> str:
        """Start ``spec`` and wait until it is up; ChildStartError (child removed) if not."""
        existing = self._children.get(spec.name)
        if existing is not None:
            if existing.state != GAVE_UP:
                raise ChildExists(f"{existing.path} already exists ({existing.state})")
            self._forget(existing)
        child = _Child(spec=spec, path=self.ctx.child(spec.name))
        self._children[spec.name] = child
        error = self._launch(child)
        if error is not None:
            self._forget(child)
            self._publish(child.path, "failed", error)
            raise ChildStartError(error)
        self._publish(child.path, "started")
        return child.path

    def stop_child(self, name: str) -> bool:
        """Stop the child called ``name`` (waits up to its stop_timeout). False if unknown."""
        child = self._children.get(name)
        if child is None:
            return False
        child.state = STOPPING
        self._runtime.directory.update(child.path, state=STOPPING)
        if child.ref is not None:
            try:
                child.ref.stop(block=True, timeout=child.spec.stop_timeout)
            except pykka.Timeout:
                log.error("%s did not stop within %gs: abandoned", child.path,
                          child.spec.stop_timeout)
            except pykka.ActorDeadError:
                pass
        self._forget(child)
        self._publish(child.path, "stopped")
        return True

    def children(self) -> list[str]:
        return list(self._children)

    def has_child(self, name: str) -> bool:
        child = self._children.get(name)
        return child is not None and child.state != GAVE_UP

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "policy": self.policy.to_wire(),
            "children": [
                {
                    "name": name,
                    "state": c.state,
                    "restart": c.spec.restart,
                    "generation": c.generation,
                    "restarts": c.restarts,
                    "recentRestarts": sum(1 for t in c.recent if now - t <= self.policy.within),
                }
                for name, c in self._children.items()
            ],
            "escalations": [
                {"ago": round(now - t, 3), "path": p, "reason": r}
                for t, p, r in self._escalations
            ],
        }

    # --- messages from children --------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildFailed):
            self._on_failed(message.path, message.generation, message.reason, message.traceback)
        elif isinstance(message, ChildStopped):
            self._on_stopped(message)
        elif isinstance(message, _Restart):
            self._on_restart(message)
        elif isinstance(message, ChildGaveUp):
            self._escalations.append((time.monotonic(), message.path, message.reason))
            log.error("%s: escalated give-up of %s: %s", self.ctx.path, message.path,
                      message.reason)
        else:
            return super().on_receive(message)
        return None

    def _child_for(self, path: str, generation: int) -> _Child | None:
        child = self._children.get(path.rsplit("/", 1)[-1])
        if child is None or child.path != path or child.generation != generation:
            return None  # a stale message from an earlier incarnation
        return child

    def _on_failed(self, path: str, generation: int, reason: str, text: str) -> None:
        child = self._child_for(path, generation)
        if child is None or child.state in (STOPPING, GAVE_UP, RESTARTING):
            return
        now = time.monotonic()
        log.error("%s failed: %s\n%s", path, reason, text.rstrip())
        self._runtime.directory.update(
            path, state=RESTARTING, last_failure=reason, last_failure_at=now, ref=None
        )
        child.ref = None
        if child.spec.restart == "temporary":
            self._forget(child)
            self._publish(path, "failed", reason)
            return
        while child.recent and now - child.recent[0] > self.policy.within:
            child.recent.popleft()
        if len(child.recent) >= self.policy.max_restarts:
            self._give_up(child, reason)
            return
        child.state = RESTARTING
        delay = self.policy.backoff(len(child.recent))
        self._publish(path, "failed", reason)
        me = self.actor_ref
        message = _Restart(child.spec.name, child.generation)
        self._runtime.clock.call_later(delay, lambda: _tell_quietly(me, message))

    def _give_up(self, child: _Child, reason: str) -> None:
        child.state = GAVE_UP
        self._runtime.directory.update(child.path, state=GAVE_UP)
        why = (f"{child.path} failed {len(child.recent) + 1} times within "
               f"{self.policy.within:g}s; last: {reason}")
        log.error("giving up on %s", why)
        self._publish(child.path, "gave-up", why)
        if self.ctx.supervisor is not None:
            _tell_quietly(self.ctx.supervisor, ChildGaveUp(child.path, why))

    def _on_stopped(self, message: ChildStopped) -> None:
        child = self._child_for(message.path, message.generation)
        if child is None or child.state == STOPPING:
            return
        if child.spec.restart == "permanent":
            self._on_failed(message.path, message.generation, "stopped unexpectedly", "")
            return
        self._forget(child)
        self._publish(child.path, "stopped")

    def _on_restart(self, message: _Restart) -> None:
        child = self._children.get(message.name)
        if child is None or child.generation != message.generation or child.state != RESTARTING:
            return
        child.recent.append(time.monotonic())
        child.restarts += 1
        error = self._launch(child)
        if error is None:
            self._publish(child.path, "restarted")
        # else: the failed start reported ChildFailed (or _launch handled it): counted there.

    # --- helpers -----------------------------------------------------------------------

    def _launch(self, child: _Child) -> str | None:
        """Start one incarnation of ``child``; the reason it failed, or None once it is up."""
        child.generation += 1
        child.state = STARTING
        ctx = ActorContext(
            path=child.path,
            runtime=self._runtime,
            supervisor=self.actor_ref,
            generation=child.generation,
        )
        previous = self._runtime.directory.get(child.path)
        self._runtime.directory.put(
            ActorInfo(
                path=child.path,
                cls=child.spec.cls,
                state=STARTING,
                ref=None,
                supervisor=self.ctx.path,
                restarts=child.restarts,
                last_failure=previous.last_failure if previous else None,
                last_failure_at=previous.last_failure_at if previous else None,
                policy=None,
            )
        )
        try:
            ref = child.spec.factory(ctx)
        except Exception as e:  # noqa: BLE001 - a broken factory is a child failure, not ours
            reason = f"could not construct {child.spec.cls}: {e!r}"
            if child.restarts:
                self._on_failed(child.path, child.generation, reason, "")
            return reason
        child.ref = ref
        try:
            ref.ask(Ping(), timeout=child.spec.start_timeout)
        except pykka.ActorDeadError:
            return f"{child.path} failed while starting"
        except pykka.Timeout:
            log.error("%s did not start within %gs", child.path, child.spec.start_timeout)
            ref.stop(block=False)
            reason = f"did not start within {child.spec.start_timeout:g}s"
            if child.restarts:
                self._on_failed(child.path, child.generation, reason, "")
            return reason
        child.state = RUNNING
        self._runtime.directory.update(
            child.path, state=RUNNING, ref=ref, started_at=time.monotonic()
        )
        return None

    def _forget(self, child: _Child) -> None:
        self._children.pop(child.spec.name, None)
        self._runtime.directory.remove(child.path)

    def _publish(self, path: str, event: str, reason: str | None = None) -> None:
        payload: dict[str, Any] = {"path": path, "event": event}
        if reason is not None:
            payload["reason"] = reason[:1000]
        if event in ("started", "restarted", "stopped"):
            log.info("%s %s", path, event)
        self._runtime.events.publish(f"|actors|status|{path}", payload)



class SupervisorProxy:
    """What others ask of a supervisor through its proxy (typed:
    :func:`actors.directory.typed_proxy`)."""

    start_child = proxy_method(Supervisor.start_child)
    stop_child = proxy_method(Supervisor.stop_child)


def _tell_quietly(ref: pykka.ActorRef[Any], message: Any) -> None:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        log.debug("%r not delivered: %s is dead", message, ref)
