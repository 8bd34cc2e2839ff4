"""What the guest agent's replies say, as the VM stats show it: checked and bounded.

A guest is not trusted: its agent may be old, broken or hostile, and whatever it says ends
up in every ``Host.getAllVmStats`` reply. Each function takes one command's ``return`` value
and gives the stats it contributes, or raises :class:`BadReply` (a ``ValueError``) when the
reply is not the shape the command returns. Lists are capped (:data:`LIMITS`), text is one
line of at most :data:`MAX_TEXT` printable characters (control characters become ``?``),
numbers are non-negative integers below 2**63, addresses are parsed as addresses:

========================== =================================== ============================
command                    stats                               as vdsm
========================== =================================== ============================
guest-info                 ``guestAgentVersion`` (+ commands)
guest-get-host-name        ``guestFQDN``
guest-get-osinfo           ``guestOs`` (kernel release),       yes
                           ``guestOsInfo``
guest-get-users            ``username`` ("alice, bob@dom"),    ``username``
                           ``guestUsers``
guest-network-get-         ``netIfaces`` ``[{name, hw, inet,   yes
interfaces                 inet6}]``, ``guestIPs`` (not
                           loopback, space separated)
guest-get-fsinfo           ``disksUsage`` ``[{path, fs, total, yes (numbers, not strings)
                           used}]`` (bytes)
guest-get-timezone         ``guestTimezone`` ``{zone, offset}`` yes
                           (offset in minutes)
package query (guest-exec) ``appsList``: the lines that match
                           ``[guest_agent] apps_match``
========================== =================================== ============================
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable
from typing import Any

MAX_TEXT = 256
LIMITS = {"users": 64, "interfaces": 64, "addresses": 32, "filesystems": 64, "apps": 1000,
          "commands": 512}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_MAX_INT = 2**63


class BadReply(ValueError):
    """A reply that is not what its command returns."""


def text(value: Any, what: str, *, max_len: int = MAX_TEXT) -> str:
    """One line of printable text of at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise BadReply(f"{what} is not text")
    if len(value) > max_len:
        raise BadReply(f"{what} is longer than {max_len} characters")
    return _CONTROL.sub("?", value)


def number(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_INT:
        raise BadReply(f"{what} is not a count")
    return value


def items(value: Any, what: str, limit: str) -> list[Any]:
    """A list of at most ``LIMITS[limit]`` entries."""
    if not isinstance(value, list):
        raise BadReply(f"{what} is not a list")
    if len(value) > LIMITS[limit]:
        raise BadReply(f"{what} has {len(value)} entries, more than {LIMITS[limit]}")
    return value


def mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadReply(f"{what} is not an object")
    return value


def _optional(entry: dict[str, Any], key: str, what: str) -> str:
    return text(entry[key], what) if entry.get(key) is not None else ""


# --- one function per command --------------------------------------------------------------


def agent_info(reply: Any) -> tuple[str, frozenset[str]]:
    """``guest-info``: the agent's version and the commands it has enabled."""
    info = mapping(reply, "guest-info")
    version = text(info.get("version"), "the agent version")
    enabled = set()
    for entry in items(info.get("supported_commands"), "the command list", "commands"):
        command = mapping(entry, "a command")
        if command.get("enabled") is True:
            enabled.add(text(command.get("name"), "a command name"))
    return version, frozenset(enabled)


def host_name(reply: Any) -> dict[str, Any]:
    return {"guestFQDN": text(mapping(reply, "the host name").get("host-name"), "host-name")}


def os_info(reply: Any) -> dict[str, Any]:
    info = mapping(reply, "the OS info")
    kernel = _optional(info, "kernel-release", "kernel-release")
    return {
        "guestOs": kernel,
        "guestOsInfo": {
            "type": "windows" if info.get("id") == "mswindows" else "linux",
            "arch": _optional(info, "machine", "machine"),
            "kernel": kernel,
            "distribution": _optional(info, "name", "name"),
            "version": _optional(info, "version-id", "version-id"),
            "codename": _optional(info, "variant", "variant"),
            "prettyName": _optional(info, "pretty-name", "pretty-name"),
        },
    }


def users(reply: Any) -> dict[str, Any]:
    found = []
    for entry in items(reply, "the user list", "users"):
        user = mapping(entry, "a user")
        name = text(user.get("user"), "a user name")
        domain = _optional(user, "domain", "a user's domain")
        login = user.get("login-time")
        if isinstance(login, bool) or not isinstance(login, int | float):
            raise BadReply("a login time is not a number")
        found.append({"name": name, "domain": domain, "loginTime": round(float(login), 3)})
    names = [f"{u['name']}@{u['domain']}" if u["domain"] else str(u["name"]) for u in found]
    return {"username": ", ".join(names), "guestUsers": found}


def interfaces(reply: Any) -> dict[str, Any]:
    nics = []
    addresses: list[str] = []
    for entry in items(reply, "the interface list", "interfaces"):
        nic = mapping(entry, "an interface")
        hw = _optional(nic, "hardware-address", "a hardware address")
        if hw and not _MAC.fullmatch(hw):
            raise BadReply(f"{hw!r} is not a MAC address")
        inet: list[str] = []
        inet6: list[str] = []
        for item in items(nic.get("ip-addresses", []), "an address list", "addresses"):
            address = mapping(item, "an address")
            try:
                ip = ipaddress.ip_address(text(address.get("ip-address"), "an address"))
            except ValueError:
                raise BadReply("an address is not an IP address") from None
            (inet if ip.version == 4 else inet6).append(str(ip))
            if not ip.is_loopback:
                addresses.append(str(ip))
        nics.append({"name": text(nic.get("name"), "an interface name"), "hw": hw,
                     "inet": inet, "inet6": inet6})
    return {"netIfaces": nics, "guestIPs": " ".join(addresses)}


def filesystems(reply: Any) -> dict[str, Any]:
    usage = []
    for entry in items(reply, "the filesystem list", "filesystems"):
        fs = mapping(entry, "a filesystem")
        if fs.get("total-bytes") is None or fs.get("used-bytes") is None:
            continue  # e.g. Windows' System Reserved volumes: nothing to show
        usage.append({"path": text(fs.get("mountpoint"), "a mount point"),
                      "fs": text(fs.get("type"), "a filesystem type"),
                      "total": number(fs["total-bytes"], "total-bytes"),
                      "used": number(fs["used-bytes"], "used-bytes")})
    return {"disksUsage": usage}


def timezone(reply: Any) -> dict[str, Any]:
    zone = mapping(reply, "the time zone")
    offset = zone.get("offset")
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 86400:
        raise BadReply("the time zone offset is not a number of seconds")
    return {"guestTimezone": {"zone": _optional(zone, "zone", "zone") or "unknown",
                              "offset": offset // 60}}


def apps(output: bytes, match: tuple[str, ...] = ()) -> dict[str, Any]:
    """The package query's output (one ``name-version`` a line, UTF-8 text), only the
    entries that match one of the shell patterns ``match`` (all if there is none)."""
    try:
        lines = output.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise BadReply("the package list is not UTF-8 text") from None
    found = [line.strip() for line in lines if line.strip()]
    if match:
        found = [line for line in found
                 if any(fnmatch.fnmatchcase(line, pattern) for pattern in match)]
    if len(found) > LIMITS["apps"]:
        raise BadReply(f"the package list has {len(found)} entries, more than "
                       f"{LIMITS['apps']}")
    return {"appsList": [text(line, "a package") for line in found]}


#: The info commands of a refresh, in order: command, parser.
INFO_COMMANDS: tuple[tuple[str, Callable[[Any], dict[str, Any]]], ...] = (
    ("guest-get-host-name", host_name),
    ("guest-get-osinfo", os_info),
    ("guest-get-users", users),
    ("guest-network-get-interfaces", interfaces),
    ("guest-get-fsinfo", filesystems),
    ("guest-get-timezone", timezone),
)
