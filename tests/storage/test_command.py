from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from actors.storage.command import Aborter, die_with_caller, display, run, stderr_tail
from messaging.errors import StorageCommandError, StorageTimeout, TaskAborted
from tests.harness import TOP, wait_for


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.timeout(10)
def test_run_captures_output() -> None:
    result = run(["sh", "-c", "echo out; echo err >&2"], timeout=5)
    assert result.rc == 0
    assert result.out == "out\n"
    assert result.err == "err\n"
    assert result.args[0] == "sh"


@pytest.mark.timeout(10)
def test_arguments_are_never_a_shell() -> None:
    result = run(["echo", "$(id)", ";", "ls"], timeout=5)
    assert result.out == "$(id) ; ls\n"


@pytest.mark.timeout(10)
def test_failure_raises_with_rc_and_stderr_tail() -> None:
    with pytest.raises(StorageCommandError) as info:
        run(["sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3"], timeout=5)
    err = info.value
    assert err.code == 212
    assert err.fields["rc"] == 3
    assert err.fields["reason"] == "first; the reason"
    assert "exit 3" in err.message


@pytest.mark.timeout(10)
def test_ok_codes_and_no_check() -> None:
    assert run(["sh", "-c", "exit 2"], timeout=5, ok_codes=(0, 2)).rc == 2
    assert run(["false"], timeout=5, check=False).rc == 1


@pytest.mark.timeout(10)
def test_stdin_and_locale() -> None:
    assert run(["cat"], timeout=5, stdin=b"data").stdout == b"data"
    assert run(["sh", "-c", "echo $LC_ALL"], timeout=5).out == "C\n"


@pytest.mark.timeout(15)  # below the commands' 30 s: returning at all means they were killed
def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "background.pid"
    with pytest.raises(StorageTimeout) as info:
        run(["sh", "-c", f"sleep 30 & echo $! > {pid_file}; sleep 30"], timeout=0.5,
            name="sleeper")
    assert info.value.retryable
    assert "sleeper" in info.value.message
    background = int(pid_file.read_text())
    wait_for(lambda: not alive(background), 5, what="the background sleep killed too")


@pytest.mark.timeout(15)
def test_abort_from_another_thread_kills_the_command() -> None:
    aborter = Aborter("task-1")
    timer = threading.Timer(0.3, aborter.abort, kwargs={"reason": "Task.stop"})
    timer.start()
    try:
        with pytest.raises(TaskAborted) as info:
            run(["sleep", "30"], timeout=20, abort=aborter)  # the test's timeout is below 20
    finally:
        timer.cancel()
    assert info.value.fields == {"taskID": "task-1", "reason": "Task.stop"}


@pytest.mark.timeout(10)
def test_aborted_before_start_runs_nothing() -> None:
    aborter = Aborter()
    aborter.abort()
    assert aborter.aborted
    with pytest.raises(TaskAborted):
        run(["true"], timeout=5, abort=aborter)


@pytest.mark.timeout(5)
def test_stderr_tail_and_display() -> None:
    assert stderr_tail(b"a\n\n  b  \n") == "a; b"
    assert stderr_tail(b"x" * 1000, limit=10) == "x" * 10
    assert display(["a b", "c"]) == "'a b' c"
    assert display(["x" * 500], limit=20).endswith("...")


CALLER = """
import sys
from actors.storage import command
command.set_new_session(False)  # as the SPM's writer does
command.run(["sleep", "60"], timeout=60)
"""


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


@pytest.mark.timeout(30)
def test_a_command_whose_caller_died_before_its_death_signal_was_set_does_not_run(
    tmp_path: Path,
) -> None:
    """The window between the fork and setpriv's prctl: a caller killed there would send no
    death signal, so the command checks that its parent is still the caller before it
    starts. Here the "caller" named is another process (pid 1), as after such a death."""
    marker = tmp_path / "ran"
    argv = ("sh", "-c", 'touch "$0"', str(marker))
    gone = subprocess.run(die_with_caller(argv, parent=1), check=False, timeout=20)
    assert gone.returncode == 125 and not marker.exists()
    here = subprocess.run(die_with_caller(argv), check=False, timeout=20)
    assert here.returncode == 0 and marker.exists()
    # the command's words stay words: no shell reads them
    odd = tmp_path / "a b; touch pwned $(id)"
    subprocess.run(die_with_caller(("touch", str(odd))), check=True, timeout=20, cwd=tmp_path)
    assert odd.exists() and not (tmp_path / "pwned").exists()


@pytest.mark.timeout(30)
def test_a_command_in_the_callers_group_dies_with_its_caller() -> None:
    """The writer's mode: the command shares the caller's process group and dies when the
    caller is killed alone (not its group), so it never outlives the writer."""
    caller = subprocess.Popen([sys.executable, "-c", CALLER], start_new_session=True,
                              cwd=TOP, env={**os.environ, "PYTHONPATH": str(TOP)})
    try:
        sleep = wait_for(lambda: _children(caller.pid), 20, what="the command to start")[0]
        assert os.getpgid(sleep) == caller.pid  # in the caller's group, not a new session
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait(10)
        wait_for(lambda: not alive(sleep), 10, what="the command to die with its caller")
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait(10)
        try:
            os.killpg(caller.pid, signal.SIGKILL)  # anything left in its group
        except ProcessLookupError:
            pass
