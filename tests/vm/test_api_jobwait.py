"""Jobs followed from the command line: ``vdsm-client ... --wait`` on a verb that starts a
job (VM.hibernate, VM.create with restoreState) prints the job's progress and exits with its
outcome; ``vdsm-client Job wait JOBID`` follows a job started elsewhere. Real vdsmd, real
libvirt and TCG guests, vdsm-client as a real process."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from messaging.cli import wait
from messaging.client import ClientError
from tests import guest as g
from tests.harness import Vdsmd, wait_for
from tests.vm import agent as a

pytestmark = pytest.mark.libvirt

VENV_BIN = Path(sys.executable).parent
# Runs argv[1:] with SIGINT's default action, as a command typed at a terminal gets it.
INTERACTIVE = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
               "os.execv(sys.argv[1], sys.argv[1:])")
MIB = 1 << 20


@pytest.fixture
def vm_settings() -> dict[str, Any]:
    """Hooks may take a while: a test holds a job with one until it lets it go."""
    return {"hook_timeout": 120.0}


def client(agent: Vdsmd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "vdsm-client"), "--api", agent.api, *args],
                          capture_output=True, text=True, timeout=150, check=False)


@pytest.fixture
def forgetful(tmp_path: Path, hooks_dir: Path, conn: libvirt.virConnect) -> Iterator[Vdsmd]:
    """A vdsmd that forgets a job as soon as it ended ([jobs] keep_finished = 0)."""
    daemon = Vdsmd(tmp_path / "forgetful", config=a.config(hooks_dir)
                   + "[jobs]\nkeep_finished = 0.0\n")
    try:
        daemon.start()
        a.wait_ready(daemon)
        yield daemon
    finally:
        try:
            daemon.stop(timeout=30)
        finally:
            daemon.kill()
            a.destroy_owned(conn, a.owner(daemon))


def followed(done: subprocess.CompletedProcess[str], job_type: str,
             vm_id: str) -> tuple[dict[str, Any], list[str], str]:
    """The job --wait printed on stdout, its progress lines, and their common prefix; each
    line names the job, its kind and its VM."""
    job: dict[str, Any] = json.loads(done.stdout)
    prefix = f"job {job['id']} {job_type} of VM {vm_id}: "
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith(prefix) for line in lines), done.stderr
    assert (job["job_type"], job["vmID"]) == (job_type, vm_id)
    return job, lines, prefix


def destroyed(agent: Vdsmd, vm_id: str) -> None:
    with contextlib.suppress(ClientError):
        agent.call("VM.destroy", vmID=vm_id)


@pytest.mark.timeout(300)
def test_wait_follows_a_hibernation_and_a_restore(
        agent: Vdsmd, guest_image: g.GuestImage, hooks_dir: Path, tmp_path: Path) -> None:
    vm_id, params = a.new_id(), a.guest_params(guest_image)
    name, hibernation = params["vmName"], a.hibernation_dir(agent)
    agent.call("VM.create", vmID=vm_id, vmParams=params)
    try:
        a.wait_status(agent, vm_id, "Up")
        # a hibernation its hook refuses is a job that fails: --wait exits with its code
        # (6, a hook failed: 5) and says why
        refusing = a.hook(hooks_dir, "before_vm_hibernate", "10_no",
                          "echo 'not now' >&2\nexit 1\n")
        done = client(agent, "VM", "hibernate", f"vmID={name}",
                      f"hiberVolHandle={hibernation / 'refused.save'}", "--wait")
        assert done.returncode == 5, done.stderr
        job, lines, prefix = followed(done, "hibernate", vm_id)
        assert job["status"] == "failed" and job["error"]["code"] == 6, job
        assert lines[-1].startswith(f"{prefix}failed (code 6): ") and "not now" in lines[-1]
        assert a.status(agent, vm_id)["status"] == "Up"
        refusing.unlink()

        # the hibernation: --wait made up the job's id, printed its progress, exits 0
        state = hibernation / "state.save"
        done = client(agent, "VM", "hibernate", f"vmID={name}", f"hiberVolHandle={state}",
                      "--wait")
        assert done.returncode == 0, done.stderr
        job, lines, prefix = followed(done, "hibernate", vm_id)
        assert str(uuid.UUID(job["id"])) == job["id"]
        assert (job["status"], job["progress"]) == ("done", 100)
        # its bytes: the image QEMU wrote, all of it once done
        saved = state.stat().st_size
        assert saved > MIB and job["bytesDone"] == job["bytesTotal"] == saved, job
        assert lines[-1] == f"{prefix}done, 100%, {wait.size(saved)} of {wait.size(saved)}"
        for line in lines[:-1]:  # while it saved (if the first poll found it saving)
            assert re.fullmatch(re.escape(prefix) + r"(pending|running) \(saving\), \d+%"
                                r"(, [\d.]+ (B|KiB|MiB) so far)?", line), line
        stats = a.status(agent, vm_id)
        assert (stats["status"], stats["exitReason"]) == ("Down", "saved")
        # Job wait on the ended job: its outcome at once
        again = client(agent, "Job", "wait", job["id"], "-o", "yaml")
        assert again.returncode == 0, again.stderr
        assert again.stderr == f"{lines[-1]}\n" and "status: done" in again.stdout
        agent.call("VM.destroy", vmID=vm_id)

        # the restore, with a job id of our own (a UUID in capitals is the same id)
        restore = tmp_path / "restore.json"
        restore.write_text(json.dumps({**params, "restoreState": str(state)}))
        # a job id that is taken is refused by the agent: nothing starts, the image stays
        taken = client(agent, "VM", "create", f"vmID={vm_id}", f"vmParams=@{restore}",
                       f"jobID={job['id']}", "--wait")
        assert taken.returncode == 4, taken.stderr
        assert json.loads(taken.stderr)["data"] == {"param": "jobID"}
        assert a.error(lambda: a.status(agent, vm_id)).code == 1
        assert state.exists()
        restoring = a.new_id()
        done = client(agent, "VM", "create", f"vmID={vm_id}", f"vmParams=@{restore}",
                      f"jobID={restoring.upper()}", "--wait")
        assert done.returncode == 0, done.stderr
        job, lines, prefix = followed(done, "restore", vm_id)
        assert (job["id"], job["status"]) == (restoring, "done")
        # its bytes: the whole image read
        assert job["bytesDone"] == job["bytesTotal"] == saved, job
        assert lines[-1] == f"{prefix}done, 100%, {wait.size(saved)} of {wait.size(saved)}"
        a.wait_status(agent, vm_id, "Up")
        assert not state.exists()  # consumed by the restore
    finally:
        destroyed(agent, vm_id)


@pytest.mark.timeout(180)
def test_wait_on_a_job_that_fails_or_never_starts(agent: Vdsmd, tmp_path: Path) -> None:
    hibernation = a.hibernation_dir(agent)
    nobody = a.new_id()
    # refused at once (no such VM; a target the path policy refuses): an error reply, no job
    done = client(agent, "VM", "hibernate", f"vmID={nobody}",
                  f"hiberVolHandle={hibernation / 'x.save'}", "--wait")
    assert done.returncode == 1 and json.loads(done.stderr)["code"] == 1, done.stderr
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params())
    try:
        a.wait_status(agent, vm_id, "Up")
        done = client(agent, "VM", "hibernate", f"vmID={vm_id}",
                      f"hiberVolHandle={tmp_path / 'elsewhere.save'}", "--wait")
        assert done.returncode == 4 and json.loads(done.stderr)["code"] == -32602, done.stderr
        assert not (tmp_path / "elsewhere.save").exists()
        assert agent.call("Host.getJobs") == {}
        assert a.status(agent, vm_id)["status"] == "Up"
    finally:
        destroyed(agent, vm_id)

    # a restore from what is not a saved VM: the job fails (5, qemu/libvirt refused it);
    # --wait exits 5 with the job's message, and nothing is left of the VM
    junk = hibernation / "junk.save"
    junk.write_bytes(b"not a libvirt save image" * 100)
    restored = a.new_id()
    done = client(agent, "VM", "create", f"vmID={restored}",
                  f"vmParams={json.dumps(a.bare_params(restoreState=str(junk)))}", "--wait")
    assert done.returncode == 5, done.stderr
    job, lines, prefix = followed(done, "restore", restored)
    assert job["status"] == "failed" and job["error"]["code"] == 5, job
    assert lines[-1] == f"{prefix}failed (code 5): {job['error']['message']}"
    assert job["error"]["message"]
    # Task wait given this job's id: not found as a task, and pointed at Job wait
    mistaken = client(agent, "Task", "wait", job["id"])
    assert mistaken.returncode == 1, mistaken.stderr
    assert mistaken.stderr == (f"vdsm-client: {job['id']} is not a task but a job (restore "
                               f"of VM {restored}): vdsm-client Job wait {job['id']}\n")
    wait_for(lambda: not a.vm_actors(agent), 30, what="the actor to go")
    assert a.error(lambda: a.status(agent, restored)).code == 1
    assert junk.exists()


@pytest.mark.timeout(180)
def test_waiting_stops_at_the_wait_timeout_or_on_ctrl_c_and_the_job_goes_on(
        agent: Vdsmd, hooks_dir: Path, tmp_path: Path) -> None:
    # the hibernation's hook holds the job until the test creates ``go`` (at most 60 s)
    go = tmp_path / "go"
    a.hook(hooks_dir, "before_vm_hibernate", "10_hold",
           f"for i in $(seq 600); do [ -e {go} ] && exit 0; sleep 0.1; done\nexit 1\n")
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params())
    following: subprocess.Popen[str] | None = None
    try:
        a.wait_status(agent, vm_id, "Up")
        state = a.hibernation_dir(agent) / "held.save"
        done = client(agent, "VM", "hibernate", f"vmID={vm_id}", f"hiberVolHandle={state}",
                      "--wait", "--wait-timeout", "1")
        assert done.returncode == 3, done.stderr
        [job_id] = agent.call("Host.getJobs", job_type="hibernate")
        lines = done.stderr.splitlines()
        assert lines[0] == f"job {job_id} hibernate of VM {vm_id}: running (saving), 0%"
        assert lines[-1] == (f"vdsm-client: job {job_id} did not finish within 1 s (it goes "
                             f"on: vdsm-client Job wait {job_id})")
        assert done.stdout == ""
        # Job wait, stopped with Ctrl-C (SIGINT): says how to follow it again; the job goes on.
        # Started as from a terminal, with SIGINT's default action: a suite run in the
        # background of a shell without job control inherits SIGINT ignored, and Python
        # then keeps ignoring it (a fresh-clone run here failed that way).
        err = tmp_path / "follow.err"
        with err.open("w") as stderr:
            following = subprocess.Popen(
                [sys.executable, "-c", INTERACTIVE, str(VENV_BIN / "vdsm-client"),
                 "--api", agent.api, "Job", "wait", job_id],
                stdout=subprocess.PIPE, stderr=stderr, text=True)
        wait_for(lambda: "running (saving)" in err.read_text(), 60, interval=0.1,
                 what="Job wait to print the job")
        following.send_signal(signal.SIGINT)
        assert following.wait(30) == 130, err.read_text()
        assert err.read_text().splitlines()[-1] == (
            f"vdsm-client: stopped waiting; the job goes on: vdsm-client Job wait {job_id}")
        assert agent.call("Host.getJobs", job_ids=[job_id])[job_id]["status"] == "running"
        # let it go: Job wait follows it to its end
        go.touch()
        done = client(agent, "Job", "wait", job_id)
        assert done.returncode == 0, done.stderr
        size = wait.size(state.stat().st_size)
        assert done.stderr.splitlines()[-1] == \
            f"job {job_id} hibernate of VM {vm_id}: done, 100%, {size} of {size}"
        assert json.loads(done.stdout)["status"] == "done"
    finally:
        go.touch()
        if following is not None and following.poll() is None:
            following.kill()
            following.wait(10)
        destroyed(agent, vm_id)


@pytest.mark.timeout(120)
def test_a_job_forgotten_as_it_ends_is_known_by_its_event(forgetful: Vdsmd) -> None:
    agent = forgetful
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params())
    try:
        a.wait_status(agent, vm_id, "Up")
        state = a.hibernation_dir(agent) / "gone.save"
        done = client(agent, "--events", agent.events, "VM", "hibernate", f"vmID={vm_id}",
                      f"hiberVolHandle={state}", "--wait")
        assert done.returncode == 0, done.stderr
        job, lines, prefix = followed(done, "hibernate", vm_id)
        size = wait.size(state.stat().st_size)  # the end's event has the image's bytes
        assert job["status"] == "done" and lines[-1] == f"{prefix}done, 100%, {size} of {size}"
        assert agent.call("Host.getJobs") == {}  # forgotten: only its event told the end
        assert a.status(agent, vm_id)["exitReason"] == "saved"
        # Job wait on it now: not found, at once
        gone = client(agent, "--events", agent.events, "Job", "wait", job["id"])
        assert gone.returncode == 1 and f"no job {job['id']}" in gone.stderr
    finally:
        destroyed(agent, vm_id)
