"""VmStatsSampler: one bulk libvirt stats call per sampling interval, for every VM.

Every ``interval`` seconds (a clock tick) the sampler issues ``getAllDomainStats`` (ACTIVE
and NOWAIT, see :mod:`actors.vm.stats`) through its own
:class:`~actors.vm.guestcall.GuestCaller`, off its thread, with a ``timeout``. The result is
turned into per-VM stats (:class:`~actors.vm.stats.StatsHistory`) and written to the
:class:`~actors.vm.board.VmBoard`, from which ``VM.getStats`` and ``Host.getAllVmStats``
answer: a request never calls libvirt.

A stopped (live-locked) qemu traps the first call that needs its monitor *forever*, a bulk
call included. So when a bulk call misses its deadline the sampler abandons it and issues
another at once: that one finds the stuck domain's job held and, with NOWAIT, returns its
partial record (no ``balloon.rss``: ``monitorResponse: -1``) in about a millisecond, and
full records for every other VM. Each stuck domain can trap at most one call, so up to
``max_stuck`` calls may be outstanding; past that the sampler skips ticks (``starved``) and
the board keeps the last stats, whose ``statsAge`` then grows.

A partial record only says that the domain's job was held at that instant, which also
happens for a few milliseconds whenever anyone else queries or changes the domain (a verb,
another libvirt client's stats call). So before a partial record is believed, the sampler
asks again for those domains alone, ``confirm_delay`` seconds later
(``domainListGetStats``, NOWAIT, same deadline): a VM is reported ``monitorResponse: -1``
only when its job is still held then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pykka

from actors.base import ActorContext, SupervisedActor, tell_or_drop
from actors.clock import TimerHandle
from actors.host.libvirtconn import LibvirtHandle
from actors.vm.board import VmBoard
from actors.vm.guestcall import GuestCaller
from actors.vm.stats import BULK_FLAGS, STATS, Record, StatsHistory, monitor_responding
from messaging.errors import GuestCallBusy, GuestCallTimeout
from messaging.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

KIND = "bulk-stats"


@dataclass(frozen=True)
class _Tick:
    pass


@dataclass(frozen=True)
class _BulkDone:
    future: Future[Any]
    issued: float
    confirming: bool = False


@dataclass(frozen=True)
class _Confirm:
    domains: tuple[Any, ...]  # virDomain objects whose records were partial


class VmStatsSampler(SupervisedActor):
    def __init__(
        self,
        ctx: ActorContext,
        *,
        libvirt: LibvirtHandle,
        board: VmBoard,
        interval: float,
        timeout: float,
        max_stuck: int = 4,
        confirm_delay: float = 0.2,
    ) -> None:
        super().__init__(ctx)
        self._libvirt = libvirt
        self._board = board
        self._interval = interval
        self._timeout = timeout
        self._max_stuck = max_stuck
        self._confirm_delay = confirm_delay
        self._pending: tuple[dict[str, Record], float] | None = None  # awaiting a confirm
        self._caller: GuestCaller | None = None
        self._timer: TimerHandle | None = None
        self._history = StatsHistory()
        self._in_flight = False
        self._counts = {"samples": 0, "timeouts": 0, "starved": 0, "errors": 0,
                        "confirmations": 0, "confirmedStuck": 0}
        self._last_duration = 0.0
        self._last_error = ""
        # one line a minute (and how many more) while every interval's call fails
        self._failures = RateLimitedLog(log, "bulk stats failures", burst=1, window=60.0)

    def setup(self) -> None:
        self._caller = GuestCaller("all-vms", clock=self.ctx.runtime.clock,
                                   max_outstanding=self._max_stuck, libvirt=self._libvirt)
        me = self.actor_ref
        self._timer = self.ctx.runtime.clock.call_every(self._interval,
                                                        lambda: _tell(me, _Tick()))

    def teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._caller is not None:
            self._caller.close()

    def describe(self) -> dict[str, Any]:
        return {
            "interval": self._interval,
            "timeout": self._timeout,
            **self._counts,
            "lastDurationMs": round(self._last_duration * 1000, 3),
            "lastError": self._last_error,
            "calls": self._caller.describe() if self._caller else {},
        }

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Tick):
            if not self._in_flight:
                self._issue()
        elif isinstance(message, _BulkDone):
            if message.confirming:
                self._on_confirmed(message)
            else:
                self._on_done(message)
        elif isinstance(message, _Confirm):
            self._confirm(message)
        else:
            return super().on_receive(message)
        return None

    def _issue(self) -> None:
        if not self._board.ids() or not self._libvirt.connected:
            return  # no VM (nothing to sample), or libvirt is away
        handle = self._libvirt  # the call's thread leases the connection (the caller does)
        self._submit(lambda: handle.get().getAllDomainStats(STATS, BULK_FLAGS),
                     "getAllDomainStats")

    def _submit(self, call: Callable[[], Any], name: str, *, confirming: bool = False) -> bool:
        assert self._caller is not None
        try:
            future = self._caller.submit(KIND, call, timeout=self._timeout, name=name)
        except GuestCallBusy as e:
            self._counts["starved"] += 1
            if self._counts["starved"] == 1 or self._counts["starved"] % 100 == 0:
                log.warning("no stats sample: %s", e)
            return False
        self._in_flight = True
        me, issued = self.actor_ref, time.monotonic()
        future.add_done_callback(lambda f: _tell(me, _BulkDone(f, issued, confirming)))
        return True

    def _on_done(self, message: _BulkDone) -> None:
        self._in_flight = False
        error = message.future.exception()
        if isinstance(error, GuestCallTimeout):
            # A stuck qemu holds this call; the next one skips that domain: issue it now.
            self._counts["timeouts"] += 1
            self._issue()
            return
        if error is not None:
            self._counts["errors"] += 1
            self._last_error = str(error)
            self._failures("the bulk stats call failed: %s", error)
            return
        now = time.monotonic()
        self._last_duration = now - message.issued
        ours = self._board.ids()
        records: dict[str, Record] = {}
        partial = []
        for dom, record in message.future.result():
            vm_id = dom.UUIDString()  # answered from the object: no libvirt call
            if vm_id in ours:
                records[vm_id] = record
                if not monitor_responding(record):
                    partial.append(dom)
        if not partial or self._confirm_delay <= 0:
            self._store(records, now)
            return
        self._pending = (records, now)
        self._in_flight = True  # no new bulk call until the sample is complete
        me, confirm = self.actor_ref, _Confirm(tuple(partial))
        self.ctx.runtime.clock.call_later(self._confirm_delay, lambda: _tell(me, confirm))

    def _confirm(self, message: _Confirm) -> None:
        self._counts["confirmations"] += 1
        handle, domains = self._libvirt, list(message.domains)

        def confirm() -> list[tuple[Any, Record]]:
            conn = handle.get()
            # Domains of a connection retired meanwhile cannot be asked on this one.
            same = [d for d in domains if d.connect() is conn]
            return conn.domainListGetStats(same, STATS, BULK_FLAGS) if same else []

        if not handle.connected or not self._submit(confirm, "domainListGetStats",
                                                    confirming=True):
            self._finish_pending()

    def _on_confirmed(self, message: _BulkDone) -> None:
        self._in_flight = False
        error = message.future.exception()
        if self._pending is None:
            return
        records, _taken = self._pending
        if error is None:
            for dom, record in message.future.result():
                vm_id = dom.UUIDString()
                if vm_id in records and monitor_responding(record):
                    records[vm_id] = record  # it was only busy for a moment
        elif isinstance(error, GuestCallTimeout):
            self._counts["timeouts"] += 1  # it got stuck on one of them: they are stuck
        self._counts["confirmedStuck"] += sum(
            1 for r in records.values() if not monitor_responding(r))
        self._finish_pending()

    def _finish_pending(self) -> None:
        self._in_flight = False
        if self._pending is not None:
            records, taken = self._pending
            self._pending = None
            self._store(records, taken)

    def _store(self, records: dict[str, Record], taken: float) -> None:
        stats = self._history.update(records, taken, started_at=self._board.started(),
                                     wall_now=time.time())
        self._board.set_stats(stats, taken)
        self._counts["samples"] += 1


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    tell_or_drop(ref, message, log, "the stats sampler")
