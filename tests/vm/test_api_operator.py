"""What an operator sees of VMs: names wherever a vmID is (vdsm-client and vdsm-console),
refused when ambiguous; ``VM list``; displayInfo and memSize in the stats; log lines that
name the VM and the request; recent messages with their arguments, secrets masked. Real
vdsmd, real libvirt, VMs without an OS (SeaBIOS idles: cheap to start)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Vdsmd
from tests.vm import agent as a

pytestmark = [pytest.mark.timeout(180), pytest.mark.libvirt]

VENV_BIN = Path(sys.executable).parent


def client(agent: Vdsmd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "vdsm-client"), "--api", agent.api, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def console(agent: Vdsmd, *commands: str) -> subprocess.CompletedProcess[str]:
    args = [arg for command in commands for arg in ("-c", command)]
    return subprocess.run([str(VENV_BIN / "vdsm-console"), "--api", agent.api, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_vm_names_stats_and_logs(agent: Vdsmd) -> None:
    web, twin_a, twin_b = a.new_id(), a.new_id(), a.new_id()
    name, twin = a.name(), a.name()
    agent.call("VM.create", vmID=web, vmParams=a.bare_params(vmName=name, display="vnc"))
    # libvirt allows one running domain per name, but a VM that went Down stays listed
    # until it is destroyed: a new VM may then take its name
    agent.call("VM.create", vmID=twin_a, vmParams=a.bare_params(vmName=twin))
    agent.call("VM.shutdown", vmID=twin_a, delay=1, force=True)  # no OS: destroyed after 1 s
    a.wait_status(agent, twin_a, "Down")
    agent.call("VM.create", vmID=twin_b, vmParams=a.bare_params(vmName=twin))
    for vm_id in (web, twin_b):
        a.wait_status(agent, vm_id, "Up")

    # a name works wherever a vmID does
    done = client(agent, "VM", "getStats", f"vmID={name}")
    assert done.returncode == 0, done.stderr
    [stats] = json.loads(done.stdout)
    assert stats["vmID"] == web and stats["memSize"] == 96
    [display] = stats["displayInfo"]
    assert display["type"] == "vnc" and display["port"] >= 5900 and display["tlsPort"] == -1
    assert client(agent, "VM", "setTicket", f"vmID={name}", "password=123456",
                  "ttl=60").returncode == 0  # a password of digits stays a string
    # a name two VMs share is refused, and nothing is done to either
    done = client(agent, "VM", "pause", f"vmID={twin}")
    assert done.returncode == 4
    error = json.loads(done.stderr)
    assert error["code"] == -32602 and twin_a in error["message"] and twin_b in error["message"]
    assert a.status(agent, twin_b)["status"] == "Up"  # not paused
    done = client(agent, "VM", "pause", "vmID=nobody")
    assert done.returncode == 1
    assert "nor the name of a VM" in json.loads(done.stderr)["message"]

    # VM list: a table of name, id, status, CPU, memory, display, uptime
    table = client(agent, "VM", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "ID", "STATUS", "CPU%", "MEMORY", "DISPLAY", "UPTIME"]
    row = next(line for line in table if line.startswith(name))
    assert web in row and " Up " in row and "96 MiB" in row and "vnc 127.0.0.1:" in row
    assert sum(1 for line in table if line.startswith(f"{twin} ")) == 2
    rows = json.loads(client(agent, "VM", "list", "-o", "json").stdout)
    assert {r["id"] for r in rows} == {web, twin_a, twin_b}
    down = next(r for r in rows if r["id"] == twin_a)
    assert (down["status"], down["display"], down["uptime"]) == ("Down", "-", None)
    names = client(agent, "VM", "list", "-o", "names").stdout.split()
    assert sorted(names) == sorted([name, twin, twin])

    # the console: names next to ids, inspect by name, the ticket's password masked
    done = console(agent, "tree", "ls", f"inspect {name}")
    assert done.returncode == 0, done.stdout
    assert f"{web} (VmActor, {name})" in done.stdout
    assert f"/vms/{web} [{name}]" in done.stdout
    assert f"/vms/{web}  (VmActor, running)" in done.stdout
    assert "set_ticket(password='***', ttl=60)" in done.stdout
    assert "123456" not in done.stdout
    assert console(agent, f"inspect {twin}").returncode == 1  # ambiguous
    called = console(agent, f"call VM.getStats vmID={name}")  # typed values, names
    assert called.returncode == 0 and f'"vmID": "{web}"' in called.stdout
    # top: each actor's message rate, mailbox depth, restarts; a VM's actor with its name
    # and its CPU (a Down VM has none)
    top = console(agent, "top 1.5")
    assert top.returncode == 0, top.stdout
    rows = top.stdout.splitlines()
    assert any(re.fullmatch(rf"/vms/{web} \[{name}\] +running +\d+\.\d +\d+ +\d+ +"
                            r"\d+\.\d", row) for row in rows), top.stdout
    assert any(re.fullmatch(rf"/vms/{twin_a} \[{twin}\] +\w+ +\d+\.\d +\d+ +\d+ *", row)
               for row in rows), top.stdout

    # the log names the VM (id and name) and the request that acted on it
    log = agent.log()
    assert f"VM {web} ({name}) is Up" in log
    assert "VM.setTicket from" in log and f"vmID={web}" in log
    assert "123456" not in log
    assert "refused VM.pause" not in log  # refused by the client: never sent
    for vm_id in (web, twin_a, twin_b):
        agent.call("VM.destroy", vmID=vm_id)
    # libvirt's expected errors (a lookup that finds no domain) are not raw stderr lines
    raw = [line for line in agent.log().splitlines() if line.startswith("libvirt:")]
    assert not raw, raw
