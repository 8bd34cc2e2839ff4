"""The blocking work of the guest agent component: a guest info refresh, a guest command,
the agent's shutdown. Each runs on a guest-call thread of the VM (never on its actor), with
a deadline; what it returns goes back to the actor as a message.

A refresh asks ``guest-info`` first (the agent's version and enabled commands: a command the
agent lacks or disabled is skipped, not an error), then each info command of
:data:`~actors.vm.guestinfo.INFO_COMMANDS`, then, when due, the package query. A reply that
:mod:`~actors.vm.guestinfo` refuses costs only its own fields (the refresh records why); an
agent that stops answering ends the refresh (:class:`~messaging.errors.GuestAgentUnavailable`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from actors.clock import Clock
from actors.host.libvirthandle import LibvirtHandle
from actors.vm import guestinfo
from actors.vm.desktop import GuestCommand
from actors.vm.guestcall import GuestCaller
from actors.vm.qga import AgentChannel, ExecResult
from messaging.errors import (
    GuestAgentError,
    GuestAgentUnavailable,
    GuestCommandFailed,
    VMError,
)

log = logging.getLogger(__name__)

OUTPUT_SHOWN = 1000  # characters of a failed command's output in its error
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Refresh:
    """What a refresh learnt: the guest info (without apps), the package list when it was
    queried (None: not this time; ``()`` with an error: refused), and what was refused."""

    version: str
    info: dict[str, Any]
    apps: tuple[str, ...] | None
    errors: tuple[str, ...]


def refresh(channel: AgentChannel, *, apps: GuestCommand | None, command_timeout: float,
            set_timeout: bool, apps_match: tuple[str, ...] = ()) -> Refresh | GuestAgentUnavailable:
    """What the agent says now; an agent that is away or does not answer is an answer too
    (returned, not raised: asking every interval is normal, not a failure to log)."""
    try:
        return _refresh(channel, apps=apps, command_timeout=command_timeout,
                        set_timeout=set_timeout, apps_match=apps_match)
    except GuestAgentUnavailable as e:
        return e


def _refresh(channel: AgentChannel, *, apps: GuestCommand | None, command_timeout: float,
             set_timeout: bool, apps_match: tuple[str, ...]) -> Refresh:
    if set_timeout:
        try:
            channel.set_response_timeout()
        except VMError as e:  # libvirt's own default (5 s) stays: the call still ends
            log.info("VM %s: cannot set the agent response timeout: %s", channel.vm_id, e)
    try:
        version, enabled = guestinfo.agent_info(channel.command("guest-info"))
    except guestinfo.BadReply as e:
        raise GuestAgentError(command="guest-info", vmID=channel.vm_id, reason=str(e)) from None
    info: dict[str, Any] = {"guestAgentVersion": version}
    errors: list[str] = []
    for name, parse in guestinfo.INFO_COMMANDS:
        if name not in enabled:
            continue
        try:
            info.update(parse(channel.command(name)))
        except (GuestAgentError, guestinfo.BadReply) as e:
            errors.append(f"{name}: {e}")
    found: tuple[str, ...] | None = None
    if apps is not None and {"guest-exec", "guest-exec-status"} <= enabled:
        found = ()
        try:
            result = channel.run(apps.argv, verb="appsList", shown=apps.shown,
                                 deadline=time.monotonic() + command_timeout)
            check(result, apps, channel.vm_id)
            found = tuple(guestinfo.apps(result.out, apps_match)["appsList"])
        except (GuestAgentError, GuestCommandFailed, guestinfo.BadReply) as e:
            errors.append(f"appsList: {e}")
    return Refresh(version, info, found, tuple(errors))


def run(channel: AgentChannel, command: GuestCommand, *, timeout: float,
        cancelled: threading.Event | None = None) -> bool:
    """Run a desktop verb's command in the guest; True, or ``GuestCommandFailed`` with its
    exit status and output."""
    result = channel.run(command.argv, verb=command.verb, shown=command.shown,
                         stdin=command.stdin, deadline=time.monotonic() + timeout,
                         cancelled=cancelled)
    check(result, command, channel.vm_id)
    return True


def check(result: ExecResult, command: GuestCommand, vm_id: str) -> None:
    if result.ok:
        return
    if result.truncated:
        outcome = "wrote more output than the agent keeps"
    elif result.status is None:
        outcome = f"was ended by signal {result.signal}"
    else:
        outcome = f"exited with status {result.status}"
    raise GuestCommandFailed(verb=command.verb, command=command.shown, vmID=vm_id,
                             outcome=outcome, output=output(result))


def output(result: ExecResult) -> str:
    """The end of what a command wrote (stderr, else stdout), one printable text."""
    raw = result.err.strip() or result.out.strip()
    text = _UNPRINTABLE.sub("?", raw.decode("utf-8", errors="replace")).replace("\n", " | ")
    if not text:
        return "no output"
    return text if len(text) <= OUTPUT_SHOWN else "..." + text[-OUTPUT_SHOWN:]


class BoundedShutdown:
    """The agent's shutdown or reboot, waited for at most ``timeout``: called from a VM
    operation's thread (thread-safe), it runs the call on a thread of its own (a lease on
    the connection held), so an agent that accepts and then hangs cannot hold the operation
    past its deadline (libvirt itself waits up to 60 s for the guest)."""

    def __init__(self, channel: AgentChannel, *, clock: Clock, libvirt: LibvirtHandle,
                 timeout: float) -> None:
        self.timeout = timeout
        self._channel = channel
        self._caller = GuestCaller(channel.vm_id, clock=clock, libvirt=libvirt)

    def __call__(self, reboot: bool) -> None:
        channel = self._channel
        self._caller.call("agent-shutdown", lambda: channel.shutdown(reboot=reboot),
                          timeout=self.timeout,
                          name="guest-shutdown" + (" (reboot)" if reboot else ""))

    def close(self) -> None:
        self._caller.close()
