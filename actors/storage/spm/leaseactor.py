"""``/storage/pools/<spUUID>/lease``: this host's side of the pool's SPM lease.

The actor owns the pool's keeper process through a :class:`~actors.storage.spm.link.KeeperLink`
(a thread that starts, watches and restarts the keeper and speaks to it). Every state the
keeper reports lands on the :class:`~actors.storage.spm.board.LeaseBoard` at once (from the link
thread), so the pool's write gate and ``getSpmStatus`` read it without asking anyone; the actor
gets the same state as a message, publishes ``|storage|spm_status|<spUUID>`` when the SPM
status changes, and tells the SPM-term listeners (the task manager's recovery, the mail
monitor) when this host gains or loses the role.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from actors.base import ActorContext, SupervisedActor
from actors.storage.spm.board import LeaseBoard, LeaseState
from actors.storage.spm.keeperconf import KeeperConfig
from actors.storage.spm.link import KeeperLink

log = logging.getLogger(__name__)

HALT_TIMEOUT = 30.0

SpmListener = Callable[[str, LeaseState], None]
"""``(event, state)``: event ``gained`` or ``lost``; called on the lease actor's thread
(it must only tell)."""


@dataclass(frozen=True)
class _State:
    old: LeaseState | None
    new: LeaseState


class LeaseActor(SupervisedActor):
    def __init__(self, ctx: ActorContext, *, sp_uuid: str, board: LeaseBoard,
                 make_config: Callable[[], KeeperConfig], heartbeat: float,
                 context: Any, listeners: Sequence[SpmListener] = ()) -> None:
        super().__init__(ctx)
        self.sp_uuid = sp_uuid
        self.board = board
        self.make_config = make_config
        self.heartbeat = heartbeat
        self.context = context
        self.listeners = list(listeners)
        self._link: KeeperLink | None = None
        self._spm = False
        self._lver = 0

    def setup(self) -> None:
        me = self.actor_ref
        board = self.board

        def on_state(state: LeaseState) -> None:  # on the link thread
            old = board.put(state)
            try:
                me.tell(_State(old, state))
            except pykka.ActorDeadError:
                pass

        self._link = KeeperLink(sp_uuid=self.sp_uuid, make_config=self.make_config,
                                heartbeat=self.heartbeat, on_state=on_state,
                                context=self.context)
        self._link.begin()

    def teardown(self) -> None:
        if self._link is not None:
            self._link.halt(HALT_TIMEOUT)
        if self._spm:
            self._tell_listeners("lost", self.board.get(self.sp_uuid))
        self.board.remove(self.sp_uuid)

    def describe(self) -> dict[str, Any]:
        state = self.board.get(self.sp_uuid)
        link = self._link
        now = time.monotonic()
        host = dict(state.detail.get("hostId") or {})
        if host.get("lastRenewal"):
            host["lastRenewalAge"] = round(now - float(host["lastRenewal"]), 3)
        return {
            "spUUID": self.sp_uuid, **state.to_wire(), "status": state.status,
            "lver": state.lver, "reason": state.reason,
            "keeperPid": link.keeper_pid if link else None,
            "keeperRestarts": link.restarts if link else 0,
            "lastError": link.last_error if link else "",
            "hostId": host, "liveHosts": state.detail.get("liveHosts", []),
            "fence": state.detail.get("fence"), "writer": state.detail.get("writer"),
            "deadline": state.deadline,
            "deadlineIn": round(state.deadline - now, 3) if state.deadline else None,
            "reportAge": round(now - state.received, 3),
        }

    # --- verbs (asked through a proxy by API workers; answered at once) -------------------

    def spm_start(self) -> bool:
        if self.board.get(self.sp_uuid).status != "SPM":
            self._command("acquire")  # a keeper still starting contends once it can
        return True

    def spm_stop(self) -> bool:
        self._command("release")
        return True

    def _command(self, op: str) -> None:
        assert self._link is not None
        self._link.command(op)

    # --- messages ------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _State):
            self._on_state(message.old, message.new)
            return None
        return super().on_receive(message)

    def _on_state(self, old: LeaseState | None, new: LeaseState) -> None:
        now = time.monotonic()
        if old is None or old.to_wire(now) != new.to_wire(now):
            log.info("pool %s: SPM status %s (spmId %d, lver %d)%s", self.sp_uuid,
                     new.to_wire()["spmStatus"], new.spm_id, new.spm_lver,
                     f": {new.reason}" if new.reason else "")
            self.ctx.runtime.events.publish(f"|storage|spm_status|{self.sp_uuid}",
                                            {"spUUID": self.sp_uuid, **new.to_wire(),
                                             "reason": new.reason})
        spm = new.status == "SPM" and new.writer_ready
        if self._spm and (not spm or new.lver != self._lver):  # lost (or lost and regained
            self._spm = False                                  # between two reports)
            self._tell_listeners("lost", new)
        if spm and not self._spm:
            self._spm, self._lver = True, new.lver
            self._tell_listeners("gained", new)

    def _tell_listeners(self, event: str, state: LeaseState) -> None:
        for listener in self.listeners:
            try:
                listener(event, state)
            except Exception:
                log.exception("an SPM %s listener failed", event)
