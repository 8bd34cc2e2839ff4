"""GuestAgent: the QEMU guest agent of one VM, a plain component of its VmActor.

It lives on the VM actor's thread (like :class:`~actors.vm.inflight.InFlight`) and never
blocks it: every agent call runs on a guest-call thread of its own ``InFlight`` (kinds
``agent-info``, ``agent-verb``, ``agent-thaw``: a stuck verb cannot hold up a thaw) with a
deadline, and comes back as a message the actor hands to :meth:`GuestAgent.receive`.

**State** (``guestAgent`` in the VM's stats; a VM_status event when the agent starts or
stops answering): ``unknown`` until first asked, ``responsive``, ``unresponsive`` (the
channel is open but no answer came in time), ``disconnected`` (nothing listens in the guest)
or ``absent`` (a domain without the channel). libvirt's agent lifecycle event (routed as
DomainEvent ``agent_lifecycle``) says at once when qemu-ga opens or closes its port: a
connect starts a refresh, a disconnect is ``disconnected`` at once. Whatever a call learns
(a timeout, "not connected") updates the state too, unless a lifecycle event came while it
ran (the event is newer: a refresh cut short by the agent's exit does not make a
disconnected agent ``unresponsive``).

**Guest info** is refreshed every ``[guest_agent] info_interval`` while the VM runs
(:func:`~actors.vm.agentwork.refresh`; the package query at most every ``apps_interval``)
and written to the board as the VM's ``agent`` part: the fast stats path never waits on a
guest. The last info stays while the agent is away; it goes with the VM.

**Verbs** (desktop commands, freeze, thaw) refuse at once when the agent is known to be
away (``GuestAgentUnavailable``) and otherwise end by their deadline. ``VM.freeze`` arms a
timer: if ``VM.thaw`` does not come within its timeout, the component thaws the guest itself
(and again, with a backoff, until a thaw succeeds). A freeze that failed may still have
frozen the guest (a late reply), so it arms the same timer.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from actors.clock import Clock, TimerHandle
from actors.config import GuestAgentConfig
from actors.host.libvirthandle import LibvirtHandle
from actors.vm import agentwork, guestinfo
from actors.vm.agentwork import BoundedShutdown, Refresh
from actors.vm.board import VmBoard
from actors.vm.desktop import GuestCommand
from actors.vm.inflight import InFlight, OpDone
from actors.vm.qga import (
    ABSENT,
    DISCONNECTED,
    RESPONSIVE,
    UNKNOWN,
    UNRESPONSIVE,
    AgentChannel,
)
from messaging.errors import GuestAgentUnavailable, GuestCallBusy, GuestCallTimeout, VMError

log = logging.getLogger(__name__)

INFO, VERB, THAW = "agent-info", "agent-verb", "agent-thaw"
PART = "agent"  # the VM's part of the board this component writes
CONNECTED = 1  # VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED
STATES = frozenset({UNKNOWN, ABSENT, DISCONNECTED, UNRESPONSIVE, RESPONSIVE})
THAW_RETRY_MAX = 60.0


class AgentMessage:
    """Base of the component's messages (the actor routes them here)."""


@dataclass(frozen=True)
class AgentDone(AgentMessage):
    done: OpDone


@dataclass(frozen=True)
class AgentTick(AgentMessage):
    pass


@dataclass(frozen=True)
class ThawDue(AgentMessage):
    serial: int


class GuestAgent:
    def __init__(
        self,
        vm_id: str,
        *,
        config: GuestAgentConfig,
        libvirt: LibvirtHandle,
        clock: Clock,
        board: VmBoard,
        tell: Callable[[AgentMessage], None],
        on_change: Callable[[], None],
        running: Callable[[], bool],
    ) -> None:
        self.vm_id = vm_id
        self.config = config
        self.channel = AgentChannel(vm_id, libvirt=libvirt, timeout=config.timeout,
                                    max_reply=config.max_reply)
        #: thread-safe: VM.shutdown/VM.reboot call it from their operation's thread
        self.shutdown = BoundedShutdown(self.channel, clock=clock, libvirt=libvirt,
                                        timeout=config.shutdown_timeout)
        self.state = UNKNOWN
        self._events = 0  # lifecycle events seen: a call's outcome older than one is stale
        self._clock = clock
        self._board = board
        self._tell = tell
        self._on_change = on_change
        self._running = running
        self._calls = InFlight(vm_id, lambda done: tell(AgentDone(done)), clock=clock,
                               libvirt=libvirt)
        self._info: dict[str, Any] = {}
        self._apps: tuple[str, ...] | None = None
        self._apps_due = 0.0  # monotonic
        self._timeout_set = False
        self._timer: TimerHandle | None = None
        self._frozen = ""  # "frozen" by VM.freeze, "maybe" after a failed one
        self._thaw_timer: TimerHandle | None = None
        self._thaw_serial = itertools.count(1)
        self._thaw_current = 0
        self._thaw_delay = 1.0
        self._counts = {"refreshes": 0, "refreshFailures": 0, "skipped": 0, "forcedThaws": 0}
        self._last_error = ""
        self._last_refresh_ms = 0.0

    # --- lifecycle (actor thread) --------------------------------------------------------

    def begin(self) -> None:
        """Start the refresh timer and ask the agent once now."""
        if self.config.info_interval > 0:
            tell = self._tell
            self._timer = self._clock.call_every(self.config.info_interval,
                                                 lambda: tell(AgentTick()))
        self._tell(AgentTick())

    def close(self) -> None:
        for timer in (self._timer, self._thaw_timer):
            if timer is not None:
                timer.cancel()
        self._calls.close()
        self.shutdown.close()

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "filesystems": self._frozen or "thawed", **self._counts,
                "lastRefreshMs": self._last_refresh_ms, "lastError": self._last_error,
                **self._calls.describe()}

    @property
    def usable(self) -> bool:
        """Worth trying for a shutdown (not known to be away or hung)."""
        return self.state in (UNKNOWN, RESPONSIVE)

    @property
    def responsive(self) -> bool:
        return self.state == RESPONSIVE

    def on_down(self) -> None:
        """The VM went Down: nothing to ask until it runs again."""
        self._frozen = ""
        self._cancel_thaw()
        self._info, self._apps = {}, None
        self._set_state(UNKNOWN)

    # --- messages (actor thread) ---------------------------------------------------------

    def on_lifecycle(self, state: int, reason: int) -> None:
        """libvirt's agent lifecycle event: qemu-ga opened (1) or closed (2) its port."""
        log.info("VM %s: the guest agent %s (reason %d)", self.vm_id,
                 "connected" if state == CONNECTED else "disconnected", reason)
        self._events += 1
        if state == CONNECTED:
            self._refresh()
        else:
            self._set_state(DISCONNECTED)

    def receive(self, message: AgentMessage) -> None:
        if isinstance(message, AgentDone):
            self._calls.finish(message.done, _nothing)
        elif isinstance(message, AgentTick):
            self._refresh()
        elif isinstance(message, ThawDue) and message.serial == self._thaw_current:
            self._forced_thaw()

    # --- verbs (actor thread): each returns the operation's future -------------------------

    def run(self, command: GuestCommand) -> Future[Any]:
        """A desktop verb's command, in the guest."""
        self._check_reachable()
        timeout = self.config.command_timeout + 2 * self.config.timeout
        channel, limit = self.channel, self.config.command_timeout
        return self._verb(command.verb, VERB, timeout, _true,
                          lambda cancelled: agentwork.run(channel, command, timeout=limit,
                                                          cancelled=cancelled))

    def freeze(self, thaw_after: float) -> Future[Any]:
        self._check_reachable()
        channel = self.channel

        def frozen(count: int) -> bool:
            log.info("VM %s: %d filesystem(s) frozen; thawed in %g s unless VM.thaw comes "
                     "first", self.vm_id, count, thaw_after)
            self._frozen = "frozen"
            self._arm_thaw(thaw_after)
            return True

        def failed(error: BaseException) -> None:
            self._on_error(error)
            self._frozen = self._frozen or "maybe"  # a late reply may still freeze it
            self._arm_thaw(min(thaw_after, self.config.command_timeout))

        return self._verb("VM.freeze", VERB, self.config.command_timeout, frozen,
                          lambda _c: channel.freeze(), on_error=failed)

    def thaw(self) -> Future[Any]:
        self._check_reachable()
        return self._verb("VM.thaw", THAW, 2 * self.config.timeout + 1.0, self._thawed,
                          self._thaw_work())

    # --- helpers -----------------------------------------------------------------------------

    def _verb(self, name: str, kind: str, timeout: float, on_ok: Callable[[Any], Any],
              work: Callable[[Any], Any], *,
              on_error: Callable[[BaseException], None] | None = None) -> Future[Any]:
        self._calls.check_idle(kind)
        events = self._events
        failed = on_error or self._on_error

        def ok(result: Any) -> Any:
            self._set_state(RESPONSIVE, events)
            return on_ok(result)

        def error(e: BaseException) -> None:
            if events == self._events:
                failed(e)
            elif on_error is not None:
                on_error(Exception(f"(stale) {e}"))  # its own cleanup, not the state

        return self._calls.submit(name, kind, timeout=timeout, work=work, on_ok=ok,
                                  on_error=error)

    def _check_reachable(self) -> None:
        if not self._running():
            raise GuestAgentUnavailable(vmID=self.vm_id, state="unreachable",
                                        reason="the VM is not running")
        if self.state in (DISCONNECTED, ABSENT):
            reason = "no agent listens on its channel" if self.state == DISCONNECTED else \
                "the VM has no guest agent channel"
            raise GuestAgentUnavailable(vmID=self.vm_id, state=self.state, reason=reason)

    def _refresh(self) -> None:
        if not self._running() or self._frozen == "frozen" or self._calls.running(INFO):
            self._counts["skipped"] += 1
            return
        now = time.monotonic()
        apps = None
        if self.config.apps_command and self.config.apps_interval > 0 and now >= self._apps_due:
            apps = GuestCommand("appsList", self.config.apps_command)
        commands = len(guestinfo.INFO_COMMANDS) + 1
        timeout = commands * 2 * self.config.timeout + 1.0
        timeout += self.config.command_timeout if apps is not None else 0.0
        channel, limit, match = self.channel, self.config.command_timeout, \
            self.config.apps_match
        set_timeout, self._timeout_set = not self._timeout_set, True  # once per VM
        started, events = time.monotonic(), self._events

        def work(_cancelled: Any) -> Refresh | GuestAgentUnavailable:
            return agentwork.refresh(channel, apps=apps, command_timeout=limit,
                                     set_timeout=set_timeout, apps_match=match)

        def done(found: Refresh | GuestAgentUnavailable) -> None:
            self._last_refresh_ms = round((time.monotonic() - started) * 1000, 1)
            if isinstance(found, GuestAgentUnavailable):
                self._counts["refreshFailures"] += 1
                if events == self._events:
                    self._on_error(found)
                return
            self._on_refresh(found, apps is not None, now, events)

        def failed(error: BaseException) -> None:
            self._counts["refreshFailures"] += 1
            if events == self._events:
                self._on_error(error)

        try:
            self._calls.submit("guest info", INFO, timeout=timeout, work=work, on_ok=done,
                               on_error=failed)
        except GuestCallBusy:
            self._counts["skipped"] += 1  # the last refresh is stuck: the state says so

    def _on_refresh(self, found: Refresh, asked_apps: bool, asked_at: float,
                    events: int) -> None:
        self._counts["refreshes"] += 1
        if asked_apps and found.apps is not None:
            self._apps = found.apps if not any(e.startswith("appsList:") for e in
                                               found.errors) else None
            self._apps_due = asked_at + self.config.apps_interval
        for error in found.errors:
            log.warning("VM %s: a guest agent reply was refused: %s", self.vm_id, error)
        self._last_error = "; ".join(found.errors)
        self._info = found.info
        self._write()
        self._set_state(RESPONSIVE, events)

    def _on_error(self, error: BaseException) -> None:
        """What a failed call says about the agent."""
        self._last_error = str(error)
        if isinstance(error, GuestAgentUnavailable):
            state = error.fields.get("state")
            if state in STATES:
                self._set_state(state)
        elif isinstance(error, GuestCallTimeout):
            self._set_state(UNRESPONSIVE)

    def _write(self) -> None:
        values = dict(self._info)
        if self._apps is not None:
            values["appsList"] = list(self._apps)
        self._board.set_part(self.vm_id, PART, values)

    def _set_state(self, state: str, events: int | None = None) -> None:
        """``events``: the lifecycle events seen when the call that learnt it started."""
        if state == self.state or (events is not None and events != self._events):
            return
        log.info("VM %s: guest agent %s -> %s", self.vm_id, self.state, state)
        self.state = state
        self._on_change()

    # --- thawing ------------------------------------------------------------------------------

    def _thaw_work(self) -> Callable[[Any], int]:
        channel = self.channel
        return lambda _c: channel.thaw()

    def _thawed(self, count: int) -> bool:
        if self._frozen:
            log.info("VM %s: %d filesystem(s) thawed", self.vm_id, count)
        self._frozen = ""
        self._thaw_delay = 1.0
        self._cancel_thaw()
        return True

    def _arm_thaw(self, delay: float) -> None:
        self._cancel_thaw()
        serial = next(self._thaw_serial)
        self._thaw_current = serial
        tell = self._tell
        self._thaw_timer = self._clock.call_later(delay, lambda: tell(ThawDue(serial)))

    def _cancel_thaw(self) -> None:
        self._thaw_current = 0
        if self._thaw_timer is not None:
            self._thaw_timer.cancel()
            self._thaw_timer = None

    def _forced_thaw(self) -> None:
        self._thaw_timer = None
        if not self._frozen:
            return
        self._counts["forcedThaws"] += 1
        log.warning("VM %s: no VM.thaw in time: thawing the guest's filesystems", self.vm_id)
        retry = self._thaw_delay
        self._thaw_delay = min(THAW_RETRY_MAX, self._thaw_delay * 2)

        def failed(error: BaseException) -> None:
            self._on_error(error)
            log.error("VM %s: the forced thaw failed (%s); again in %g s", self.vm_id, error,
                      retry)
            if self._frozen and self._running():
                self._arm_thaw(retry)

        try:
            self._calls.submit("forced thaw", THAW, timeout=2 * self.config.timeout + 1.0,
                               work=self._thaw_work(), on_ok=self._thawed, on_error=failed)
        except VMError as e:  # the previous thaw is stuck (GuestCallBusy)
            failed(e)


def _nothing(_op: Any) -> None:
    pass


def _true(_result: Any) -> bool:
    return True

