"""vdsm-client and vdsm-console driven as a person or a script would."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from messaging.client import Client, ClientError
from messaging.schema import SCHEMA
from tests.harness import TOP, Vdsmd, wait_for

pytestmark = pytest.mark.timeout(120)

VENV_BIN = Path(sys.executable).parent


def client(vdsmd: Vdsmd, *args: str, stdin: str | None = None,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "vdsm-client"), "--api", vdsmd.api, "--events", vdsmd.events, *args],
        capture_output=True, text=True, input=stdin, timeout=timeout, check=False,
    )


def test_call_prints_json_and_exits_zero(vdsmd: Vdsmd) -> None:
    done = client(vdsmd, "Host", "ping")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) is True
    done = client(vdsmd, "Host", "getStats")
    assert "cpuIdle" in json.loads(done.stdout)


def test_error_reply_exits_one_with_json_on_stderr(vdsmd: Vdsmd) -> None:
    done = client(vdsmd, "VM", "destroy", f"vmID={uuid.uuid4()}")
    assert done.returncode == 1
    error = json.loads(done.stderr)
    assert error["code"] in (1, -32601)
    done = client(vdsmd, "VM", "destroy", "vmID=not-a-uuid")
    assert done.returncode == 1
    error = json.loads(done.stderr)
    assert error["code"] == -32602
    assert "vmID" in error["message"]


def test_usage_errors_exit_two(vdsmd: Vdsmd) -> None:
    assert client(vdsmd, "Host", "nosuchverb").returncode == 2
    assert client(vdsmd, "Host", "ping", "novalue").returncode == 2
    assert client(vdsmd).returncode == 2


def test_timeout_exits_three(tmp_path: Path) -> None:
    nobody = f"ipc://{tmp_path}/nobody.sock"
    done = subprocess.run([str(VENV_BIN / "vdsm-client"), "--api", nobody, "--timeout", "0.5",
                           "Host", "ping"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 3


def test_verb_help_comes_from_the_schema(vdsmd: Vdsmd) -> None:
    done = client(vdsmd, "VM", "create", "--help")
    assert done.returncode == 0
    assert "vmParams" in done.stdout and "memSize" in done.stdout
    assert "aliases: create" in done.stdout
    done = client(vdsmd, "Host", "--help")
    assert "getCapabilities" in done.stdout


def test_params_from_a_file_and_stdin(vdsmd: Vdsmd, tmp_path: Path) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"path": "/host"}))
    done = client(vdsmd, "-f", str(params), "Actors", "inspect")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == "/host"
    done = client(vdsmd, "-f", "-", "Actors", "inspect", stdin='{"path": "/host/stats"}')
    assert json.loads(done.stdout)["path"] == "/host/stats"


def test_events_stream_one_json_line_each(vdsmd: Vdsmd) -> None:
    """A subscription is live only some time after the client connects (ZeroMQ's late
    joiner): crash the actor until a first event arrives, then check one whole crash."""
    proc = subprocess.Popen(
        [str(VENV_BIN / "vdsm-client"), "--events", vdsmd.events, "events",
         "|actors|status|/host/stats", "--duration", "90"],
        stdout=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(json.loads(line))

    def running() -> bool:
        return bool(vdsmd.call("Actors.inspect", path="/host/stats")["state"] == "running")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        first = None
        for _attempt in range(5):
            wait_for(running, 30, what="/host/stats to run")
            vdsmd.call("Actors.crash", path="/host/stats")
            try:
                first = lines.get(timeout=5)
                break
            except queue.Empty:
                continue
        assert first is not None, "no event reached the subscriber"
        event = first
        while event["payload"]["event"] != "restarted":  # the rest of that crash
            event = lines.get(timeout=30)
        wait_for(running, 30, what="/host/stats to run")
        vdsmd.call("Actors.crash", path="/host/stats")
        seen = [lines.get(timeout=30) for _ in range(2)]
    finally:
        proc.kill()
        proc.wait(10)
        reader.join(10)
    assert [e["payload"]["event"] for e in seen] == ["failed", "restarted"]
    assert all(e["topic"] == "|actors|status|/host/stats" for e in [first, *seen])
    assert all("notify_time" in e["payload"] for e in seen)


def test_console_scripted(vdsmd: Vdsmd) -> None:
    done = subprocess.run(
        [str(VENV_BIN / "vdsm-console"), "--api", vdsmd.api, "--events", vdsmd.events],
        input="tree\ninspect /host/libvirt\nfailures\nbogus\nquit\n",
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "libvirt (LibvirtActor)" in done.stdout
    assert "connected" in done.stdout
    assert "no failures" in done.stdout
    assert "unknown command 'bogus'" in done.stdout


def test_console_refuses_a_dead_agent(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(VENV_BIN / "vdsm-console"), "--api", f"ipc://{tmp_path}/none.sock"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 1
    assert "does not answer" in done.stderr


class Tmux:
    """A console in a real terminal (tmux), typed into as a person would."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "200",
                        *command], check=True, timeout=10, cwd=TOP)

    def type(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True, timeout=10)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def wait_for(self, text: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise TimeoutError(f"{text!r} not on screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], timeout=10, check=False)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_console_in_a_terminal(vdsmd: Vdsmd) -> None:
    term = Tmux(f"vdsm-console-{uuid.uuid4().hex[:8]}",
                [str(VENV_BIN / "vdsm-console"), "--api", vdsmd.api, "--events", vdsmd.events])
    try:
        term.wait_for("vdsm>")
        screen = term.wait_for("stats (HostStatsActor)")
        assert "running" in screen
        # completion of a command and an actor path, as a person would type
        term.type("insp")
        term.wait_for("vdsm> insp")
        time.sleep(0.3)
        term.type("Tab")
        term.wait_for("vdsm> inspect")
        term.type(" /host/lib")
        term.wait_for("vdsm> inspect /host/lib")
        time.sleep(0.3)
        term.type("Tab")
        term.wait_for("vdsm> inspect /host/libvirt")
        term.type("Enter")
        term.wait_for('"connected": true')
        # a live event shows while watching
        term.type("watch |actors| 30", "Enter")
        term.wait_for("watching events")
        # The subscription is live only some time after the console connects (ZeroMQ's
        # late joiner): crash again until the event shows (each crash once it runs again).
        for attempt in range(5):
            wait_for(lambda: vdsmd.call("Actors.inspect", path="/host/stats")["state"]
                     == "running", 30, what="/host/stats to run")
            vdsmd.call("Actors.crash", path="/host/stats", reason=f"console drill {attempt}")
            try:
                term.wait_for("console drill", timeout=4)
                break
            except TimeoutError:
                continue
        term.wait_for("console drill")
        term.type("C-c")
        term.wait_for("vdsm>", timeout=20)
        prompts = term.screen().count("vdsm>")
        term.type("tree", "Enter")
        deadline = time.monotonic() + 15
        while term.screen().count("vdsm>") <= prompts and time.monotonic() < deadline:
            time.sleep(0.1)
        screen = term.screen()
        tree = screen[screen.rindex("ACTOR"):]
        assert "stats (HostStatsActor)" in tree
        assert "console drill" in tree  # the last failure shows in the tree
        term.type("C-d")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done = subprocess.run(["tmux", "has-session", "-t", term.name],
                                  capture_output=True, timeout=10, check=False)
            if done.returncode != 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the console did not exit on Ctrl-D")
    finally:
        term.close()


# --- the operator's first hour (issue 13) ---------------------------------------------------


def test_aliases_and_did_you_mean_on_the_command_line(vdsmd: Vdsmd) -> None:
    done = client(vdsmd, "ping")
    assert (done.returncode, json.loads(done.stdout)) == (0, True)
    assert json.loads(client(vdsmd, "Host.ping").stdout) is True
    done = client(vdsmd, "VM", "continue", f"vmID={uuid.uuid4()}")
    assert done.returncode == 1  # reached the agent as VM.cont: no such VM
    assert json.loads(done.stderr)["code"] == 1
    done = client(vdsmd, "VM", "destory", f"vmID={uuid.uuid4()}")
    assert done.returncode == 2
    assert "did you mean destroy?" in done.stderr and "getStats" in done.stderr


def test_values_follow_the_schema(vdsmd: Vdsmd) -> None:
    # path=5 is sent as the string "5" (not the number): the agent refuses its form, not
    # its type; an invalid param exits 4
    done = client(vdsmd, "Actors", "inspect", "path=5")
    assert done.returncode == 4
    error = json.loads(done.stderr)
    assert error["code"] == -32602 and "expected a string" not in error["message"]
    # an enum is checked by the client, naming the allowed values
    done = client(vdsmd, "Volume", "create", f"storagepoolID={uuid.uuid4()}",
                  f"storagedomainID={uuid.uuid4()}", f"imageID={uuid.uuid4()}",
                  f"volumeID={uuid.uuid4()}", "size=1G", "volFormat=qcow2",
                  "preallocate=sparse")
    assert done.returncode == 4
    assert "cow, raw" in json.loads(done.stderr)["message"]


def test_distinct_exit_codes(vdsmd: Vdsmd) -> None:
    assert client(vdsmd, "Task", "getStatus", f"taskID={uuid.uuid4()}").returncode == 1
    assert client(vdsmd, "Host", "getVMList", "fullStatus=maybe").returncode == 4
    # any other error reply (here a storage error, 210): 5
    other = ["StorageDomain", "create", f"storagedomainID={uuid.uuid4()}",
             "domainType=localfs", "typeArgs=/nonexistent-path", "name=x", "domainClass=data"]
    done = client(vdsmd, *other)
    assert done.returncode == 5
    assert json.loads(done.stderr)["code"] == 210
    legacy = subprocess.run(
        [str(VENV_BIN / "vdsm-client"), "--api", vdsmd.api, *other], capture_output=True,
        text=True, timeout=30, check=False,
        env={**os.environ, "VDSM_CLIENT_EXIT_CODES": "legacy"})
    assert legacy.returncode == 1
    done = client(vdsmd, "--help")
    assert done.returncode == 0
    assert "exit codes:" in done.stdout and "4  invalid params" in done.stdout


def test_a_missing_endpoint_fails_at_once(tmp_path: Path) -> None:
    # --timeout is ten minutes: waiting for a reply would outlast the subprocess timeout
    for where in (tmp_path / "none" / "api.sock", tmp_path / "stale.sock"):
        if where.name == "stale.sock":  # a socket file nobody listens on
            stale = socket.socket(socket.AF_UNIX)
            stale.bind(str(where))
            stale.close()
        done = subprocess.run([str(VENV_BIN / "vdsm-client"), "--api", f"ipc://{where}",
                               "--timeout", "600", "Host", "ping"], capture_output=True,
                              text=True, timeout=30, check=False)
        assert done.returncode == 3
        assert "no agent at" in done.stderr and "vdsmd" in done.stderr
        done = subprocess.run([str(VENV_BIN / "vdsm-client"), "--events", f"ipc://{where}",
                               "events"], capture_output=True, text=True, timeout=30,
                              check=False)
        assert done.returncode == 3 and "--events" in done.stderr


def test_output_formats_on_the_command_line(vdsmd: Vdsmd) -> None:
    done = client(vdsmd, "Actors", "list", "-o", "table")
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["PATH", "CLASS", "STATE"]
    assert any(line.split()[0] == "/host/stats" for line in lines[1:])
    as_yaml = yaml.safe_load(client(vdsmd, "-o", "yaml", "Host", "getCapabilities").stdout)
    as_json = json.loads(client(vdsmd, "Host", "getCapabilities").stdout)
    assert as_yaml["hostUUID"] == as_json["hostUUID"]
    done = client(vdsmd, "VM", "list")
    assert (done.returncode, done.stdout.strip()) == (0, "no VMs")


def test_help_marks_declared_but_unimplemented_verbs(vdsmd: Vdsmd) -> None:
    listing = client(vdsmd, "VM", "--help").stdout
    assert "(not implemented)" not in next(line for line in listing.splitlines()
                                           if line.strip().startswith("migrate"))
    assert "list" in listing  # the client's own command
    assert "NOT IMPLEMENTED" not in client(vdsmd, "Host", "ping", "--help").stdout
    missing = next((v for v in SCHEMA if not v.implemented), None)
    if missing is None:
        return  # every declared verb is implemented: nothing to mark
    listing = client(vdsmd, missing.namespace, "--help").stdout
    assert "(not implemented)" in next(line for line in listing.splitlines()
                                       if line.strip().startswith(missing.short_name + " ")
                                       or line.strip() == missing.short_name
                                       or line.strip().startswith(missing.short_name + "("))
    assert "NOT IMPLEMENTED" in client(vdsmd, missing.namespace, missing.short_name,
                                       "--help").stdout


def test_the_schema_says_which_verbs_the_agent_implements(vdsmd: Vdsmd) -> None:
    """Every verb, with a param no verb has: a declared-but-unimplemented verb answers
    -32601 whatever its params, an implemented one refuses the param (-32602). So the
    schema's ``implemented`` flags (api.md, --help) match the agent's verb table."""
    wrong = []
    with Client(vdsmd.api, timeout=10) as c:
        for verb in SCHEMA:
            try:
                c.call(verb.name, {"__probe__": 1})
            except ClientError as e:
                expected = -32602 if verb.implemented else -32601
                if e.code != expected:
                    wrong.append(f"{verb.name}: {e.code} {e.message}")
            else:
                wrong.append(f"{verb.name} accepted an unknown param")
    assert not wrong, wrong


def test_task_wait_of_an_unknown_task(vdsmd: Vdsmd) -> None:
    done = client(vdsmd, "Task", "wait", str(uuid.uuid4()))
    assert done.returncode == 1
    assert json.loads(done.stderr)["code"] == 401
    assert client(vdsmd, "Task", "wait").returncode == 2
    assert client(vdsmd, "Host", "ping", "--wait").returncode == 2  # starts no task


def test_job_wait_of_an_unknown_job(vdsmd: Vdsmd) -> None:
    job_id = str(uuid.uuid4())
    done = client(vdsmd, "Job", "wait", job_id)
    assert done.returncode == 1, done.stderr
    assert done.stderr == (f"vdsm-client: no job {job_id} on this host (Host.getJobs lists "
                           "the jobs running and those ended within [jobs] keep_finished; a "
                           "storage task: vdsm-client Task wait)\n")
    assert done.stdout == ""
    assert client(vdsmd, "job", "wait", f"jobID={job_id}").returncode == 1  # the param form
    # what is not a job id is refused before anything is asked; a missing one is usage
    for bad in ("../../etc/passwd", job_id.upper() + "x", "", "'; rm -rf /"):
        refused = client(vdsmd, "Job", "wait", bad)
        assert refused.returncode == 4, (bad, refused.stderr)
        assert json.loads(refused.stderr)["data"] == {"param": "jobID"}
    for words in ([], [job_id, job_id], ["vmID=x"]):
        assert client(vdsmd, "Job", "wait", *words).returncode == 2, words
    # --wait: a verb that starts no job and no task is refused (usage), as is VM.create
    # without restoreState (it starts no job then): nothing is sent
    assert client(vdsmd, "VM", "pause", f"vmID={job_id}", "--wait").returncode == 2
    vm_id = str(uuid.uuid4())
    done = client(vdsmd, "VM", "create", f"vmID={vm_id}",
                  'vmParams={"vmName": "x", "memSize": 96}', "--wait")
    assert done.returncode == 2 and "only with vmParams.restoreState" in done.stderr
    assert vdsmd.call("Host.getVMList") == []


def test_console_exit_status_and_closed_pipes(vdsmd: Vdsmd) -> None:
    base = [str(VENV_BIN / "vdsm-console"), "--api", vdsmd.api, "--events", vdsmd.events]
    ok = subprocess.run([*base, "-c", "tree", "-c", "inspect /host/stats"],
                        capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stdout
    bad = subprocess.run([*base, "-c", "tree", "-c", "inspect /nowhere"], capture_output=True,
                         text=True, timeout=30, check=False)
    assert bad.returncode == 1
    assert "error 103" in bad.stdout
    assert subprocess.run([*base, "-c", "bogus"], capture_output=True, timeout=30,
                          check=False).returncode == 1
    typed = subprocess.run([*base, "-c", "call Host.getVMList fullStatus=maybe"],
                           capture_output=True, text=True, timeout=30, check=False)
    assert typed.returncode == 1 and "true or false" in typed.stdout
    # the reader of the output went away (| head): no traceback
    for tool, args in (("messaging.console", ["--api", vdsmd.api, "-c", "tree"]),
                       ("messaging.cli.main", ["--api", vdsmd.api, "Actors", "list"])):
        done = closed_stdout(tool, args)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def closed_stdout(module: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """``module``'s main(args) writing to a pipe whose reader is gone."""
    code = ("import os, sys\n"
            "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
            f"from {module} import main\n"
            f"sys.exit(main({args!r}))\n")
    return subprocess.run([sys.executable, "-c", code], cwd=TOP, capture_output=True,
                          text=True, timeout=30, check=False)


def test_console_top_shows_message_rates(vdsmd: Vdsmd) -> None:
    done = subprocess.run(
        [str(VENV_BIN / "vdsm-console"), "--api", vdsmd.api, "-c", "top 1.5"],
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0
    header = [line for line in done.stdout.splitlines() if line.startswith("ACTOR")]
    assert header and "MSG/S" in header[-1] and "MBOX" in header[-1] and "CPU%" in header[-1]
    assert "/host/stats" in done.stdout
