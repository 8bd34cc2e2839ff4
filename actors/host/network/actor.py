"""The network actor: owns every change of the host's network configuration, one at a time.

Changes (``Host.setupNetworks`` and the verbs built on it) queue in the actor; the one in
progress runs on the actor's single ``network-apply`` thread (an :class:`Applier`), so the
actor itself never blocks. A change under a connectivity check stays in progress until it
is confirmed (the :class:`ConnectivityWatch` tells the actor) or its timeout passes (a clock
timer tells the actor), then it is committed or rolled back; only then does the next one
start. Committing writes ``running.json``; every change that reached the host publishes
``|net|host_conn|no_id``. At start the actor restores what ``persist.py`` says: the safe
configuration after a boot, or the rollback of a change a dead agent left unconfirmed.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pykka

from actors.base import ActorContext, SupervisedActor
from actors.clock import TimerHandle
from actors.host.network import restore
from actors.host.network.apply import Applier, Transaction
from actors.host.network.model import NetConfig, Request
from actors.host.network.persist import NetStore, boot_marker
from actors.host.network.shared import ConnectivityWatch, NetworkBoard
from messaging.errors import (
    ActorUnavailable,
    ConnectivityLost,
    NetworkBusy,
    NetworkError,
    VdsmError,
)

log = logging.getLogger(__name__)

TOPIC = "|net|host_conn|no_id"
STOP_TIMEOUT = 30.0


@dataclass
class _Change:
    token: int
    request: Request
    client: str
    future: Future[Any]
    start_by: float  # monotonic; not started by then: its client no longer waits


@dataclass
class _Check:
    change: _Change
    config: NetConfig
    tx: Transaction
    timer: TimerHandle


@dataclass(frozen=True)
class _Done:
    """A job of the apply thread ended: ``value`` or ``error``."""

    kind: str  # restore, apply, commit, rollback, lease
    token: int
    value: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _Confirmed:
    token: int


@dataclass(frozen=True)
class _Expired:
    token: int


@dataclass(frozen=True)
class LeaseChanged:
    """A DHCP client's lease changed (told from its reader thread)."""

    network: str


class NetworkActor(SupervisedActor):
    def __init__(self, ctx: ActorContext, *, applier: Applier, store: NetStore,
                 board: NetworkBoard, watch: ConnectivityWatch, cancel: threading.Event,
                 max_queued: int = 8) -> None:
        super().__init__(ctx)
        self._applier = applier
        self._store = store
        self._board = board
        self._watch = watch
        self._cancel = cancel
        self._max_queued = max_queued
        self._tokens = itertools.count(1)
        self._queue: deque[_Change] = deque()
        self._busy = "restore"  # what runs now ("" when idle)
        self._current: _Change | None = None
        self._check: _Check | None = None
        self._running = NetConfig()
        self._executor: ThreadPoolExecutor | None = None
        self._pending_commit: tuple[NetConfig, Transaction] | None = None
        self._changes = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def setup(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="network-apply")
        self._submit("restore", 0, restore.restore, self._applier, self._store)

    def teardown(self) -> None:
        self._cancel.set()
        if self._check is not None:
            self._check.timer.cancel()
            self._watch.disarm(self._check.change.token)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._applier.stop_clients()
        error = ActorUnavailable(path=self.ctx.path, reason="the network actor stopped")
        for change in [*self._queue, *([self._current] if self._current else [])]:
            if not change.future.done():
                change.future.set_exception(error)
        self._queue.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "busy": self._busy or None,
            "queued": len(self._queue),
            "waitingForConnectivity": self._check is not None,
            "networks": sorted(self._running.networks),
            "bondings": sorted(self._running.bonds),
            "dhcpClients": sorted(self._applier.clients),
            "changes": self._changes,
        }

    # --- asked by the verbs ----------------------------------------------------------------

    def setup_networks(self, request: Request, client: str,
                       start_by: float = math.inf) -> Future[Any]:
        """Queue a change; the future resolves to True once it is committed."""
        if len(self._queue) >= self._max_queued:
            raise NetworkBusy(pending=len(self._queue))
        change = _Change(next(self._tokens), request, client, Future(), start_by)
        self._queue.append(change)
        self._next()
        return change.future

    def set_safe(self) -> Future[Any]:
        """Make the running configuration the safe one (written on the apply thread, after
        any change in progress has been applied)."""
        assert self._executor is not None
        config = self._running
        return self._executor.submit(self._store.save_safe, config)

    # --- messages ----------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Done):
            self._done(message)
        elif isinstance(message, _Confirmed):
            self._confirmed(message.token)
        elif isinstance(message, _Expired):
            self._expired(message.token)
        elif isinstance(message, LeaseChanged):
            self._lease(message.network)
        else:
            return super().on_receive(message)
        return None

    def _submit(self, kind: str, token: int, fn: Any, *args: Any) -> None:
        assert self._executor is not None
        me = self.actor_ref

        def job() -> None:
            try:
                done = _Done(kind, token, value=fn(*args))
            except Exception as e:
                if not isinstance(e, VdsmError):
                    log.exception("network job %s failed", kind)
                done = _Done(kind, token, error=e)
            try:
                me.tell(done)
            except pykka.ActorDeadError:
                log.info("network job %s ended after the actor stopped", kind)

        self._executor.submit(job)

    def _next(self) -> None:
        while self._queue and not self._busy:
            change = self._queue.popleft()
            if time.monotonic() <= change.start_by:
                self._begin(change)
                return
            log.warning("network change %d waited too long behind others: dropped, its "
                        "client no longer waits", change.token)
            change.future.set_exception(NetworkBusy(pending=len(self._queue)))

    def _begin(self, change: _Change) -> None:
        self._current = change
        self._busy = "apply"
        marker = boot_marker() if change.request.options.connectivity_check else ""
        self._submit("apply", change.token, _apply, self._applier, self._store,
                     change.request, self._running, marker)

    def _done(self, done: _Done) -> None:
        if done.kind == "restore":
            self._restored(done)
        elif done.kind == "apply":
            self._applied(done)
        elif done.kind == "commit":
            self._committed(done)
        elif done.kind == "rollback":
            self._rolled_back(done)
        elif done.kind == "lease" and done.value:
            self._publish()
        elif done.error is not None:
            log.error("network job %s failed: %s", done.kind, done.error)

    def _restored(self, done: _Done) -> None:
        if done.error is not None:
            log.error("restoring the network configuration failed: %s", done.error)
        else:
            self._running, changed = done.value
            self._board.set(self._running)
            if changed:
                self._publish()
        self._finish()

    def _applied(self, done: _Done) -> None:
        change = self._current
        assert change is not None
        if done.error is not None:
            self._fail(change, done.error, changed=isinstance(done.error, NetworkError)
                       and done.error.code == 310)
            return
        config, tx = done.value
        if not change.request.options.connectivity_check or not tx.journal:
            self._busy = "commit"
            self._submit("commit", change.token, _commit, self._store, config,
                         change.request.options.commit_on_success)
            self._pending_commit = (config, tx)
            return
        me = self.actor_ref
        token = change.token
        timeout = change.request.options.connectivity_timeout
        timer = self.ctx.runtime.clock.call_later(timeout, lambda: me.tell(_Expired(token)))
        self._check = _Check(change, config, tx, timer)
        self._busy = "waiting for connectivity"
        self._watch.arm(token, change.client, lambda t: me.tell(_Confirmed(t)))
        log.info("network change %d applied: waiting %d s for a client to confirm "
                 "connectivity", token, timeout)

    def _confirmed(self, token: int) -> None:
        check = self._check
        if check is None or check.change.token != token:
            return
        check.timer.cancel()
        self._check = None
        log.info("network change %d: connectivity confirmed", token)
        self._busy = "commit"
        self._pending_commit = (check.config, check.tx)
        self._submit("commit", token, _commit, self._store, check.config,
                     check.change.request.options.commit_on_success)

    def _expired(self, token: int) -> None:
        check = self._check
        if check is None or check.change.token != token:
            return
        self._watch.disarm(token)
        self._check = None
        timeout = check.change.request.options.connectivity_timeout
        log.warning("network change %d: no client confirmed connectivity within %d s: "
                    "rolling it back", token, timeout)
        self._busy = "rollback"
        self._submit("rollback", token, _rollback, self._applier, self._store, check.tx,
                     ConnectivityLost(timeout=timeout))

    def _committed(self, done: _Done) -> None:
        change = self._current
        assert change is not None and self._pending_commit is not None
        config, tx = self._pending_commit
        self._pending_commit = None
        if done.error is not None:
            log.error("recording network change %d failed: %s; rolling it back", change.token,
                      done.error)
            self._busy = "rollback"
            self._submit("rollback", change.token, _rollback, self._applier, self._store, tx,
                         NetworkError(reason=f"the change could not be recorded: "
                                             f"{done.error}; it was rolled back"))
            return
        self._running = config
        self._board.set(config)
        self._changes += 1
        if tx.journal:
            self._publish()
        change.future.set_result(True)
        self._finish()

    def _rolled_back(self, done: _Done) -> None:
        change = self._current
        assert change is not None
        self._publish()  # the host changed twice: the change, then its rollback
        self._fail(change, done.error if done.error is not None else done.value, changed=False)

    def _fail(self, change: _Change, error: BaseException, *, changed: bool) -> None:
        if changed:
            self._publish()
        if not change.future.done():
            change.future.set_exception(error)
        self._finish()

    def _finish(self) -> None:
        self._current = None
        self._busy = ""
        self._next()

    def _lease(self, network: str) -> None:
        config = self._check.config if self._check is not None else self._running
        net = config.networks.get(network)
        if net is None or not net.dhcp:
            return
        self._submit("lease", 0, self._applier.sync_lease, network, net.default_route)

    def _publish(self) -> None:
        self.ctx.runtime.events.publish(TOPIC, {})


# --- jobs (on the apply thread) ----------------------------------------------------------------


def _apply(applier: Applier, store: NetStore, request: Request, running: NetConfig,
           marker: str) -> tuple[NetConfig, Transaction]:
    if marker:  # under a connectivity check: a dead agent's successor rolls it back
        store.save_pending(running.merged(request), marker)
    try:
        return applier.apply(request, running)
    except BaseException:
        if marker:
            store.drop_pending()
        raise


def _commit(store: NetStore, config: NetConfig, safe: bool) -> None:
    store.save_running(config, boot_marker())
    store.drop_pending()
    if safe:
        store.save_safe(config)


def _rollback(applier: Applier, store: NetStore, tx: Transaction,
              error: VdsmError) -> VdsmError:
    applier.undo(tx, error.message)
    store.drop_pending()
    return error
