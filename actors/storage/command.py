"""Run an external storage command: an argument list (never a shell), a timeout, an abort.

Every storage tool (qemu-img, losetup, lvm, mount) goes through :func:`run`. The child runs
in its own session with ``LC_ALL=C`` so that its messages are parseable and a signal to the
daemon does not reach it. On timeout or abort the whole process group is killed; a child that
does not die (stuck in the kernel on a frozen or vanished filesystem) is handed to a reaper
thread instead of being waited on, so the caller is never blocked past its timeout plus a
short grace.

A task runner aborts a long command (a full preallocation) from another thread through an
:class:`Aborter` passed to every command of the operation.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from actors.storage.bytecount import ByteCount, written_by
from actors.storage.workers import name_native_thread
from messaging.errors import StorageCommandError, StorageTimeout, TaskAborted

log = logging.getLogger(__name__)

KILL_GRACE = 5.0
"""Seconds to wait for a killed child to exit before abandoning it to the reaper."""

STDERR_TAIL = 600
"""Characters of stderr kept in an error's reason."""

COUNT_INTERVAL = 0.5
"""Seconds between two readings of a running command's written bytes."""

_new_session = True

_PARENT_CHECK = '[ "$PPID" = "$1" ] || exit 125; shift; exec "$@"'


def die_with_caller(argv: Sequence[str], *, parent: int | None = None) -> tuple[str, ...]:
    """``argv`` made to die with the process that runs it (``parent``: this one).

    util-linux's setpriv sets ``PR_SET_PDEATHSIG`` and execs the rest: no Python runs in the
    forked child. A parent killed after the fork but before that ``prctl`` would send no
    signal, so ``sh`` then checks that its parent is still the caller (its ``$PPID`` is read
    after the ``prctl``) and gives up (status 125) when it is not; else it execs ``argv``,
    which is passed as arguments, never as shell text."""
    caller = os.getpid() if parent is None else parent
    return ("setpriv", "--pdeathsig", "KILL", "--", "/bin/sh", "-c", _PARENT_CHECK, "sh",
            str(caller), *argv)


def set_new_session(new_session: bool) -> None:
    """Whether commands run in a session of their own (the default, so that they survive
    vdsmd: a VM's helper, a task that the next start recovers) or in the caller's process
    group, and die with the caller. The SPM's writer process sets False once at start: its
    commands must die with it, when the keeper kills its group and also when the writer is
    killed alone (its keeper died: the writer's parent-death signal kills only the writer,
    and a command left running would write on after the lease passed to another host).
    The death signal fires when the thread that started the command ends: every caller
    waits for its command on that thread (a process property, hence process-wide)."""
    global _new_session  # noqa: PLW0603 - one setting per process, set once at its start
    _new_session = new_session


class Aborter:
    """A thread-safe abort flag for one operation; :meth:`abort` kills its running command.

    ``label`` names the operation (a task id) in the :class:`TaskAborted` it raises.
    """

    def __init__(self, label: str = "") -> None:
        self.label = label
        #: the bytes the operation expects to write and has written (its commands report)
        self.bytes = ByteCount()
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._procs: set[subprocess.Popen[bytes]] = set()

    @property
    def aborted(self) -> bool:
        with self._lock:
            return self._reason is not None

    def abort(self, reason: str = "stopped") -> None:
        """Set the flag and kill the command running under it, if any. Idempotent."""
        with self._lock:
            if self._reason is None:
                self._reason = reason
            procs = list(self._procs)
        for proc in procs:
            _kill_group(proc)
        log.info("operation %s aborted (%s), %d command(s) killed", self.label, reason,
                 len(procs))

    def check(self) -> None:
        """Raise :class:`TaskAborted` when the operation was aborted."""
        with self._lock:
            reason = self._reason
        if reason is not None:
            raise TaskAborted(taskID=self.label or "-", reason=reason)

    def _register(self, proc: subprocess.Popen[bytes]) -> bool:
        """Track ``proc``; False (and nothing tracked) when already aborted."""
        with self._lock:
            if self._reason is not None:
                return False
            self._procs.add(proc)
            return True

    def _unregister(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)


@dataclass(frozen=True)
class CommandResult:
    args: tuple[str, ...]
    rc: int
    stdout: bytes
    stderr: bytes
    elapsed: float

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def stderr_tail(stderr: bytes, limit: int = STDERR_TAIL) -> str:
    """The last ``limit`` characters of ``stderr``, stripped, on one line per message."""
    text = stderr.decode("utf-8", "replace").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = "; ".join(lines)
    return joined[-limit:] if len(joined) > limit else joined


def display(args: Sequence[str], limit: int = 200) -> str:
    """A shell-quoted, length-capped rendering of ``args`` for messages and logs."""
    text = shlex.join(args)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if not _new_session:  # the child shares our group: kill only the child
        proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.kill()


def _reap_later(proc: subprocess.Popen[bytes], name: str) -> None:
    """Wait for a child stuck in the kernel on a daemon thread, so that it is reaped."""

    def reap() -> None:
        name_native_thread(f"reap-{proc.pid}")
        rc = proc.wait()
        log.warning("abandoned command %s (pid %d) finally exited with %d", name, proc.pid, rc)

    log.error("command %s (pid %d) does not die after SIGKILL (stuck in the kernel?): "
              "abandoned to a reaper thread", name, proc.pid)
    threading.Thread(target=reap, name=f"reap-{proc.pid}", daemon=True).start()


def _communicate(proc: subprocess.Popen[bytes], stdin: bytes | None, timeout: float,
                 abort: Aborter | None) -> tuple[bytes, bytes]:
    """``proc.communicate`` with ``timeout``; when the operation counts bytes, the command's
    count is read every :data:`COUNT_INTERVAL` seconds meanwhile."""
    if abort is None or not abort.bytes.expected:
        return proc.communicate(stdin, timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return proc.communicate(stdin, timeout=max(0.0, min(COUNT_INTERVAL, left)))
        except subprocess.TimeoutExpired:
            if left <= COUNT_INTERVAL:
                raise
        stdin = None  # communicate() sends the input once
        wrote = written_by(proc.pid)
        if wrote is not None:
            abort.bytes.command_wrote(wrote)


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    if env:
        merged.update(env)
    merged["LC_ALL"] = "C"
    return merged


def run(
    args: Sequence[str],
    *,
    timeout: float,
    abort: Aborter | None = None,
    check: bool = True,
    ok_codes: Collection[int] = (0,),
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> CommandResult:
    """Run ``args`` and return its result.

    Raises :class:`StorageCommandError` when ``check`` and the exit code is not in
    ``ok_codes``; :class:`StorageTimeout` after ``timeout`` seconds (the child is killed);
    :class:`TaskAborted` when ``abort`` fired before or during the command.
    ``name`` replaces the full command line in messages (e.g. for long ``--config`` args).
    """
    argv = tuple(args)
    if not argv:
        raise ValueError("empty command")
    label = name or display(argv)
    if abort is not None:
        abort.check()
    started = time.monotonic()
    proc = subprocess.Popen(
        argv if _new_session else die_with_caller(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
        start_new_session=_new_session,
        env=_environment(env),
    )
    if abort is not None and not abort._register(proc):
        _kill_group(proc)
    try:
        try:
            out, err = _communicate(proc, stdin, timeout, abort)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            try:
                proc.communicate(timeout=KILL_GRACE)
            except subprocess.TimeoutExpired:
                _reap_later(proc, label)
            raise StorageTimeout(timeout=timeout, reason=label) from None
    finally:
        if abort is not None:
            abort._unregister(proc)
    elapsed = time.monotonic() - started
    result = CommandResult(argv, proc.returncode, out, err, elapsed)
    log.debug("%s: rc=%d in %.3f s", label, result.rc, elapsed)
    if abort is not None:
        abort.check()
    if check and result.rc not in ok_codes:
        raise StorageCommandError(
            command=label,
            rc=result.rc,
            reason=stderr_tail(err) or stderr_tail(out) or "no message",
            data={"rc": result.rc},
        )
    return result
