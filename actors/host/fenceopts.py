"""What a client may ask of a fence agent: the known agents and the options they may get.

Fence agents (Debian's ``fence-agents``: ``/usr/sbin/fence_<name>``) read ``key=value``
lines on their standard input, and some of their options run programs or write files as
root (``ipmitool_path``, ``password_script``, ``ssh_path``, ``debug_file``, ``use_sudo``,
...). A client's ``options`` therefore pass only through this allow-list, each value checked
against its own pattern; anything else is refused naming the option. The keys that
``Host.fenceNode``'s own params set (address, port, user, password, action) cannot be given
again in ``options``.

The known agents (``[fencing] agents``, :data:`actors.config.DEFAULT_FENCE_AGENTS`) talk
to the management controller themselves (HTTP, SSH or telnet through a pseudo-terminal: the
password never reaches a command line) or through ``ipmitool`` (the
``fence_ipmilan`` family: the agent runs ``ipmitool -P <password>``, so the password goes to
ipmitool through its environment instead, see :mod:`actors.host.fencing`). Agents that hand
the password or community to ``snmpget`` on its command line (``fence_apc_snmp``,
``fence_eaton_snmp``, ...) are not known by default; ``[fencing] agents`` can add them, at
that cost.
"""

from __future__ import annotations

import re

from messaging.errors import InvalidParams

#: the ``fence_ipmilan`` family: the same program under several names (Debian installs
#: copies), which runs ``ipmitool``
IPMITOOL_AGENTS = frozenset(("ipmilan", "ipmilanplus", "ilo3", "ilo4", "ilo5", "imm", "idrac"))

AGENT_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")

_BOOL = r"(|0|1|on|off|yes|no|true|false)"
_SECONDS = r"[0-9]{1,4}(\.[0-9]{1,3})?"
_NAME = r"[A-Za-z0-9_.:@/+ -]{1,64}"

#: option -> the pattern of its value (the whole value must match)
ALLOWED_OPTIONS: dict[str, str] = {
    "lanplus": _BOOL,
    "auth": r"md5|password|none",
    "cipher": r"[0-9]{1,2}",
    "privlvl": r"callback|user|operator|administrator",
    "method": r"onoff|cycle",
    "target": r"(0x)?[0-9A-Fa-f]{1,4}",
    "hexadecimal_kg": r"[0-9A-Fa-f]{2,80}",
    "plug": _NAME,
    "power_timeout": _SECONDS,
    "power_wait": _SECONDS,
    "shell_timeout": _SECONDS,
    "login_timeout": _SECONDS,
    "ipmitool_timeout": _SECONDS,
    "delay": _SECONDS,
    "retry_on": r"[0-9]{1,2}",
    "ssl": _BOOL,
    "ssl_secure": _BOOL,
    "ssl_insecure": _BOOL,
    "notls": _BOOL,
    "inet4_only": _BOOL,
    "inet6_only": _BOOL,
    "ribcl": r"[0-9.]{1,8}",
    "systems_uri": r"/[A-Za-z0-9_./-]{0,128}",
    "suborg": r"[A-Za-z0-9_./-]{1,128}",
}

#: keys the verb's own params set (and their fence-agents aliases)
OWN_KEYS = frozenset((
    "ip", "ipaddr", "ipport", "username", "login", "password", "passwd", "action",
    "option", "agent", "nodename", "port", "secure",
))

MAX_OPTIONS = 32


def parse_options(text: str) -> dict[str, str]:
    """``options`` (``key=value`` items, one a line or comma-separated; a bare ``key`` is
    ``key=1``) as a map, every key allowed and every value matching its pattern."""
    found: dict[str, str] = {}
    items = [item.strip() for item in re.split(r"[\n,]", text)]
    items = [item for item in items if item]
    if len(items) > MAX_OPTIONS:
        raise InvalidParams("options", f"{len(items)} options exceed the maximum {MAX_OPTIONS}")
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip().replace("-", "_"), value.strip()
        if not sep:
            value = "1"
        where = f"options.{key[:32]}"
        if key in OWN_KEYS:
            raise InvalidParams(where, "set by the verb's own params (addr, port, username, "
                                "password, action, secure), not by options")
        pattern = ALLOWED_OPTIONS.get(key)
        if pattern is None:
            raise InvalidParams(where, "not an option this agent passes to fence agents "
                                f"(allowed: {', '.join(sorted(ALLOWED_OPTIONS))})")
        if re.fullmatch(pattern, value) is None:
            raise InvalidParams(where, f"the value does not match {pattern}")
        if key in found:
            raise InvalidParams(where, "given twice")
        found[key] = value
    return found
