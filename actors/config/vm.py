"""The VMs' sections: VMs, their guest agent, thin provisioning of their volumes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from actors.config.base import ConfigError, default_hooks_dir, default_vm_log_dir

#: Where the images a client may name by path (disks, CD-ROMs, floppies, kernels, initrds)
#: live by default: libvirt's conventional directories.
DEFAULT_IMAGE_DIRS = (Path("/var/lib/libvirt/images"), Path("/var/lib/libvirt/boot"))

@dataclass(frozen=True)
class VmConfig:
    """VM settings. Timeouts bound calls into qemu (through libvirt) that may hang."""

    hooks_dir: Path = field(default_factory=default_hooks_dir)
    hook_timeout: float = 30.0  # per hook executable
    stats_interval: float = 2.0  # one bulk stats call per interval
    stats_timeout: float = 1.0  # a bulk call stuck longer is abandoned and re-issued at once
    call_timeout: float = 10.0  # pause, cont, reset, shutdown, setTicket, media changes
    start_timeout: float = 60.0  # createXML / restore (plus the hooks' own timeouts)
    destroy_timeout: float = 30.0  # libvirt gives a stuck qemu 10 s after SIGTERM
    save_timeout: float = 240.0  # VM.hibernate writing the guest's memory
    powering_up: float = 10.0  # a started VM is "Powering up" this long, then "Up"
    # Paths a client may name (see actors/vm/paths.py): images and boot files only in
    # image_dirs; memory images (VM.hibernate, restoreState) only in hibernation_dir.
    image_dirs: tuple[Path, ...] = DEFAULT_IMAGE_DIRS
    hibernation_dir: str = ""  # empty: <state_dir>/hibernation
    # Guests' serial console logs: capped and rotated by virtlogd, outside the state dir.
    serial_log_dir: Path = field(default_factory=default_vm_log_dir)
    serial_logs_kept: int = 20  # logs of VMs no longer known that are kept for post-mortems
    resync_interval: float = 5.0  # a VM without a running actor is recovered within ~2x this

    def __post_init__(self) -> None:
        if self.resync_interval <= 0:
            raise ConfigError("[vm] resync_interval must be positive")
        if self.serial_logs_kept < 0:
            raise ConfigError("[vm] serial_logs_kept must not be negative")
        for path in (*self.image_dirs, self.serial_log_dir):
            if not path.is_absolute():
                raise ConfigError(f"[vm] {path} is not an absolute path")
        if self.hibernation_dir and not Path(self.hibernation_dir).is_absolute():
            raise ConfigError(f"[vm] hibernation_dir {self.hibernation_dir} is not absolute")


#: The guest's package query (appsList): rpm where it answers, else dpkg-query.
DEFAULT_APPS_COMMAND = (
    "/bin/sh", "-c",
    "rpm -qa --qf '%{NAME}-%{VERSION}-%{RELEASE}\\n' 2>/dev/null"
    " || dpkg-query -W -f='${Package}-${Version}\\n'",
)
#: The "interesting applications" appsList shows (shell patterns on "name-version"), as
#: oVirt's guest agent reported them: kernels, guest agents, display drivers.
DEFAULT_APPS_MATCH = (
    "kernel-*", "linux-image-*", "qemu-guest-agent-*", "ovirt-guest-agent-*",
    "spice-vdagent-*", "xorg-x11-drv-qxl-*", "xserver-xorg-video-qxl-*", "cloud-init-*",
)
#: The placeholders each desktop command may use (whole or inside an argument); the password
#: of desktopLogin only ever goes to the command's standard input.
COMMAND_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "desktop_lock": frozenset(),
    "desktop_logoff": frozenset(),
    "desktop_logoff_user": frozenset({"username"}),
    "desktop_login": frozenset({"domain", "username"}),
}


@dataclass(frozen=True)
class GuestAgentConfig:
    """The QEMU guest agent (qemu-ga) of the VMs: see actors/vm/guestagent.py. Commands are
    argument lists run in the guest by ``guest-exec`` (never a shell line built from a
    client's values)."""

    timeout: float = 5.0  # one agent command, libvirt's guest-sync included
    info_interval: float = 30.0  # guest info refresh (0: never); verbs and events regardless
    apps_interval: float = 300.0  # the package query, at most this often (0: never)
    command_timeout: float = 30.0  # a guest-exec command (apps, desktop verbs), start to exit
    shutdown_timeout: float = 10.0  # agent shutdown/reboot before the ACPI fallback
    thaw_after: float = 60.0  # VM.freeze's default: the agent's thaw is forced after it
    max_reply: int = 1024 * 1024  # bytes: a longer agent reply is refused
    apps_command: tuple[str, ...] = DEFAULT_APPS_COMMAND
    apps_match: tuple[str, ...] = DEFAULT_APPS_MATCH  # empty: every package
    desktop_lock: tuple[str, ...] = ("loginctl", "lock-sessions")
    desktop_logoff: tuple[str, ...] = ("loginctl", "terminate-seat", "seat0")
    desktop_logoff_user: tuple[str, ...] = ("loginctl", "terminate-user", "{username}")
    desktop_login: tuple[str, ...] = ()  # no standard way: VM.desktopLogin answers 104

    def __post_init__(self) -> None:
        for name in ("timeout", "command_timeout", "shutdown_timeout", "thaw_after"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[guest_agent] {name} must be positive")
        for name in ("info_interval", "apps_interval"):
            if getattr(self, name) < 0:
                raise ConfigError(f"[guest_agent] {name} must not be negative")
        if self.max_reply < 4096:
            raise ConfigError("[guest_agent] max_reply must be at least 4096")
        if self.apps_command and not self.apps_command[0]:
            raise ConfigError("[guest_agent] apps_command: the program is empty")
        for name, allowed in COMMAND_PLACEHOLDERS.items():
            command: tuple[str, ...] = getattr(self, name)
            if command and not command[0]:
                raise ConfigError(f"[guest_agent] {name}: the program is empty")
            for arg in command:
                for used in _PLACEHOLDER.findall(arg):
                    if used not in allowed:
                        raise ConfigError(f"[guest_agent] {name}: {{{used}}} is not one of "
                                          f"{sorted(allowed) or 'no placeholders'}")


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

@dataclass(frozen=True)
class ThinConfig:
    """Thin provisioning of the VMs' cow volumes on block domains (actors/vm/thin.py): an
    extension adds a chunk when the guest's writes come within a watermark (half a chunk, or
    the drive's thresholdMiB) of the volume's end."""

    chunk_mib: int = 1024  # an extension adds at least this much
    chunk_max_mib: int = 8192  # the most an adaptive chunk grows to
    adaptive: bool = True  # the chunk grows with the drive's measured write rate
    headroom: float = 4.0  # s: an adaptive chunk holds this long of writes at that rate
    check_interval: float = 10.0  # s: the slow check that catches a lost threshold event
    extend_timeout: float = 60.0  # s: one wait for the SPM (then asked again: it keeps waiting)
    retry_max: float = 30.0  # s: the longest pause between attempts after a failed extension

    def __post_init__(self) -> None:
        if self.chunk_mib < 1:
            raise ConfigError("[thin] chunk_mib must be at least 1")
        if self.chunk_max_mib < self.chunk_mib:
            raise ConfigError("[thin] chunk_max_mib must be at least chunk_mib")
        for name in ("headroom", "check_interval", "extend_timeout", "retry_max"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[thin] {name} must be positive")
