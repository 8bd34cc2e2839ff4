"""VM errors (codes 1-99): the VM, its hooks and guest agent, migrations and the peers
they talk to."""

from __future__ import annotations

from messaging.errors.base import VdsmError


class NoSuchVM(VdsmError):
    code = 1
    template = "no such VM: {vmID}"


class VMExists(VdsmError):
    code = 4
    template = "a VM with id {vmID} already exists"


class VMError(VdsmError):
    """A VM verb failed for a reason of the VM or the hypervisor (code 5)."""

    code = 5
    template = "{reason}"


class GuestCallTimeout(VMError):
    """A libvirt call into a VM did not return in time: qemu is not responding."""

    template = "{call} on VM {vmID} did not return within {timeout:g} s: qemu is not responding"
    retryable = True


class GuestCallBusy(VMError):
    """An earlier call of the same kind is still in flight (stuck): not starting another."""

    template = (
        "{call} on VM {vmID} not started: {pending} (a {kind} call) is still running after "
        "{age:.1f} s; qemu is not responding"
    )
    retryable = True


class VMBusy(VMError):
    """Another operation on the VM is in progress (and not stuck): try again once it ends."""

    template = "VM {vmID} is busy: {operation} is in progress ({age:.1f} s); try again shortly"
    retryable = True


class PeerUnreachable(VdsmError):
    """Another host's agent cannot be reached, or refuses this host (vdsm's noConPeer)."""

    code = 10
    template = "cannot reach the agent of {peer} at {endpoint}: {reason}"
    retryable = True


class PeerError(VdsmError):
    """Another host's agent answered a call with an error: its code and message are kept
    (``peer_code``, ``peer_message``) and named in this error's message."""

    code = 10
    template = "the agent of {peer} answered {method} with error {peer_code}: {peer_message}"

    @property
    def peer_code(self) -> int:
        return int(self.fields.get("peer_code", 0))

    @property
    def peer_message(self) -> str:
        return str(self.fields.get("peer_message", ""))


class MigrationError(VdsmError):
    """A migration failed; the VM stays where it was (vdsm's migrateErr)."""

    code = 12
    template = "migration of VM {vmID} failed: {reason}"


class MigrationLimit(VdsmError):
    """As many migrations as this host allows are running (vdsm's migrateLimit)."""

    code = 48
    template = "{running} {direction} migrations are running, the most this host allows: " \
               "try again shortly"
    retryable = True


class MigrationNotInProgress(VdsmError):
    """A verb that acts on a migration, and the VM has none (vdsm's migCancelErr)."""

    code = 82
    template = "VM {vmID} has no migration in progress"


class GuestAgentUnavailable(VMError):
    """The VM's guest agent cannot take the call: none answers on its channel, it did not
    answer in time, or the VM is not running. It may come (back) later."""

    template = "the guest agent of VM {vmID} is {state}: {reason}"
    retryable = True


class GuestAgentError(VMError):
    """The guest agent answered, but with an error or with a reply the agent refuses (not
    what the command returns, or larger than ``[guest_agent] max_reply``)."""

    template = "guest agent command {command} on VM {vmID} failed: {reason}"


class GuestCommandFailed(VMError):
    """A command run in the guest (``guest-exec``) failed: its exit status and output."""

    template = "{verb}: `{command}` {outcome} in VM {vmID}: {output}"


class HookError(VdsmError):
    code = 6
    template = "hook {hook} failed: {reason}"
