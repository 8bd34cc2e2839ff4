"""The keeper's renewal thread: the host id, renewed every ``renew_interval``, and the view
of the other hosts and of the SPM lease's leader that comes with each renewal.

It does one thing in a loop: acquire the host id if it is not held, else renew it; observe
every host's slot; read the leader; report. Each step is bounded I/O. A renewal that fails is
retried at the next interval; when the deadline passes without one the host id is lost
(``on_lost``): the fencer has killed the writer by then, and the next pass acquires a new
generation. It never touches the writer or the sockets: it reports through callbacks that
only hand the news to the keeper's main loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from actors.storage.spm.leaseops import UNKNOWN, HostIdLost, Leader, LeaseOps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostIdState:
    state: str = "acquiring"  # acquiring | live | lost | released
    generation: int = 0
    deadline: float = 0.0  # CLOCK_MONOTONIC; valid while now < deadline
    renewals: int = 0
    failures: int = 0
    last_renewal: float = 0.0  # when the last successful renewal was issued
    error: str = ""
    leader: Leader | None = None
    owner_liveness: str = UNKNOWN
    live_hosts: tuple[int, ...] = ()
    observing_since: float = 0.0  # CLOCK_MONOTONIC of the first successful observation
    observed_at: float = 0.0  # ... and of the latest (live_hosts is as of then)


class Renewer:
    def __init__(self, ops: LeaseOps, *, renew_interval: float,
                 on_change: Callable[[HostIdState], None], fast_first: bool,
                 writer_dead: Callable[[], bool]) -> None:
        """``fast_first``: the slot's previous holder is known dead (this host's previous
        keeper, checked by the caller). ``writer_dead``: whether this keeper's writer has
        exited, which lets it take a new generation of its own slot at once after losing
        one (no process of this host can write under the old one any more)."""
        self.ops = ops
        self.interval = renew_interval
        self.on_change = on_change
        self._fast = fast_first
        self._writer_dead = writer_dead
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state = HostIdState()
        self._thread = threading.Thread(target=self._run, name="renewer", daemon=True)

    def begin(self) -> None:
        self._thread.start()

    @property
    def state(self) -> HostIdState:
        with self._lock:
            return self._state

    def halt(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def drop(self) -> None:
        """Stop counting on the current generation (its SPM lease could not be released):
        let it expire and acquire a new one, which makes the old one dead for everyone."""
        self._set(state="lost", error="dropped to release the SPM lease")

    def _set(self, **changes: object) -> HostIdState:
        with self._lock:
            self._state = replace(self._state, **changes)  # type: ignore[arg-type]
            state = self._state
        self.on_change(state)
        return state

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:
            log.exception("the renewal thread failed: the keeper must restart")
            raise

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            if self.state.state != "live":
                self._acquire()
            else:
                self._renew(started)
            self._observe()
            self._stop.wait(max(0.0, started + self.interval - time.monotonic()))

    def _acquire(self) -> None:
        current = self.state
        fast = self._fast
        if current.state == "lost":
            if not self._writer_dead():
                return  # its writer may still write under the old generation
            fast = True  # the old generation was ours, and nothing of ours uses it now
        try:
            generation = self.ops.acquire_host_id(fast=fast)
        except Exception as e:  # noqa: BLE001 - any failure: retried at the next interval
            log.warning("cannot acquire the host id: %s", e)
            self._set(state="acquiring", error=str(e), failures=current.failures + 1)
            return
        self._fast = False
        now = time.monotonic()
        try:
            deadline = self.ops.renew_host_id()
        except Exception as e:  # noqa: BLE001
            log.warning("first renewal of the host id failed: %s", e)
            deadline = now
        log.info("host id acquired, generation %d", generation)
        self._set(state="live", generation=generation, deadline=deadline, error="",
                  last_renewal=now)

    def _renew(self, started: float) -> None:
        current = self.state
        try:
            deadline = self.ops.renew_host_id()
        except HostIdLost as e:
            log.error("host id lost: %s", e)
            self._set(state="lost", error=str(e), failures=current.failures + 1)
            return
        except Exception as e:  # noqa: BLE001 - counted; the deadline decides
            failures = current.failures + 1
            if time.monotonic() >= current.deadline:
                log.error("host id lost: no renewal before its deadline (%s)", e)
                self._set(state="lost", error=str(e), failures=failures)
            else:
                log.warning("renewing the host id failed (%d in a row): %s", failures, e)
                self._set(error=str(e), failures=failures)
            return
        if self.state.state != "live":
            return  # dropped meanwhile
        self._set(deadline=deadline, renewals=current.renewals + 1, failures=0, error="",
                  last_renewal=started)

    def _observe(self) -> None:
        try:
            self.ops.observe()
            leader = self.ops.read_leader()
        except Exception as e:  # noqa: BLE001 - no information this time
            log.debug("observing the lease areas failed: %s", e)
            return
        self._set(leader=leader, owner_liveness=self.ops.liveness(leader),
                  live_hosts=tuple(self.ops.live_hosts()),
                  observing_since=self.state.observing_since or time.monotonic(),
                  observed_at=time.monotonic())
