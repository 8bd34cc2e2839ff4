"""Run vdsmd as a real process on temporary endpoints, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from messaging.client import CallTimeout, Client, ClientError, Subscriber

TOP = Path(__file__).resolve().parent.parent


class Vdsmd:
    """One vdsmd process; ``start()`` waits until ``Host.ping`` answers."""

    def __init__(
        self,
        workdir: Path,
        *,
        config: str = "",
        extra_args: tuple[str, ...] = (),
        libvirt_uri: str = "qemu:///system",
        host_id: int = 1,
        own_run_dir: bool = True,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        """``own_run_dir`` False: no --run-dir (vdsmd derives one from its state dir).
        ``wrapper``: a command that runs vdsmd (``ip netns exec NS``: in a namespace)."""
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api = f"ipc://{workdir}/run/api.sock"
        self.events = f"ipc://{workdir}/run/events.sock"
        self.state_dir = workdir / "state"
        self.log_path = workdir / "vdsmd.log"
        self.config_path = workdir / "vdsmd.toml"
        self.config_path.write_text(config)
        self.libvirt_uri = libvirt_uri
        self.host_id = host_id
        self.extra_args = extra_args
        self.own_run_dir = own_run_dir
        self.wrapper = wrapper
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            *self.wrapper,
            sys.executable, "-m", "actors.daemon",
            "--config", str(self.config_path),
            "--api", self.api,
            "--events", self.events,
            "--state-dir", str(self.state_dir),
            *(("--run-dir", str(self.workdir / "run")) if self.own_run_dir else ()),
            "--libvirt-uri", self.libvirt_uri,
            "--host-id", str(self.host_id),
            "--log-level", "DEBUG",
            *self.extra_args,
        ]

    def start_process(self) -> None:
        """Start the process without waiting for it to answer."""
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONPATH": str(TOP)}
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=TOP, env=env,
            start_new_session=True,
        )
        log.close()

    def start(self, timeout: float = 30.0) -> Vdsmd:
        self.start_process()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vdsmd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with self.client(timeout=1.0) as c:
                    if c.call("Host.ping") is True:
                        return self
            except (CallTimeout, ClientError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"vdsmd did not answer within {timeout} s:\n{self.log()}")

    def wait_ready(self, timeout: float = 60.0) -> Vdsmd:
        """Until the first VM recovery pass is done (VM verbs answer, not code 100)."""
        def ready() -> bool:
            try:
                self.call("Host.getVMList")
            except ClientError as e:
                if e.code == 100:
                    return False
                raise
            return True

        wait_for(ready, timeout, interval=0.05, what="VM recovery")
        return self

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.api, timeout=timeout)

    def call(self, method: str, timeout: float = 60.0, **params: Any) -> Any:
        with self.client(timeout=timeout) as c:
            return c.call(method, params)

    def subscriber(self, *prefixes: str) -> Subscriber:
        """Events of ``prefixes``, connected: what a request sent from now on publishes
        reaches it (unless the daemon is not listening yet: it then connects by itself)."""
        return connected(Subscriber(self.events, prefixes or ("",)))

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit status (SIGKILL after ``timeout``)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@contextmanager
def running_vdsmd(workdir: Path, **kwargs: Any) -> Iterator[Vdsmd]:
    daemon = Vdsmd(workdir, **kwargs)
    try:
        yield daemon.start()
    finally:
        try:
            daemon.stop(timeout=30)
        finally:
            daemon.kill()


def connected(sub: Subscriber, timeout: float = 30.0) -> Subscriber:
    """``sub`` once its connection to the publisher did its handshake (a SUB socket misses
    what is published before its subscription reaches the publisher), or at once when
    nothing listens there yet."""
    sub.wait_connected(timeout)
    return sub


def wait_for(predicate: Any, timeout: float, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def next_event(sub: Subscriber, predicate: Any, timeout: float) -> tuple[str, dict[str, Any]]:
    """The first event for which ``predicate(topic, payload)`` holds, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no matching event")
        event = sub.receive(remaining)
        if event is not None and predicate(*event):
            return event


def syscall(tid: int) -> list[str]:
    """/proc/self/task/<tid>/syscall of a thread of this process: the system call it is
    blocked in and its arguments (empty when the thread is gone)."""
    try:
        return Path(f"/proc/self/task/{tid}/syscall").read_text().split()
    except OSError:
        return []


def blocked_without_timeout(tid: int) -> bool:
    """The thread waits in poll(2) with an infinite timeout (or in ppoll(2) with none): it
    sleeps until a file descriptor wakes it, never on a timer (x86_64 system call numbers)."""
    fields = syscall(tid)
    if len(fields) < 4 or fields[0] not in ("7", "271"):
        return False
    timeout = int(fields[3], 16)
    if fields[0] == "7":  # poll(fds, nfds, int timeout): -1, whatever the register's width
        return timeout & 0xFFFFFFFF == 0xFFFFFFFF
    return timeout == 0  # ppoll(fds, nfds, NULL, ...)
