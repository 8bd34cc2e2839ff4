"""What the section modules share: :class:`ConfigError`, and the defaults that depend on
whether the agent runs as root."""

from __future__ import annotations

import os
from pathlib import Path


def _root() -> bool:
    return os.geteuid() == 0


def default_state_dir() -> Path:
    if _root():
        return Path("/var/lib/vdsm")
    return Path.home() / ".local" / "state" / "vdsm"


def default_libvirt_uri() -> str:
    return "qemu:///system" if _root() else "qemu:///session"


def default_hooks_dir() -> Path:
    return Path("/etc/vdsm/hooks") if _root() else default_state_dir() / "hooks"


def default_vm_log_dir() -> Path:
    return Path("/var/log/vdsm/vms") if _root() else Path.home() / ".cache" / "vdsm" / "vms"

class ConfigError(Exception):
    pass
