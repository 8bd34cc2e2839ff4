"""The QEMU guest agent (qemu-ga) of one VM, through libvirt: one blocking call per command.

Every VM has a virtio-serial channel ``org.qemu.guest_agent.0``
(:func:`~actors.vm.domxml.build_domain_xml`); libvirt holds its host end and speaks the
agent's JSON protocol on it. :class:`AgentChannel` sends a command with
``libvirt_qemu.qemuAgentCommand`` (what vdsm does for the commands libvirt has no API for)
and reads the reply itself, so every reply is bounded the same way: longer than
``max_reply`` bytes, not JSON, or without a ``return`` is refused (:class:`GuestAgentError`).
libvirt puts a ``guest-sync`` before each command; its timeout is the domain's agent
response timeout, which :meth:`AgentChannel.set_response_timeout` lowers to ours (libvirt's
default is 5 s), so a command takes at most about twice ``timeout`` in libvirt (measured:
a stopped qemu-ga answered "Guest agent not available for now" after 2 s with a 2 s command
timeout, after 5 s more when the sync's own default applied).

Shutdown and reboot use libvirt's own agent mode (``shutdownFlags``/``reboot`` with
``GUEST_AGENT``): qemu-ga sends no reply when ``guest-shutdown`` works, and libvirt knows to
wait for the guest's SHUTDOWN/RESET instead (up to 60 s of its own: the caller bounds it).

Errors, as the verbs report them:

- no agent on the channel (libvirt: "QEMU guest agent is not connected"):
  :class:`GuestAgentUnavailable` with state ``disconnected``;
- a domain without the channel (made by an older agent): state ``absent``;
- no answer in time, or libvirt's agent job held by another call: state ``unresponsive``;
- the agent's own error (unknown or disabled command, "the agent is in frozen state", a
  failed command): :class:`GuestAgentError` with the agent's description.

Blocking: runs on guest-call threads only, each inside a lease of the libvirt connection.
Nothing here logs what a command carries (desktopLogin's password travels in
``guest-exec``'s ``input-data``); libvirtd's own debug log does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_qemu

from actors.host.libvirthandle import LibvirtHandle
from messaging.errors import (
    GuestAgentError,
    GuestAgentUnavailable,
    GuestCommandFailed,
    LibvirtUnavailable,
    VMError,
)

log = logging.getLogger(__name__)

CHANNEL = "org.qemu.guest_agent.0"
EXEC_POLL_FIRST = 0.05
EXEC_POLL_MAX = 0.5

#: The agent's states as the stats and events show them (``guestAgent``).
UNKNOWN, ABSENT, DISCONNECTED, UNRESPONSIVE, RESPONSIVE = (
    "unknown", "absent", "disconnected", "unresponsive", "responsive")


@dataclass(frozen=True)
class ExecResult:
    """A finished ``guest-exec``: exit status (None if a signal ended it) and output."""

    status: int | None
    signal: int | None
    out: bytes
    err: bytes
    truncated: bool

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.truncated


class AgentChannel:
    """The agent of VM ``vm_id``. Stateless and thread-safe; every method blocks."""

    def __init__(self, vm_id: str, *, libvirt: LibvirtHandle, timeout: float,
                 max_reply: int) -> None:
        self.vm_id = vm_id
        self.timeout = timeout
        self.max_reply = max_reply
        self._libvirt = libvirt

    # --- commands --------------------------------------------------------------------------

    def command(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Run agent command ``name``; its ``return`` value (not yet checked)."""
        request: dict[str, Any] = {"execute": name}
        if args is not None:
            request["arguments"] = args
        seconds = max(1, math.ceil(self.timeout))
        log.debug("VM %s: agent command %s", self.vm_id, name)
        with self._errors(name):
            reply = libvirt_qemu.qemuAgentCommand(self._dom(), json.dumps(request), seconds, 0)
        return self.parse(name, reply)

    def parse(self, name: str, reply: Any) -> Any:
        """The ``return`` of a reply text, bounded; :class:`GuestAgentError` otherwise."""
        if not isinstance(reply, str):
            raise self._bad(name, f"libvirt returned {type(reply).__name__}, not text")
        if len(reply) > self.max_reply:
            raise self._bad(name, f"its reply of {len(reply)} bytes is longer than the "
                                  f"{self.max_reply} allowed ([guest_agent] max_reply)")
        try:
            decoded = json.loads(reply)
        except (ValueError, RecursionError):
            raise self._bad(name, "its reply is not JSON") from None
        if not isinstance(decoded, dict) or "return" not in decoded:
            raise self._bad(name, "its reply has no return value")
        return decoded["return"]

    def ping(self) -> None:
        self.command("guest-ping")

    def set_response_timeout(self) -> None:
        """Bound libvirt's guest-sync (and its own agent calls) by our timeout."""
        with self._errors("agentSetResponseTimeout"):
            self._dom().agentSetResponseTimeout(max(1, math.ceil(self.timeout)), 0)

    def shutdown(self, *, reboot: bool) -> None:
        """Ask the agent to power the guest off (or reboot it); returns when the guest did
        (libvirt waits for its SHUTDOWN/RESET event or for the agent to go away)."""
        dom = self._dom()
        if reboot:
            with self._errors("guest-shutdown (reboot)"):
                dom.reboot(libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT)
        else:
            with self._errors("guest-shutdown"):
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)

    def run(
        self,
        argv: Sequence[str],
        *,
        verb: str,
        shown: str,
        stdin: bytes | None = None,
        capture: bool = True,
        deadline: float,
        cancelled: threading.Event | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the guest (``guest-exec``, no shell) and wait for it to exit, at
        the latest by ``deadline`` (monotonic). ``stdin`` is written to its standard input;
        ``shown`` is how errors name the command (never with what stdin holds)."""
        args: dict[str, Any] = {"path": argv[0], "arg": list(argv[1:]),
                                "capture-output": capture}
        if stdin is not None:
            args["input-data"] = base64.b64encode(stdin).decode("ascii")
        started = self.command("guest-exec", args)
        pid = started.get("pid") if isinstance(started, dict) else None
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise self._bad("guest-exec", "its reply has no pid")
        delay = EXEC_POLL_FIRST
        while True:
            status = self.command("guest-exec-status", {"pid": pid})
            if not isinstance(status, dict):
                raise self._bad("guest-exec-status", "its reply is not an object")
            if status.get("exited") is True:
                return self._result(status)
            if cancelled is not None and cancelled.is_set():
                raise VMError(reason=f"{verb}: abandoned while `{shown}` ran in the guest")
            if time.monotonic() + delay > deadline:
                raise GuestCommandFailed(verb=verb, command=shown, vmID=self.vm_id,
                                         outcome="did not exit in time",
                                         output="it may still run in the guest")
            time.sleep(delay)
            delay = min(EXEC_POLL_MAX, delay * 2)

    def freeze(self) -> int:
        """Freeze the guest's filesystems; how many."""
        return self._count("guest-fsfreeze-freeze", self.command("guest-fsfreeze-freeze"))

    def thaw(self) -> int:
        """Thaw the guest's filesystems; how many were frozen."""
        return self._count("guest-fsfreeze-thaw", self.command("guest-fsfreeze-thaw"))

    # --- helpers ---------------------------------------------------------------------------

    def _dom(self) -> libvirt.virDomain:
        conn = self._libvirt.get()
        try:
            return conn.lookupByUUIDString(self.vm_id)
        except libvirt.libvirtError as e:
            error = self._libvirt.translate(e)
            if isinstance(error, LibvirtUnavailable):
                raise error from e
            raise GuestAgentUnavailable(vmID=self.vm_id, state="gone",
                                        reason="the VM has no domain") from e

    def _result(self, status: dict[str, Any]) -> ExecResult:
        code, signal = status.get("exitcode"), status.get("signal")
        return ExecResult(
            status=code if isinstance(code, int) and not isinstance(code, bool) else None,
            signal=signal if isinstance(signal, int) and not isinstance(signal, bool) else None,
            out=self._decode(status.get("out-data")),
            err=self._decode(status.get("err-data")),
            truncated=bool(status.get("out-truncated") or status.get("err-truncated")),
        )

    def _decode(self, data: Any) -> bytes:
        if data is None:
            return b""
        if not isinstance(data, str):
            raise self._bad("guest-exec-status", "its output is not base64 text")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise self._bad("guest-exec-status", "its output is not base64") from None

    def _count(self, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(name, "its reply is not a count")
        return value

    def _bad(self, name: str, reason: str) -> GuestAgentError:
        return GuestAgentError(command=name, vmID=self.vm_id, reason=reason)

    @contextlib.contextmanager
    def _errors(self, name: str) -> Iterator[None]:
        try:
            yield
        except libvirt.libvirtError as e:
            raise self.translate(name, e) from e

    def translate(self, name: str, error: libvirt.libvirtError) -> Exception:
        """A libvirt error of an agent call as the verbs report it."""
        code, text = error.get_error_code(), error.get_error_message() or str(error)
        unavailable = self._libvirt.translate(error)
        if isinstance(unavailable, LibvirtUnavailable):
            return unavailable
        if code == libvirt.VIR_ERR_AGENT_UNRESPONSIVE:
            state = DISCONNECTED if "not connected" in text else UNRESPONSIVE
            return GuestAgentUnavailable(vmID=self.vm_id, state=state, reason=text)
        if code == libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED and "not configured" in text:
            return GuestAgentUnavailable(vmID=self.vm_id, state=ABSENT, reason=text)
        if code in (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_AGENT_UNSYNCED):
            return GuestAgentUnavailable(vmID=self.vm_id, state=UNRESPONSIVE, reason=text)
        if code in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_DOMAIN):
            return GuestAgentUnavailable(vmID=self.vm_id, state="unreachable", reason=text)
        return GuestAgentError(command=name, vmID=self.vm_id, reason=text)

