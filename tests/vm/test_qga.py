"""The agent channel's own rules: replies bounded and checked, libvirt's errors turned into
the agent's states, a guest command's failure reported with its status and output. (The
channel against a real qemu-ga: tests/vm/test_api_guestagent.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator

import libvirt
import pytest

from actors.vm import agentwork
from actors.vm.desktop import GuestCommand
from actors.vm.qga import AgentChannel, ExecResult
from messaging.errors import GuestAgentError, GuestAgentUnavailable, GuestCommandFailed
from tests.libvirthelp import handle_over

VM = "8e1f6a7c-3b52-4d0e-9c39-1d8f0f5e6a21"


@pytest.fixture
def channel() -> Iterator[AgentChannel]:
    conn = libvirt.open("test:///default")
    try:
        yield AgentChannel(VM, libvirt=handle_over(conn), timeout=2.0, max_reply=4096)
    finally:
        conn.close()


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    error = libvirt.libvirtError(message)
    error.err = (code, libvirt.VIR_FROM_QEMU, message, 2, None, None, None, 0, 0)
    return error


@pytest.mark.timeout(5)
def test_replies_are_bounded_and_checked(channel: AgentChannel) -> None:
    assert channel.parse("guest-ping", '{"return": {}}') == {}
    for reply, reason in (
        (json.dumps({"return": "x" * 5000}), "longer than the 4096 allowed"),
        ("{not json", "not JSON"),
        ("[" * 2000 + "]" * 2000, "not JSON"),  # nesting deeper than the parser goes
        ('{"error": {"class": "GenericError"}}', "no return value"),
        ('["return"]', "no return value"),
    ):
        with pytest.raises(GuestAgentError, match=reason):
            channel.parse("guest-info", reply)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(("code", "message", "state"), [
    (libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
     "Guest agent is not responding: QEMU guest agent is not connected", "disconnected"),
    (libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
     "Guest agent is not responding: Guest agent not available for now", "unresponsive"),
    (libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
     "Guest agent is not responding: Guest agent disappeared while executing command",
     "unresponsive"),
    (libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
     "argument unsupported: QEMU guest agent is not configured", "absent"),
    (libvirt.VIR_ERR_OPERATION_TIMEOUT,
     "Timed out during operation: cannot acquire state change lock", "unresponsive"),
])
def test_libvirt_errors_say_the_agent_state(channel: AgentChannel, code: int, message: str,
                                            state: str) -> None:
    error = channel.translate("guest-ping", libvirt_error(code, message))
    assert isinstance(error, GuestAgentUnavailable)
    assert error.fields["state"] == state
    assert error.code == 5 and error.retryable


@pytest.mark.timeout(5)
def test_the_agents_own_error_is_a_command_failure(channel: AgentChannel) -> None:
    error = channel.translate("guest-exec", libvirt_error(
        libvirt.VIR_ERR_INTERNAL_ERROR, "unable to execute QEMU agent command 'guest-exec': "
        "Command guest-exec has been disabled: the agent is in frozen state"))
    assert isinstance(error, GuestAgentError)
    assert "frozen state" in error.message and not error.retryable


@pytest.mark.timeout(5)
def test_a_vm_without_a_domain_is_unreachable(channel: AgentChannel) -> None:
    handle = handle_over(libvirt.open("test:///default"))
    with handle.lease(), pytest.raises(GuestAgentUnavailable, match="gone"):
        AgentChannel(VM, libvirt=handle, timeout=1.0, max_reply=4096).ping()


@pytest.mark.timeout(5)
def test_a_failed_command_reports_its_status_and_output() -> None:
    command = GuestCommand("VM.desktopLock", ("loginctl", "lock-sessions"))
    agentwork.check(ExecResult(0, None, b"ok", b"", False), command, VM)
    with pytest.raises(GuestCommandFailed) as failed:
        agentwork.check(ExecResult(1, None, b"", b"Failed to issue method call:\n"
                                   b"\x1b[31mAccess denied\x1b[0m\n", False), command, VM)
    message = failed.value.message
    assert message.startswith("VM.desktopLock: `loginctl lock-sessions` exited with status 1")
    assert "Failed to issue method call: | ?[31mAccess denied?[0m" in message
    with pytest.raises(GuestCommandFailed, match=r"ended by signal 9 in VM .*: no output"):
        agentwork.check(ExecResult(None, 9, b"", b"", False), command, VM)
    with pytest.raises(GuestCommandFailed, match="more output than the agent keeps"):
        agentwork.check(ExecResult(0, None, b"x", b"", True), command, VM)
    long = agentwork.output(ExecResult(1, None, b"", b"y" * 5000, False))
    assert len(long) == agentwork.OUTPUT_SHOWN + 3 and long.startswith("...")
