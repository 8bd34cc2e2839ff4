"""The run and state directories' locks, with real files, flock and processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actors.dirlock import DirectoryInUse, DirLock
from tests.harness import TOP, wait_for

pytestmark = pytest.mark.timeout(60)


def test_a_second_lock_on_a_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = DirLock(tmp_path / "run", "--run-dir")
    first.acquire()
    try:
        assert (tmp_path / "run" / "vdsmd.lock").read_text() == f"{os.getpid()}\n"
        second = DirLock(tmp_path / "run", "--run-dir")
        with pytest.raises(DirectoryInUse, match=rf"pid {os.getpid()}\).*own --run-dir"):
            second.acquire()
        assert not second.held
    finally:
        first.release()
    second.acquire()  # free again once released
    second.release()


def test_a_dead_holders_lock_does_not_block_and_its_children_never_hold_it(
    tmp_path: Path,
) -> None:
    """A holder that dies leaves its lock file behind; a command it started that outlives
    it (as a qemu-img in its own session does) must not keep the lock."""
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        sys.path.insert(0, {str(TOP)!r})
        from pathlib import Path
        from actors.dirlock import DirLock
        DirLock(Path({str(tmp_path / "state")!r}), "--state-dir").acquire()
        child = subprocess.Popen(["sleep", "60"], close_fds=False, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(child.pid, flush=True)
        os.kill(os.getpid(), 9)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    orphan = int(done.stdout.split()[0])
    try:
        assert (tmp_path / "state" / "vdsmd.lock").exists()
        lock = DirLock(tmp_path / "state", "--state-dir")
        lock.acquire()
        lock.release()
    finally:
        os.kill(orphan, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{orphan}").exists()
                 or "Z" in Path(f"/proc/{orphan}/stat").read_text().split()[2], 10)
