"""The desktop verbs' commands: configured argument lists, filled in with checked values.

qemu-ga has no desktop commands of its own, so ``VM.desktopLock``, ``VM.desktopLogoff`` and
``VM.desktopLogin`` each run a command of ``[guest_agent]`` in the guest with ``guest-exec``
(defaults: ``loginctl lock-sessions``, ``loginctl terminate-seat seat0`` or ``loginctl
terminate-user {username}``; desktopLogin has no default and answers 104 until one is
configured). A command is an argument list: the guest runs it without a shell, so a
client's value is one argument (or part of one) whatever characters it holds; a value that
starts with ``-`` is refused (it would be read as an option). ``{username}`` and ``{domain}``
are replaced once, in the configured text only (a value holding ``{domain}`` stays as it
is). desktopLogin's password is never put on a command line: the command reads it from its
standard input (the password and a newline), and nothing logs it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from actors.config import GuestAgentConfig
from messaging.errors import Forbidden, InvalidParams

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class GuestCommand:
    """A command for ``guest-exec``: what runs, and what its standard input gets."""

    verb: str
    argv: tuple[str, ...]
    stdin: bytes | None = field(default=None, repr=False)

    @property
    def shown(self) -> str:
        """The command as logs and errors show it (its stdin never)."""
        return shlex.join(self.argv)


def fill(template: tuple[str, ...], values: Mapping[str, str]) -> tuple[str, ...]:
    """``template`` with each ``{name}`` of ``values`` replaced (others left as they are)."""
    def one(arg: str) -> str:
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), arg)

    return tuple(one(arg) for arg in template)


def _value(value: str, param: str) -> str:
    if value.startswith("-"):
        raise InvalidParams(param, "must not start with '-' (it would be read as an option)")
    return value


def _configured(template: tuple[str, ...], verb: str, setting: str) -> tuple[str, ...]:
    if not template:
        raise Forbidden(what=verb, how=f"[guest_agent] {setting} is empty")
    return template


def lock(config: GuestAgentConfig) -> GuestCommand:
    return GuestCommand("VM.desktopLock",
                        _configured(config.desktop_lock, "VM.desktopLock", "desktop_lock"))


def logoff(config: GuestAgentConfig, username: str) -> GuestCommand:
    """Every session of the default seat, or the sessions of ``username``."""
    if not username:
        return GuestCommand("VM.desktopLogoff", _configured(
            config.desktop_logoff, "VM.desktopLogoff", "desktop_logoff"))
    template = _configured(config.desktop_logoff_user, "VM.desktopLogoff",
                           "desktop_logoff_user")
    return GuestCommand("VM.desktopLogoff",
                        fill(template, {"username": _value(username, "username")}))


def login(config: GuestAgentConfig, domain: str, username: str, password: str) -> GuestCommand:
    template = _configured(config.desktop_login, "VM.desktopLogin", "desktop_login")
    values = {"domain": _value(domain, "domain"), "username": _value(username, "username")}
    return GuestCommand("VM.desktopLogin", fill(template, values),
                        stdin=password.encode() + b"\n")
