"""One actor per monitored storage domain: is the domain's storage answering, and how fast.

Every ``interval`` the clock tells the monitor to tick; a tick starts the domain's next
:class:`~actors.storage.probe.DomainProbe` (which refuses while one is outstanding, so a hung
domain costs exactly one stuck thread) and reads the last result without waiting for it. A
probe that finishes tells the monitor its result at once (its callback only posts a
message). When a tick finds the probe still running, the monitor asks the clock for one
extra check at the moment that probe's timeout expires, so a hang is noticed ``timeout``
after the probe began: detection within ``interval + timeout``.

Before the first probe the monitor must find the domain (a search over the connections, which
may hang like any storage I/O): that runs once on a short-lived thread of its own, which
posts what it found (every failure, an unexpected one too, is a result: code 200 and a logged
traceback for a bug); a search stuck past the timeout makes the domain invalid (215). A probe
that fails (rather than hangs) makes the monitor search again at the next tick, in case the
domain moved or its mount came back; a domain that cannot be found is searched for again
with a backoff (up to every 30 s), since a search touches every connection.

The state (valid, delay, lastCheck, code, version, acquired) goes to the
:class:`~actors.storage.board.MonitorBoard` after every check, and every change of
``valid`` (the first result included) is published as ``|storage|domain_status|<sdUUID>``.
A restarted monitor starts from nothing and probes again: it rebuilds from the storage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pykka

from actors.base import ActorContext, SupervisedActor
from actors.clock import TimerHandle
from actors.storage.board import NEVER, DomainHealth, MonitorBoard
from actors.storage.locator import DomainLocator
from actors.storage.probe import DomainProbe, ProbeResult
from actors.storage.sd.records import ProbeTarget
from actors.storage.workers import name_native_thread
from messaging.errors import StorageError, StorageTimeout, VdsmError

log = logging.getLogger(__name__)

FINDER_PREFIX = "probe-find-"
SEARCH_BACKOFF_MAX = 30.0
"""Seconds between searches for a domain that cannot be found, at most."""


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class _Deadline:
    generation: int


@dataclass(frozen=True)
class _Done:
    generation: int
    result: ProbeResult


@dataclass(frozen=True)
class _Found:
    generation: int
    target: ProbeTarget | None
    version: int = -1
    error: VdsmError | None = None


def _post(ref: pykka.ActorRef[Any], message: Any) -> None:
    """Tell ``ref`` from a probe or finder thread; a stopped monitor no longer cares."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass


def _find(sd_uuid: str, locator: DomainLocator, generation: int,
          report: Callable[[_Found], None]) -> None:
    """Runs on a finder thread: find the domain's probe target and post it."""
    name_native_thread(threading.current_thread().name)
    try:
        backend = locator.open(sd_uuid)
        found = _Found(generation, backend.probe_target(), backend.read_metadata().version)
    except VdsmError as e:
        found = _Found(generation, None, error=e)
    except OSError as e:
        found = _Found(generation, None, error=StorageError(reason=f"cannot find it: {e}"))
    except Exception as e:  # a bug must not leave the domain "finding" forever
        log.error("finding domain %s failed unexpectedly", sd_uuid, exc_info=e)
        found = _Found(generation, None, error=StorageError(
            reason=f"finding the domain failed unexpectedly: {e!r} (see the agent log)"))
    report(found)


class DomainMonitor(SupervisedActor):
    def __init__(self, ctx: ActorContext, *, sd_uuid: str, host_id: int, interval: float,
                 timeout: float, locator: DomainLocator, board: MonitorBoard) -> None:
        super().__init__(ctx)
        self.sd_uuid = sd_uuid
        self.host_id = host_id
        self.interval = interval
        self.timeout = timeout
        self.locator = locator
        self.board = board
        self._timer: TimerHandle | None = None
        self._generation = 0
        """Bumped at every search: results of an abandoned search or probe are dropped."""
        self._finding_since: float | None = None
        self._misses = 0
        self._search_after = 0.0
        self._probe: DomainProbe | None = None
        self._seen: tuple[float, bool] | None = None
        self._deadline_for: float | None = None
        self._health = DomainHealth(sd_uuid, valid=False, code=0, delay=0.0, checked_at=NEVER,
                                    since=time.monotonic())
        self._published: bool | None = None
        self.transitions = 0

    def setup(self) -> None:
        self.board.watch(self._health)
        me = self.actor_ref
        self._timer = self.ctx.runtime.clock.call_every(
            self.interval, lambda: _post(me, Tick()), first=0.0)

    def teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def on_stop(self) -> None:
        # A deliberate stop (deactivate, disconnect): the domain is not monitored any more.
        # After a failure the entry stays until the restarted monitor replaces it.
        self.board.remove(self.sd_uuid)
        super().on_stop()

    def describe(self) -> dict[str, Any]:
        probe = self._probe
        return {
            "sdUUID": self.sd_uuid, "interval": self.interval, "timeout": self.timeout,
            "health": self._health.to_wire(time.monotonic()), "transitions": self.transitions,
            "target": probe.target.read_path if probe else None,
            "probes": probe.probes if probe else 0, "timeouts": probe.timeouts if probe else 0,
            "outstanding": probe.outstanding if probe else False,
            "finding": self._finding_since is not None,
        }

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Tick):
            self._tick()
        elif isinstance(message, _Done):
            if message.generation == self._generation:
                self._record(message.result)
        elif isinstance(message, _Deadline):
            if message.generation == self._generation and self._probe is not None:
                self._record(self._probe.result())
        elif isinstance(message, _Found):
            if message.generation == self._generation:
                self._found(message)
        else:
            return super().on_receive(message)
        return None

    # --- the check cycle -----------------------------------------------------------------

    def _tick(self) -> None:
        if self._probe is None:
            self._search()
            return
        self._record(self._probe.result())
        if self._probe is not None and not self._probe.start():
            self._arm_deadline(self._probe)

    def _search(self) -> None:
        now = time.monotonic()
        if now < self._search_after:
            return
        if self._finding_since is not None:
            stuck = now - self._finding_since
            if stuck > self.timeout:
                self._set(valid=False, code=StorageTimeout.code, delay=stuck,
                          error=f"finding the domain: no answer within {self.timeout:g} s")
            return
        self._generation += 1
        self._finding_since = now
        me, generation = self.actor_ref, self._generation
        threading.Thread(target=_find, args=(self.sd_uuid, self.locator, generation,
                                             lambda found: _post(me, found)),
                         name=f"{FINDER_PREFIX}{self.sd_uuid[:8]}", daemon=True).start()

    def _found(self, found: _Found) -> None:
        self._finding_since = None
        if found.target is None:
            # search again with a backoff: a gone domain costs a search over every connection
            self._misses += 1
            backoff = min(SEARCH_BACKOFF_MAX, self.interval * 2 ** (self._misses - 1))
            self._search_after = time.monotonic() + backoff - self.interval / 2
            error = found.error or StorageError(reason="cannot find the domain")
            self._set(valid=False, code=error.code, delay=0.0, error=error.message,
                      checked_at=time.monotonic())
            return
        self._misses, self._search_after = 0, 0.0
        me, generation = self.actor_ref, self._generation
        self._health = replace(self._health, version=found.version)
        self._probe = DomainProbe(found.target, timeout=self.timeout, slot=self.host_id,
                                  name=self.sd_uuid,
                                  on_done=lambda result: _post(me, _Done(generation, result)))
        self._probe.start()

    def _arm_deadline(self, probe: DomainProbe) -> None:
        """The outstanding probe is slow: check again exactly when its timeout expires."""
        started = probe.outstanding_since
        if started is None or self._deadline_for == started:
            return
        self._deadline_for = started
        me, message = self.actor_ref, _Deadline(self._generation)
        delay = started + self.timeout - time.monotonic() + 0.01
        self.ctx.runtime.clock.call_later(delay, lambda: _post(me, message))

    def _record(self, result: ProbeResult | None) -> None:
        if result is None:
            return
        key = (result.started, result.timed_out)
        if key == self._seen and not result.timed_out:
            return
        self._seen = key
        if result.ok:
            self._set(valid=True, code=0, delay=result.delay, error="",
                      checked_at=result.started + result.delay)
        elif result.timed_out:
            self._set(valid=False, code=result.code, delay=result.delay, error=result.error)
        else:
            self._set(valid=False, code=result.code, delay=result.delay, error=result.error,
                      checked_at=result.started + result.delay)
            self._probe = None  # search again at the next tick

    def _set(self, *, valid: bool, code: int, delay: float, error: str,
             checked_at: float | None = None) -> None:
        self._health = replace(
            self._health, valid=valid, code=code, delay=delay, error=error,
            checked_at=self._health.checked_at if checked_at is None else checked_at)
        self.board.put(self._health)
        if valid == self._published:
            return
        self._published = valid
        self.transitions += 1
        log.log(logging.INFO if valid else logging.WARNING, "domain %s is now %s%s",
                self.sd_uuid, "valid" if valid else "invalid",
                f" (code {code}: {error})" if error else "")
        self.ctx.runtime.events.publish(f"|storage|domain_status|{self.sd_uuid}",
                                        self._health.event(time.monotonic()))
