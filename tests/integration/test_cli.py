"""vdsm-client and vdsm-console driven as a person or a script would."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import TOP, Vdsmd

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


def test_json_values_are_json_and_the_rest_strings(vdsmd: Vdsmd) -> None:
    done = client(vdsmd, "Actors", "inspect", "path=/host")
    assert done.returncode == 0
    done = client(vdsmd, "Actors", "inspect", "path=5")
    assert done.returncode == 1
    assert "expected a string" in json.loads(done.stderr)["message"]


def test_events_stream_one_json_line_each(vdsmd: Vdsmd) -> None:
    proc = subprocess.Popen(
        [str(VENV_BIN / "vdsm-client"), "--events", vdsmd.events, "events", "|actors|",
         "--count", "2", "--duration", "20"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.0)
        vdsmd.call("Actors.crash", path="/host/stats")
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["payload"]["event"] for e in lines] == ["failed", "restarted"]
    assert all(e["topic"] == "|actors|status|/host/stats" for e in lines)
    assert all("notify_time" in e["payload"] for e in lines)


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
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "50",
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
        term.type("watch |actors| 8", "Enter")
        term.wait_for("watching events")
        time.sleep(0.5)
        vdsmd.call("Actors.crash", path="/host/stats", reason="console drill")
        term.wait_for("console drill")
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
