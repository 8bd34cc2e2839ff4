"""KsmActor (``/policy/ksm``): the one writer of KSM's knobs, and its sampler.

Every ``interval`` seconds (a clock tick) it reads ``/sys/kernel/mm/ksm`` and ksmd's CPU
time (cheap local files, on its thread) into the :class:`~actors.policy.state.KsmBoard`,
which ``Host.getStats`` and the policy read. Writes come from ``Host.setKsmTune`` (asked:
:meth:`KsmActor.tune` answers a future at once) and from the policy's decisions (told:
:class:`ApplyKsm`, the outcome told back); each runs on a ``ksm-*`` thread of a
:class:`~actors.calls.BoundedCaller` with a deadline (``run = 2`` unmerges every shared page
before it returns). One write at a time: another meanwhile is refused with
``HostSettingError`` (106) naming the write in flight.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pykka

from actors.base import ActorContext, SupervisedActor, tell_or_drop
from actors.calls import BoundedCaller, Call
from actors.clock import TimerHandle
from actors.policy import ksm
from actors.policy.ksm import KsmSettings, KsmState, KsmSysfs
from actors.policy.state import KsmBoard
from messaging.errors import HostSettingError

log = logging.getLogger(__name__)

WRITE = "write"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ApplyKsm:
    """Write ``settings``; ``reply(error or None)`` is called on the actor's thread."""

    settings: KsmSettings
    why: str
    reply: Callable[[BaseException | None], None]


@dataclass(frozen=True)
class _Tick:
    pass


@dataclass(frozen=True)
class _Written:
    settings: KsmSettings
    why: str
    future: Future[KsmState]
    reply: Callable[[BaseException | None], None] | None


class KsmCaller(BoundedCaller):
    thread_prefix = "ksm"

    def timeout_error(self, call: Call) -> Exception:
        return HostSettingError(what="KSM", reason=f"{call.name} did not return within "
                                                   f"{call.timeout:g} s")

    def busy_error(self, call: str, kind: str, pending: Call) -> Exception:
        return HostSettingError(
            what="KSM", reason=f"{pending.name} is still running "
                               f"({time.monotonic() - pending.started:.1f} s); try again")


class KsmActor(SupervisedActor):
    def __init__(
        self,
        ctx: ActorContext,
        *,
        board: KsmBoard,
        interval: float,
        sysfs: KsmSysfs | None = None,
        write_timeout: float = 30.0,
    ) -> None:
        super().__init__(ctx)
        self._board = board
        self._interval = interval
        self._sysfs = sysfs or KsmSysfs()
        self._write_timeout = write_timeout
        self._caller: KsmCaller | None = None
        self._timer: TimerHandle | None = None
        self._ksmd: int | None = None
        self._cpu: tuple[float, int] | None = None  # (monotonic, ticks) of the last sample
        self._writes: list[dict[str, Any]] = []  # the last few, for Actors.inspect

    def setup(self) -> None:
        self._caller = KsmCaller("ksm", clock=self.ctx.runtime.clock)
        self._ksmd = ksm.find_ksmd() if self._sysfs.available else None
        self._sample()
        me = self.actor_ref
        self._timer = self.ctx.runtime.clock.call_every(self._interval,
                                                        lambda: _tell(me, _Tick()))

    def teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._caller is not None:
            self._caller.close()

    def describe(self) -> dict[str, Any]:
        state = self._board.state()
        return {
            "sysfs": str(self._sysfs.root),
            "available": self._sysfs.available,
            "ksmd": self._ksmd,
            "state": None if state is None else state.__dict__,
            "stats": self._board.host_stats(),
            "lastWrites": list(self._writes),
            "calls": self._caller.describe() if self._caller else {},
        }

    # --- writes ----------------------------------------------------------------------------

    def tune(self, settings: KsmSettings, why: str = "Host.setKsmTune") -> Future[KsmState]:
        """Write ``settings`` (asked by Host.setKsmTune): a future of what sysfs then says."""
        return self._write(settings, why, None)

    def _write(self, settings: KsmSettings, why: str,
               reply: Callable[[BaseException | None], None] | None) -> Future[KsmState]:
        assert self._caller is not None, "used before setup"
        sysfs = self._sysfs
        name = "write " + ", ".join(f"{k}={v}" for k, v in settings.items())
        future = self._caller.submit(WRITE, lambda: sysfs.write(settings),
                                     timeout=self._write_timeout, name=name)
        me = self.actor_ref
        future.add_done_callback(lambda f: _tell(me, _Written(settings, why, f, reply)))
        return future

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Tick):
            self._sample()
        elif isinstance(message, ApplyKsm):
            try:
                self._write(message.settings, message.why, message.reply)
            except HostSettingError as e:
                message.reply(e)
        elif isinstance(message, _Written):
            self._written(message)
        else:
            return super().on_receive(message)
        return None

    def _written(self, message: _Written) -> None:
        error = message.future.exception()
        entry = {"at": round(time.monotonic(), 3), "why": message.why,
                 "settings": dict(message.settings.items())}
        if error is not None:
            entry["error"] = str(error)
            log.warning("KSM: %s (%s) failed: %s", entry["settings"], message.why, error)
        else:
            log.info("KSM: set %s (%s)", entry["settings"], message.why)
        self._writes = [*self._writes[-9:], entry]
        self._sample()
        if message.reply is not None:
            message.reply(error)

    # --- samples ---------------------------------------------------------------------------

    def _sample(self) -> None:
        if not self._sysfs.available:
            return
        state = self._sysfs.read()
        stats: dict[str, Any] = {
            "ksmState": state.run == 1,
            "ksmPages": state.pages_to_scan or 0,
            "ksmCpu": self._cpu_percent(),
            "memShared": ksm.saved_pages(state) // (1 << 20),
            "ksmShared": state.pages_shared or 0,
            "ksmSharing": state.pages_sharing or 0,
        }
        self._board.set(state, stats)

    def _cpu_percent(self) -> float:
        """ksmd's share of the host's CPU since the last sample (percent)."""
        if self._ksmd is None:
            return 0.0
        ticks = ksm.cpu_ticks(self._ksmd)
        now = time.monotonic()
        if ticks is None:
            self._ksmd = ksm.find_ksmd()
            self._cpu = None
            return 0.0
        before, self._cpu = self._cpu, (now, ticks)
        if before is None or now <= before[0]:
            return 0.0
        seconds = (ticks - before[1]) / CLOCK_TICKS
        return round(100.0 * seconds / (now - before[0]) / (os.cpu_count() or 1), 2)


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    tell_or_drop(ref, message, log, "the KSM actor")
