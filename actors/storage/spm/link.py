"""The lease actor's link thread: runs the keeper process and speaks to it.

One thread per connected pool owns everything blocking about the keeper: finding the master
domain's lease areas (storage I/O that may hang), starting the keeper, the PAIR socket to it,
the heartbeats, and restarting the keeper (with a backoff) when it dies. Every state the
keeper pushes becomes a :class:`~actors.storage.spm.board.LeaseState` handed to ``on_state``
(which writes the board and tells the actor). Commands from the actor (acquire, release) go
through a queue and a wake-up pipe. Nothing here is called on an actor's thread.
"""

from __future__ import annotations

import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from actors.storage.spm.board import UNKNOWN, LeaseState
from actors.storage.spm.keeperconf import KeeperConfig
from messaging.wakepipe import WakePipe

log = logging.getLogger(__name__)

RESTART_INITIAL = 0.5
RESTART_MAX = 10.0

ConfigSource = Callable[[], KeeperConfig]
"""Builds the keeper's config (finds the master domain's areas: storage I/O, may raise)."""


class KeeperLink:
    def __init__(self, *, sp_uuid: str, make_config: ConfigSource, heartbeat: float,
                 on_state: Callable[[LeaseState], None],
                 context: zmq.Context[Any]) -> None:
        self.sp_uuid = sp_uuid
        self.make_config = make_config
        self.heartbeat = heartbeat
        self.on_state = on_state
        self.context = context
        self.restarts = 0
        self.last_error = ""
        self._commands: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._wakeup = WakePipe()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._config: KeeperConfig | None = None
        self._thread = threading.Thread(target=self._run, name=f"keeper-link-{sp_uuid[:8]}",
                                        daemon=True)

    # --- called by the actor -------------------------------------------------------------

    def begin(self) -> None:
        self._thread.start()

    def command(self, op: str) -> None:
        self._commands.put(op)
        self._wakeup.wake()

    def halt(self, timeout: float) -> None:
        """Ask the keeper to release and exit, and wait for it (bounded)."""
        self._stopping.set()
        self._wakeup.wake()
        self._thread.join(timeout)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            log.error("keeper %d did not exit: killed", proc.pid)
            proc.kill()
            proc.wait(5)
        self._wakeup.close()

    @property
    def keeper_pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # --- the thread ------------------------------------------------------------------------

    def _report(self, reason: str) -> None:
        self.on_state(LeaseState(self.sp_uuid, status=UNKNOWN, reason=reason))

    def _run(self) -> None:
        delay = RESTART_INITIAL
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._serve_one_keeper()
            except Exception as e:  # noqa: BLE001 - the keeper is restarted; the reason kept
                self.last_error = str(e)
                log.error("pool %s: keeper trouble: %s", self.sp_uuid, e)
                self._report(f"keeper not running: {e}")
            if self._stopping.is_set():
                break
            if time.monotonic() - started > RESTART_MAX * 3:
                delay = RESTART_INITIAL
            self.restarts += 1
            self._stopping.wait(delay)
            delay = min(RESTART_MAX, delay * 2)

    def _serve_one_keeper(self) -> None:
        config = self.make_config()
        self._config = config
        proc = subprocess.Popen([sys.executable, "-m", "actors.storage.spm.keeper"],
                                stdin=subprocess.PIPE, close_fds=True)
        self._proc = proc
        assert proc.stdin is not None
        proc.stdin.write(config.to_json().encode())
        proc.stdin.close()
        log.info("pool %s: keeper started (pid %d)", self.sp_uuid, proc.pid)
        sock: zmq.Socket[bytes] = self.context.socket(zmq.PAIR)
        sock.linger = 0
        sock.sndhwm = 100
        try:
            sock.connect(config.endpoint)
            self._talk(sock, proc, config)
        finally:
            sock.close(linger=0)

    def _talk(self, sock: zmq.Socket[bytes], proc: subprocess.Popen[bytes],
              config: KeeperConfig) -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wakeup.fd, zmq.POLLIN)
        next_hb = 0.0
        self._send(sock, "state")
        while True:
            if self._stopping.is_set():
                self._send(sock, "shutdown")
                self._wait_exit(proc, config.io_timeout * 4 + 2.0)
                return
            now = time.monotonic()
            if now >= next_hb:
                self._send(sock, "hb")
                next_hb = now + self.heartbeat
            events = dict(poller.poll(int(max(0.0, next_hb - now) * 1000) + 1))
            if self._wakeup.fd in events:
                self._wakeup.drain()
                while True:
                    try:
                        self._send(sock, self._commands.get_nowait())
                    except queue.Empty:
                        break
            if sock in events:
                self._receive(sock, config)
            rc = proc.poll()
            if rc is not None:
                raise RuntimeError(f"the keeper (pid {proc.pid}) exited with {rc}")

    def _send(self, sock: zmq.Socket[bytes], op: str) -> None:
        try:
            sock.send(msgpack.packb({"op": op}), zmq.NOBLOCK)
        except zmq.Again:
            log.debug("keeper not reading: %s dropped", op)

    def _receive(self, sock: zmq.Socket[bytes], config: KeeperConfig) -> None:
        for _ in range(100):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = msgpack.unpackb(frame, raw=False)
            except (ValueError, msgpack.ExtraData, msgpack.FormatError):
                continue
            if isinstance(message, dict) and message.get("ev") == "state":
                self.on_state(to_state(message, config))

    @staticmethod
    def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("keeper %d did not stop within %g s: killed", proc.pid, timeout)
            proc.kill()
            proc.wait(5)


def to_state(message: dict[str, Any], config: KeeperConfig) -> LeaseState:
    spm = message.get("spm") or {}
    host = message.get("hostId") or {}
    writer = message.get("writer") or {}
    return LeaseState(
        sp_uuid=config.sp_uuid,
        status=str(spm.get("status", UNKNOWN)),
        lver=int(spm.get("lver", 0)),
        spm_id=int(spm.get("spmId", -1)),
        spm_lver=int(spm.get("spmLver", -1)),
        deadline=float(message.get("deadline", 0.0)),
        margin=config.margin,
        writer_endpoint=str(writer.get("endpoint", "")) if not writer.get("exited") else "",
        writer_pid=int(writer.get("pid", 0)),
        writer_ready=bool(writer.get("ready")) and not writer.get("exited"),
        reason=str(spm.get("reason", "")),
        keeper_pid=int(message.get("pid", 0)),
        host_id_state=str(host.get("state", "")),
        generation=int(host.get("generation", 0)),
        attempts=int(spm.get("attempts", 0)),
        detail=message,
    )
