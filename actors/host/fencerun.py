"""Running one fence agent: its input on stdin, a deadline, its exit status as a result.

The agent runs in a session of its own with an environment of our making (see
:func:`~actors.host.fencing.agent_env`) and no arguments at all. Past the deadline its whole
process group (the agent and the ipmitool, ssh or telnet it started) is killed, and the
request gets :class:`~messaging.errors.FenceTimeout`: the power state is then unknown.

Exit statuses (fence-agents' convention): 0 success, and for ``status`` 0 "on" and 2 "off";
anything else a failure, whose reason is the agent's last error line.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.host.fencing import FenceRequest, agent_env, agent_input, scrub
from messaging.errors import FenceAgentFailed, FenceTimeout

log = logging.getLogger(__name__)

MAX_MESSAGE = 2000
KILL_WAIT = 5.0
_TOOL_ERROR = re.compile(r"DEBUG: \d+ +(?:\S.*?)??\s*(Error: [^\n]*?)\s*$", re.MULTILINE)
"""ipmitool's error as a verbose fence_ipmilan logs it ("DEBUG: 1  Error: Unable to ...")."""
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR): ")


@dataclass(frozen=True)
class Outcome:
    rc: int
    out: str
    err: str
    seconds: float


def run_agent(program: Path, request: FenceRequest, timeout: float) -> Outcome:
    """Run ``program`` for ``request``; FenceTimeout once ``timeout`` has passed."""
    started = time.monotonic()
    proc = subprocess.Popen(  # a checked program, no arguments, no shell
        [str(program)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=agent_env(request), cwd="/", close_fds=True,
        start_new_session=True)
    try:
        out, err = proc.communicate(agent_input(request).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise FenceTimeout(agent=request.agent, action=request.action,
                           target=request.target, timeout=timeout) from None
    except BaseException:
        _kill_group(proc)
        raise
    return Outcome(proc.returncode, scrub(out.decode(errors="replace"), request.password),
                   scrub(err.decode(errors="replace"), request.password),
                   time.monotonic() - started)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:
        log.error("fence agent %d did not end after SIGKILL", proc.pid)


def _reason(outcome: Outcome) -> str:
    """The agent's own words: its last error line, else its last line at all."""
    lines = [_LOG_PREFIX.sub("", line).strip() for line in
             (outcome.err + "\n" + outcome.out).splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.lower().startswith(("failed", "error", "unable"))
              or "error" in line.lower()]
    chosen = errors[-1] if errors else (lines[-1] if lines else "no output")
    tool = [m.group(1) for m in _TOOL_ERROR.finditer(outcome.err)]
    if tool and tool[-1] not in chosen:
        chosen = f"{chosen} ({tool[-1]})"
    return chosen[:MAX_MESSAGE]


def result(request: FenceRequest, outcome: Outcome) -> dict[str, Any]:
    """``{power, operationStatus, message}`` for a successful run; FenceAgentFailed else."""
    said = [line.strip() for line in outcome.out.splitlines() if line.strip()]
    message = said[-1][:MAX_MESSAGE] if said else ""
    if request.action == "status":
        if outcome.rc in (0, 2):
            power = "on" if outcome.rc == 0 else "off"
            return {"power": power, "operationStatus": "done", "message": message}
    elif outcome.rc == 0:
        return {"power": _power_after(request.action, outcome), "operationStatus": "initiated",
                "message": _last_success(outcome) or message}
    raise FenceAgentFailed(
        agent=request.agent, action=request.action, target=request.target, rc=outcome.rc,
        reason=_reason(outcome),
        data={"power": "unknown", "operationStatus": "failed", "message": _reason(outcome)})


def _last_success(outcome: Outcome) -> str:
    found = [line.strip() for line in outcome.out.splitlines()
             if line.strip().startswith("Success")]
    return found[-1][:MAX_MESSAGE] if found else ""


def _power_after(action: str, outcome: Outcome) -> str:
    said = _last_success(outcome).upper()
    if action == "off":
        return "off"
    if action == "on":
        return "on"
    # reboot: the agent says "Rebooted" even when the power-on half timed out
    if "REBOOTED" in said and "waiting to power on" not in outcome.err.lower():
        return "on"
    return "unknown"
