"""The plain layer of Host.fenceNode: checking requests, the agent's input, the answers.

The agent-run tests use small shell scripts as fence agents (test doubles, said so): they
produce on demand what a real agent only does by accident (an exit status, output echoing
its input, a child that outlives a hang). The real agent against a real BMC is
tests/integration/test_fencing.py.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from actors.config import DEFAULT_FENCE_AGENTS
from actors.host import fencepolicy
from actors.host.fenceapi import FenceService, FenceSettings
from actors.host.fenceopts import IPMITOOL_AGENTS, parse_options
from actors.host.fencerun import Outcome, result, run_agent
from actors.host.fencing import (
    IPMITOOL_WRAPPER,
    agent_env,
    agent_input,
    parse_request,
    root_program,
)
from messaging.errors import (
    FenceAgentFailed,
    FenceAgentUnusable,
    FenceBusy,
    FenceTimeout,
    InvalidParams,
)
from messaging.schema import SCHEMA

pytestmark = pytest.mark.timeout(60)
KNOWN = frozenset(DEFAULT_FENCE_AGENTS)
SECRET = "pw-ZZ-9 x"


def request(**changes: Any) -> dict[str, Any]:
    params = {"addr": "192.0.2.7", "port": "623", "agent": "ipmilan", "username": "admin",
              "password": SECRET, "action": "status", "options": "lanplus=1", **changes}
    checked: dict[str, Any] = SCHEMA.lookup("Host.fenceNode").check_params(params)
    return checked


def refused(**changes: Any) -> InvalidParams:
    with pytest.raises(InvalidParams) as caught:
        parse_request(request(**changes), known=KNOWN)
    assert SECRET not in caught.value.message
    return caught.value


def test_the_ipmitool_family_is_known_and_every_name_is_a_plain_name() -> None:
    assert IPMITOOL_AGENTS <= KNOWN
    for name in ("../ipmilan", "ipmilan;id", "a b", "IPMILAN", "$(id)", "fence_ipmilan/..",
                 "", "x" * 65, "ipmilan\n"):
        assert refused(agent=name).param == "agent", name
    assert "unknown fence agent 'apc_snmp'" in refused(agent="apc_snmp").message


def test_values_that_would_add_lines_to_the_agents_input_are_refused() -> None:
    assert refused(username="admin\nipmitool_path=/tmp/x").param == "username"
    assert refused(password="pw\ndebug_file=/etc/shadow").param == "password"
    assert refused(addr="192.0.2.7\naction=off").param == "addr"
    assert refused(addr="-oProxyCommand=x").param == "addr"
    assert refused(port="0").param == "port"
    assert refused(port="7x").param == "port"


def test_options_pass_an_allow_list_with_a_pattern_per_value() -> None:
    assert parse_options("lanplus=1\npower_timeout=5, plug=node 1 ,method=cycle\n") == {
        "lanplus": "1", "power_timeout": "5", "plug": "node 1", "method": "cycle"}
    assert parse_options("lanplus") == {"lanplus": "1"}
    for text, param in (("ipmitool_path=/bin/sh", "options.ipmitool_path"),
                        ("password_script=id", "options.password_script"),
                        ("use_sudo", "options.use_sudo"),
                        ("verbose=1", "options.verbose"),
                        ("passwd=x", "options.passwd"),
                        ("port=2", "options.port"),
                        ("power_timeout=$(id)", "options.power_timeout"),
                        ("lanplus=1,lanplus=0", "options.lanplus")):
        with pytest.raises(InvalidParams) as caught:
            parse_options(text)
        assert caught.value.param == param, text
    with pytest.raises(InvalidParams):
        parse_options("\n".join(f"delay={i}" for i in range(40)))


def test_the_password_goes_to_ipmitool_through_the_environment_only() -> None:
    ipmi = parse_request(request(), known=KNOWN)
    text = agent_input(ipmi)
    assert SECRET not in text and SECRET not in repr(ipmi)
    assert f"ipmitool_path={IPMITOOL_WRAPPER}\n" in text
    assert text.startswith("action=status\nip=192.0.2.7\nipport=623\nusername=admin\n")
    assert agent_env(ipmi)["IPMI_PASSWORD"] == SECRET
    other = parse_request(request(agent="ilo_ssh", options="", secure=True), known=KNOWN)
    assert f"password={SECRET}\n" in agent_input(other)
    assert "secure=1\n" in agent_input(other)
    assert "IPMI_PASSWORD" not in agent_env(other)
    assert set(agent_env(other)) == {"PATH", "LANG", "PYTHONWARNINGS"}  # nothing of ours


def test_the_wrapper_and_the_agents_are_root_owned_files(tmp_path: Path) -> None:
    assert root_program(IPMITOOL_WRAPPER) == IPMITOOL_WRAPPER.resolve()
    script = tmp_path / "fence_x"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(FenceAgentUnusable, match="not an executable"):
        root_program(script)
    script.chmod(0o775)
    with pytest.raises(FenceAgentUnusable, match="another user than root"):
        root_program(script)
    script.chmod(0o755)
    tmp_path.chmod(0o777)
    try:
        with pytest.raises(FenceAgentUnusable, match="another user than root"):
            root_program(script)
    finally:
        tmp_path.chmod(0o755)
    os.chown(script, 1, 1)
    with pytest.raises(FenceAgentUnusable, match="another user than root"):
        root_program(script)
    with pytest.raises(FenceAgentUnusable, match="not installed"):
        root_program(tmp_path / "fence_none")


def outcome(rc: int, out: str = "", err: str = "") -> Outcome:
    return Outcome(rc, out, err, 0.1)


def test_exit_statuses_map_to_power_and_operation_status() -> None:
    status = parse_request(request(), known=KNOWN)
    assert result(status, outcome(0, "Status: ON\n")) == {
        "power": "on", "operationStatus": "done", "message": "Status: ON"}
    assert result(status, outcome(2, "Status: OFF\n"))["power"] == "off"
    with pytest.raises(FenceAgentFailed) as caught:
        result(status, outcome(1, "", "2024-01-01 10:00:00,123 ERROR: Failed: Unable to "
                               "obtain correct plug status\n"))
    assert caught.value.code == 501
    assert caught.value.message.endswith("(exit 1): Failed: Unable to obtain correct plug "
                                         "status")
    assert caught.value.data["power"] == "unknown"
    off = parse_request(request(action="off"), known=KNOWN)
    assert result(off, outcome(0, "Success: Powered OFF\n")) == {
        "power": "off", "operationStatus": "initiated", "message": "Success: Powered OFF"}
    with pytest.raises(FenceAgentFailed):
        result(off, outcome(2, "Status: OFF\n"))  # 2 means "off" for status only
    reboot = parse_request(request(action="reboot"), known=KNOWN)
    assert result(reboot, outcome(0, "Success: Rebooted\n"))["power"] == "on"
    half = outcome(0, "Success: Rebooted\n", "ERROR: Timed out waiting to power ON\n")
    assert result(reboot, half)["power"] == "unknown"


def agent(directory: Path, body: str) -> Path:
    path = directory / "fence_stub"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_an_agent_past_its_deadline_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    stub = agent(tmp_path, f"sleep 300 &\necho $! > {pid_file}\nwait\n")
    started = time.monotonic()
    with pytest.raises(FenceTimeout) as caught:
        run_agent(stub, parse_request(request(), known=KNOWN), timeout=1.0)
    assert caught.value.code == 502 and caught.value.retryable
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{child}").exists()


def test_what_an_agent_says_is_scrubbed_of_the_password(tmp_path: Path) -> None:
    """An agent that echoes its input and environment: the password (here on stdin, for a
    non-ipmitool agent) is masked in what is logged and answered."""
    stub = agent(tmp_path, "cat >&2\nenv >&2\necho 'Failed: no'\nexit 1\n")
    req = parse_request(request(agent="ilo_ssh", options=""), known=KNOWN)
    got = run_agent(stub, req, timeout=10)
    assert got.rc == 1 and SECRET not in got.err and "password=****" in got.err
    assert "HOME=" not in got.err  # the agent gets none of vdsmd's environment
    with pytest.raises(FenceAgentFailed) as caught:
        result(req, got)
    assert SECRET not in caught.value.message


class Answer:
    def __init__(self, state: str, reason: str = "because") -> None:
        self._state, self._reason = state, reason

    @property
    def state(self) -> str:
        return self._state

    @property
    def reason(self) -> str:
        return self._reason


def test_the_policy_skips_when_any_domain_sees_the_host_alive() -> None:
    sd1, sd2 = "8b6f3b2e-4b8d-4a51-9a6c-1c7f3f0f5e11", "1f0c1d7e-9a0e-4f8b-8d9a-0a1b2c3d4e5f"
    host_ids = fencepolicy.parse_policy({"storageDomainHostIdMap": {sd1: 2, sd2: 2}})
    asked: list[str] = []

    def query(states: dict[str, str]) -> fencepolicy.HostIdQuery:
        def ask(sd: str, host_id: int) -> Answer:
            asked.append(sd)
            return Answer(states[sd])
        return ask

    verdict = fencepolicy.decide(host_ids, query({sd1: "unknown", sd2: "alive"}))
    assert verdict.skip and f"host id 2 still renews its lease on storage domain {sd2}" in (
        verdict.message)
    assert not fencepolicy.decide(host_ids, query({sd1: "dead", sd2: "unknown"})).skip
    with pytest.raises(InvalidParams):
        fencepolicy.parse_policy({"storageDomainHostIdMap": {"../x": 2}})
    with pytest.raises(InvalidParams):
        fencepolicy.parse_policy({"storageDomainHostIdMap": {}})
    with pytest.raises(InvalidParams):  # the schema refuses policies it does not honour
        SCHEMA.lookup("Host.fenceNode").check_params(
            request(policy={"skipFencingIfGlusterBricksUp": True}))


def test_the_wrapper_is_executable_by_root_only_writers() -> None:
    mode = IPMITOOL_WRAPPER.stat().st_mode
    assert mode & stat.S_IXUSR and not mode & 0o022


def test_a_fence_releases_its_device_before_its_answer_goes_out(tmp_path: Path) -> None:
    # CI once saw "is being fenced already (status, for 0.2 s)" on the "off" a client sent
    # right after the "status" answer: the answer went out before the device was released.
    # A callback on the answer runs when the answer is given, on the fence's own thread.
    agent(tmp_path, "cat > /dev/null\necho 'Status: ON'\n")
    service = FenceService(FenceSettings(agent_dir=tmp_path, agents=KNOWN | {"stub"},
                                         timeout=20.0, max_running=1),
                           host_ids=None)
    seen_at_answer: list[dict[str, Any]] = []
    for _ in range(2):  # the second would be refused (max_running 1) if the first lingered
        answer = service.fence_node(request(agent="stub", options=""))
        assert not isinstance(answer, dict)
        answer.add_done_callback(lambda _f: seen_at_answer.append(service.describe()))
        assert answer.result(timeout=20) == {"power": "on", "operationStatus": "done",
                                             "message": "Status: ON"}
    assert seen_at_answer == [{}, {}]


def test_a_second_fence_of_the_same_device_is_refused_while_the_first_runs(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    agent(tmp_path, f"cat > /dev/null\nn=0\nwhile [ ! -e {gate} ] && [ $n -lt 200 ]; do "
                    "sleep 0.1; n=$((n + 1)); done\necho 'Status: OFF'\nexit 2\n")
    service = FenceService(FenceSettings(agent_dir=tmp_path, agents=KNOWN | {"stub"},
                                         timeout=30.0, max_running=4),
                           host_ids=None)
    first = service.fence_node(request(agent="stub", options=""))
    assert not isinstance(first, dict)
    try:
        with pytest.raises(FenceBusy, match=r"192\.0\.2\.7:623 is being fenced already \(status"):
            service.fence_node(request(agent="stub", options="", action="off"))
        assert list(service.describe()) == ["192.0.2.7:623"]
    finally:
        gate.touch()
    assert first.result(timeout=30)["power"] == "off"
    assert service.describe() == {}
