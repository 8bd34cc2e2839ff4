"""VM verbs of the guest's side: its agent (desktop, freeze and thaw), its memory balloon,
a reboot, and the display through VM.updateDevice.

The desktop verbs run commands configured in ``[guest_agent]`` in the guest (argument
lists, no shell); what a client sends fills placeholders of those lists, and a value that
starts with ``-`` is refused. desktopLogin's password only reaches the command's standard
input.
"""

from messaging.schema.types import Bool, Enum, Field, Int, Str, Struct, Text
from messaging.schema.verbs import Verb
from messaging.schema.vm import CALL_DEADLINE, SHUTDOWN_DEADLINE, VM_ID

COMMAND_DEADLINE = "[guest_agent] command_timeout + 2 x [guest_agent] timeout"
NAME = Text(min_len=1, max_len=256)

#: a NIC's limits in one direction, as libvirt's <bandwidth> takes them
RATE = Struct(
    (
        Field("average", Int(min=0, max=10**9), doc="KiB/s (0: no limit in this direction)"),
        Field("peak", Int(min=0, max=10**9), required=False, doc="KiB/s"),
        Field("burst", Int(min=0, max=4 * 1024 * 1024 - 1), required=False,
              doc="KiB sent at peak rate at most"),
    ),
    name="rate",
)

DEVICE = Struct(
    (
        Field("deviceType", Enum(("graphics", "interface"))),
        Field("graphicsType", Enum(("vnc",)), required=False, default="vnc"),
        Field("password", Str(max_len=8), required=False, doc="graphics: required"),
        Field("ttl", Int(min=0, max=10**7), required=False,
              doc="graphics, required: seconds (0: expired at once)"),
        Field("macAddr", Str(pattern=r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}"), required=False,
              doc="interface: which NIC (may be left out when the VM has one)"),
        Field("specParams", Struct((Field("inbound", RATE, required=False),
                                    Field("outbound", RATE, required=False)),
                                   name="specParams"), required=False,
              doc="interface, required: its inbound and outbound limits (a direction left "
                  "out is left as it is)"),
    ),
    name="device",
)

VERBS = (
    Verb(
        "VM.reboot",
        "Reboot the guest: through its guest agent when one answers, else (or when the agent "
        "fails) with the ACPI power button; a guest that did not reboot within delay seconds "
        "is reset if force.",
        (
            VM_ID,
            Field("delay", Int(min=0, max=3600), required=False, default=30),
            Field("message", Str(max_len=1024), required=False, default=""),
            Field("force", Bool(), required=False, default=False),
        ),
        operation=SHUTDOWN_DEADLINE,
    ),
    Verb(
        "VM.setBalloonTarget",
        "Inflate or deflate the memory balloon: the guest then holds target KiB (at most the "
        "VM's memSize); balloonInfo.balloon_target shows it.",
        (VM_ID, Field("target", Int(min=1024), doc="KiB")),
        operation=CALL_DEADLINE,
    ),
    Verb(
        "VM.updateDevice",
        "Change a device of the running VM: the display's ticket (graphics, as VM.setTicket) "
        "or a NIC's bandwidth limits (interface, through libvirt: tc on its tap device).",
        (VM_ID, Field("params", DEVICE)),
        operation=CALL_DEADLINE,
    ),
    Verb(
        "VM.desktopLock",
        "Lock the guest's desktop sessions ([guest_agent] desktop_lock, run by the agent).",
        (VM_ID,),
        aliases=("desktopLock",),
        operation=COMMAND_DEADLINE,
    ),
    Verb(
        "VM.desktopLogoff",
        "End the guest's desktop sessions ([guest_agent] desktop_logoff), or those of "
        "username (desktop_logoff_user), run by the agent.",
        (
            VM_ID,
            Field("username", Text(max_len=256), required=False, default=""),
            Field("force", Bool(), required=False, default=False,
                  doc="accepted for vdsm's clients: the configured command decides"),
        ),
        aliases=("desktopLogoff",),
        operation=COMMAND_DEADLINE,
    ),
    Verb(
        "VM.desktopLogin",
        "Log a user in to the guest's desktop ([guest_agent] desktop_login, run by the "
        "agent; the password goes to the command's standard input).",
        (
            VM_ID,
            Field("domain", Text(max_len=256)),
            Field("username", NAME),
            Field("password", Text(max_len=1024), doc="never logged"),
        ),
        aliases=("desktopLogin",),
        operation=COMMAND_DEADLINE,
    ),
    Verb(
        "VM.freeze",
        "Freeze the guest's filesystems (guest-fsfreeze-freeze); the agent's thaw is forced "
        "after thawAfter seconds unless VM.thaw comes first.",
        (VM_ID, Field("thawAfter", Int(min=1, max=3600), required=False,
                      doc="seconds; default [guest_agent] thaw_after")),
        operation="[guest_agent] command_timeout",
    ),
    Verb(
        "VM.thaw",
        "Thaw the guest's filesystems (guest-fsfreeze-thaw).",
        (VM_ID,),
        operation="2 x [guest_agent] timeout + 1 s",
    ),
)
