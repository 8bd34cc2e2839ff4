"""One fence request, checked: which program runs, what it reads, and what its answer means.

Every value of ``Host.fenceNode`` is hostile until checked here. The agent name must be one of
the known agents (``[fencing] agents``; no path, no shell character can pass the name's
pattern) and its program ``<agent_dir>/fence_<agent>`` a regular file that only root can
change. The address, user and port become ``key=value`` lines on the agent's standard input,
so none of them may hold a line break (a second line would be another option); options pass
:func:`~actors.host.fenceopts.parse_options`.

The password never reaches a command line, an environment another user can read, or a log:
it is one line of the agent's standard input. The ``fence_ipmilan`` family would pass it on to
``ipmitool -P`` (which shows it in the process list until ipmitool masks it); for those the
agent is told to run ``fence-ipmitool`` (next to this module) instead of ipmitool and gets no
password at all: the wrapper runs ``ipmitool -E``, which reads it from ``IPMI_PASSWORD`` in
the environment the agent inherited from us (``/proc/<pid>/environ`` is readable by its
owner only). Whatever an agent prints is scrubbed of the password before it is logged or
returned.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.host.fenceopts import AGENT_NAME, IPMITOOL_AGENTS, parse_options
from messaging.errors import FenceAgentUnusable, InvalidParams

ACTIONS = ("status", "on", "off", "reboot")
IPMITOOL_WRAPPER = Path(__file__).with_name("fence-ipmitool")
AGENT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[?[0-9A-Fa-f:.]{2,45}\]?")


@dataclass(frozen=True)
class FenceRequest:
    agent: str
    addr: str
    port: str
    username: str
    password: str = field(repr=False)
    action: str
    secure: bool = False
    options: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """The fencing device (and plug), as messages name it."""
        where = f"{self.addr}:{self.port}" if self.port else self.addr
        plug = self.options.get("plug")
        return f"{where} plug {plug}" if plug else where

    @property
    def via_ipmitool(self) -> bool:
        return self.agent in IPMITOOL_AGENTS

    def describe(self) -> dict[str, Any]:
        """For logs: everything but the password."""
        return {"agent": self.agent, "action": self.action, "target": self.target,
                "username": self.username, "options": sorted(self.options)}


def _line_value(value: str, param: str) -> str:
    for i, char in enumerate(value):
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise InvalidParams(param, f"control character at position {i} (the value is "
                                "one line of the agent's input)")
    return value


def parse_request(params: dict[str, Any], *, known: frozenset[str]) -> FenceRequest:
    """The checked request, or InvalidParams naming the param (never echoing a password)."""
    agent = params["agent"]
    if AGENT_NAME.fullmatch(agent) is None:
        raise InvalidParams("agent", "an agent name is lower-case letters, digits and '_' "
                            "(no path, no shell characters)")
    if agent not in known:
        raise InvalidParams("agent", f"unknown fence agent {agent!r} (known: "
                            f"{', '.join(sorted(known))})")
    addr = params["addr"]
    if _HOST.fullmatch(addr) is None:
        raise InvalidParams("addr", "not a host name or an IP address")
    port = params.get("port", "")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise InvalidParams("port", "the device's TCP/UDP port: 1..65535, or empty for the "
                            "agent's default (a plug goes in options: plug=NAME)")
    password = params["password"]
    for i, char in enumerate(password):
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise InvalidParams("password", f"control character at position {i}")
    if params["action"] not in ACTIONS:
        raise InvalidParams("action", f"not one of {', '.join(ACTIONS)}")
    return FenceRequest(
        agent=agent, addr=addr, port=port,
        username=_line_value(params["username"], "username"), password=password,
        action=params["action"], secure=bool(params.get("secure", False)),
        options=parse_options(params.get("options", "") or ""))


def agent_program(agent_dir: Path, agent: str) -> Path:
    """``<agent_dir>/fence_<agent>``, checked by :func:`root_program`."""
    return root_program(agent_dir / f"fence_{agent}")


def root_program(path: Path) -> Path:
    """``path`` resolved, if it is a regular executable file that only root can change
    (itself and every directory above it, a sticky directory's root-owned entries aside);
    else FenceAgentUnusable."""
    try:
        real = path.resolve(strict=True)
        st = real.stat()
    except OSError as e:
        raise FenceAgentUnusable(path=str(path), reason=f"not installed ({e.strerror}); "
                                 "Debian's fence-agents package provides it") from None
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
        raise FenceAgentUnusable(path=str(path), reason="not an executable file")
    below: os.stat_result | None = None
    for what in (real, *real.parents):
        try:
            info = what.stat()
        except OSError as e:
            raise FenceAgentUnusable(path=str(path), reason=str(e)) from None
        sticky_guard = (stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
                        and below is not None and below.st_uid == 0)
        if info.st_uid != 0 or (info.st_mode & 0o022 and not sticky_guard):
            raise FenceAgentUnusable(path=str(path), reason=f"{what} may be changed by "
                                     "another user than root")
        below = info
    return real


def agent_input(request: FenceRequest) -> str:
    """The agent's standard input: one ``key=value`` line per setting."""
    lines = {"action": request.action, "ip": request.addr}
    if request.port:
        lines["ipport"] = request.port
    if request.username:
        lines["username"] = request.username
    if request.via_ipmitool:
        lines["ipmitool_path"] = str(IPMITOOL_WRAPPER)
        lines["verbose"] = "1"  # ipmitool's own error ("Unable to establish ... session")
    elif request.password:
        lines["password"] = request.password
    if request.secure:
        lines["secure"] = "1"
    lines.update(request.options)
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def agent_env(request: FenceRequest) -> dict[str, str]:
    """The agent's whole environment (nothing of vdsmd's)."""
    env = {"PATH": AGENT_PATH, "LANG": "C.UTF-8",
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    if request.via_ipmitool and request.password:
        env["IPMI_PASSWORD"] = request.password
    return env


def check_wrapper() -> None:
    """The ipmitool wrapper must be root's own executable file, like the agents."""
    root_program(IPMITOOL_WRAPPER)


def scrub(text: str, secret: str) -> str:
    """``text`` without ``secret`` (and without the agents' noise lines)."""
    if secret:
        text = text.replace(secret, "****")
    kept = [line for line in text.splitlines()
            if line.strip() and "DeprecationWarning" not in line
            and not line.lstrip().startswith("from pipes import")]
    return "\n".join(kept)
