"""``Host.fenceNode``: fence another host through its management controller.

The handler (on an API worker) checks the request (:mod:`actors.host.fencing`), then the
policy (:mod:`actors.host.fencepolicy`), then hands the agent run to a ``fence-<n>`` thread
of its own and returns a future: the worker is free at once and the reply is sent when the
agent ends or is killed at ``[fencing] timeout`` (the request's deadline covers it). One
fence per device at a time (a second one for the same address, port and plug is refused
with 504 while the first runs: two agents racing on one power switch leave its state to
chance), and at most ``[fencing] max_running`` at once.

A fence running when vdsmd stops is not killed: its agent runs in a session of its own and
finishes (or gives up) by its own timeouts; a power action cut in the middle would leave the
node's state unknown.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.host import fencepolicy
from actors.host.fencepolicy import HostIdQuery
from actors.host.fencerun import result, run_agent
from actors.host.fencing import FenceRequest, agent_program, check_wrapper, parse_request
from messaging.deadline import current as current_deadline
from messaging.errors import FenceBusy, FenceError
from messaging.server import Binding

log = logging.getLogger(__name__)

REPLY_MARGIN = 5.0


@dataclass(frozen=True)
class FenceSettings:
    agent_dir: Path
    agents: frozenset[str]
    timeout: float
    max_running: int


class FenceService:
    """The fences in flight, and the threads that run them."""

    def __init__(self, settings: FenceSettings, *, host_ids: HostIdQuery | None) -> None:
        self.settings = settings
        self.host_ids = host_ids
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, float]] = {}  # target -> (action, started)
        self._names = itertools.count(1)

    def fence_node(self, params: dict[str, Any]) -> dict[str, Any] | Future[dict[str, Any]]:
        request = parse_request(params, known=self.settings.agents)
        host_ids = fencepolicy.parse_policy(params.get("policy"))
        log.info("fence requested: %s", request.describe())
        if request.action != "status" and host_ids:
            skipped = self._policy(request, host_ids)
            if skipped is not None:
                return skipped
        program = agent_program(self.settings.agent_dir, request.agent)
        if request.via_ipmitool:
            check_wrapper()
        return self._start(request, program)

    def _policy(self, request: FenceRequest,
                host_ids: dict[str, int]) -> dict[str, Any] | None:
        if self.host_ids is None:
            log.warning("fence of %s: no storage view of host ids on this agent: the policy "
                        "cannot be checked, fencing", request.target)
            return None
        verdict = fencepolicy.decide(host_ids, self.host_ids)
        if not verdict.skip:
            log.info("fence of %s goes on: %s", request.target, verdict.message)
            return None
        log.info("fence %s of %s skipped: %s", request.action, request.target,
                 verdict.message)
        return {"power": "unknown", "operationStatus": "skipped", "message": verdict.message,
                "policy": [c.to_wire() for c in verdict.checks]}

    def _start(self, request: FenceRequest, program: Path) -> Future[dict[str, Any]]:
        target = request.target
        with self._lock:
            if target in self._running:
                action, started = self._running[target]
                raise FenceBusy(reason=f"{target} is being fenced already ({action}, for "
                                f"{time.monotonic() - started:.1f} s)")
            if len(self._running) >= self.settings.max_running:
                raise FenceBusy(reason=f"{len(self._running)} fences are running (the most "
                                "[fencing] max_running allows)")
            self._running[target] = (request.action, time.monotonic())
        timeout = self.settings.timeout
        current_deadline().cover(time.monotonic() + timeout + REPLY_MARGIN)
        future: Future[dict[str, Any]] = Future()
        future.set_running_or_notify_cancel()
        thread = threading.Thread(target=self._run, args=(request, program, future),
                                  name=f"fence-{next(self._names)}", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            self._done(target)
            raise
        return future

    def _run(self, request: FenceRequest, program: Path,
             future: Future[dict[str, Any]]) -> None:
        # The device is released before the reply goes out: a client that sends its next
        # fence as soon as it has the answer must not find this one still running.
        answer: dict[str, Any] | None = None
        error: BaseException | None = None
        try:
            outcome = run_agent(program, request, self.settings.timeout)
            log.debug("fence agent %s for %s: exit %d in %.2f s; out %r; err %r",
                      program, request.target, outcome.rc, outcome.seconds, outcome.out,
                      outcome.err)
            answer = result(request, outcome)
            log.info("fence %s of %s: power %s (%s)", request.action, request.target,
                     answer["power"], answer["message"])
        except FenceError as e:
            log.warning("fence %s of %s failed: %s", request.action, request.target,
                        e.message)
            error = e
        except Exception as e:  # a bug: logged with its traceback, the reply says so
            log.exception("fence %s of %s: unexpected failure", request.action,
                          request.target)
            error = e
        finally:
            self._done(request.target)
        if error is not None:
            future.set_exception(error)
        else:
            assert answer is not None
            future.set_result(answer)

    def _done(self, target: str) -> None:
        with self._lock:
            self._running.pop(target, None)

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            return {t: {"action": a, "age": round(now - s, 3)}
                    for t, (a, s) in self._running.items()}


def bindings(settings: FenceSettings, *, host_ids: HostIdQuery | None) -> dict[str, Binding]:
    service = FenceService(settings, host_ids=host_ids)
    return {"Host.fenceNode": Binding(service.fence_node)}
