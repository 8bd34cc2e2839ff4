"""Real keeper processes over a real file domain, driven the way vdsmd's link drives them.

:class:`KeeperRig` makes a localfs-style domain (the master of a new pool) under ``tmp``;
:class:`RunningKeeper` starts ``python -m actors.storage.spm.keeper`` with a config for one
host id, connects a PAIR socket, sends heartbeats from a thread (which a test can pause, as a
stalled vdsmd would), and keeps the latest state the keeper pushed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import zmq

from actors.storage import poolmeta
from actors.storage.locator import DomainLocator
from actors.storage.sd.filedomain import FileDomain
from actors.storage.spm.keeperconf import KeeperConfig
from messaging.client import Client
from tests.harness import TOP, wait_for

TIMING = {"lease": 3.0, "renew_interval": 0.5, "io_timeout": 0.5, "agent_timeout": 1.5,
          "kill_grace": 0.3}
HEARTBEAT = 0.2


class KeeperRig:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.mnt = tmp / "mnt"
        self.conn = self.mnt / "server:_export"
        self.conn.mkdir(parents=True)
        self.sp_uuid = str(uuid.uuid4())
        self.master = str(uuid.uuid4())
        FileDomain.create(self.conn, self.master, name="master")
        self.locator = DomainLocator(mnt_root=self.mnt, links_dir=tmp / "links")
        poolmeta.create_pool(self.locator, sp_uuid=self.sp_uuid, name="pool",
                             master_sd=self.master, master_version=1, domain_list=[])
        self.dom_md = self.conn / self.master / "dom_md"
        self.journal = tmp / "journal"
        self.keepers: list[RunningKeeper] = []

    def config(self, host_id: int, **changes: Any) -> KeeperConfig:
        values: dict[str, Any] = {
            "sp_uuid": self.sp_uuid, "host_id": host_id, "owner": f"host-{host_id}",
            "ids_path": str(self.dom_md / "ids"), "leases_path": str(self.dom_md / "leases"),
            "run_dir": str(self.tmp / f"run{host_id}"), "parent_pid": os.getpid(),
            "max_hosts": 8, "journal_dir": str(self.journal),
            "writer": {"sp_uuid": self.sp_uuid, "master_sd": self.master, "host_id": host_id,
                       "mnt_root": str(self.mnt), "links_dir": str(self.tmp / "links"),
                       "io_timeout": 0.5, "mail_hosts": 8, "log_level": "DEBUG"},
            **TIMING,
        }
        values.update(changes)
        return KeeperConfig(**values)

    def keeper(self, host_id: int, **changes: Any) -> RunningKeeper:
        keeper = RunningKeeper(self.config(host_id, **changes), self.tmp)
        self.keepers.append(keeper)
        return keeper

    def cleanup(self) -> None:
        for keeper in self.keepers:
            keeper.close()


class RunningKeeper:
    def __init__(self, config: KeeperConfig, tmp: Path) -> None:
        self.config = config
        self.log_path = tmp / f"keeper{config.host_id}.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "actors.storage.spm.keeper"], stdin=subprocess.PIPE,
                stdout=log, stderr=subprocess.STDOUT, cwd=TOP,
                env={**os.environ, "PYTHONPATH": str(TOP)})
        assert self.proc.stdin is not None
        self.proc.stdin.write(config.to_json().encode())
        self.proc.stdin.close()
        self.context: zmq.Context[Any] = zmq.Context()
        self.state: dict[str, Any] = {}
        self.states = 0
        self.beating = threading.Event()
        self.beating.set()
        self._commands: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self.context.socket(zmq.PAIR)
        sock.linger = 0
        sock.connect(self.config.endpoint)
        next_hb = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                with self._lock:
                    commands, self._commands = self._commands, []
                for op in commands:
                    sock.send(msgpack.packb({"op": op}))
                if now >= next_hb and self.beating.is_set():
                    sock.send(msgpack.packb({"op": "hb"}))
                    next_hb = now + HEARTBEAT
                if sock.poll(50):
                    message = msgpack.unpackb(sock.recv(), raw=False)
                    if message.get("ev") == "state":
                        self.state = message
                        self.states += 1
        finally:
            sock.close(linger=0)

    def command(self, op: str) -> None:
        with self._lock:
            self._commands.append(op)

    @property
    def status(self) -> str:
        return str(self.state.get("spm", {}).get("status", ""))

    @property
    def writer_ready(self) -> bool:
        writer = self.state.get("writer") or {}
        return bool(writer.get("ready")) and not writer.get("exited")

    def wait_spm(self, timeout: float) -> dict[str, Any]:
        try:
            wait_for(lambda: self.status == "SPM" and self.writer_ready, timeout)
        except TimeoutError:
            raise TimeoutError(f"host {self.config.host_id} is not SPM: {self.state}\n"
                               f"{self.log()}") from None
        return self.state

    def wait_host_id(self, timeout: float) -> None:
        wait_for(lambda: self.state.get("hostId", {}).get("state") == "live", timeout,
                 what=f"host {self.config.host_id}'s host id")

    def writer_call(self, method: str, params: dict[str, Any] | None = None,
                    timeout: float = 10.0) -> Any:
        endpoint = self.state["writer"]["endpoint"]
        with Client(endpoint, timeout=timeout) as c:
            return c.call(method, params or {})

    @property
    def writer_pid(self) -> int:
        return int((self.state.get("writer") or {}).get("pid", 0))

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def close(self) -> None:
        self.signal(signal.SIGCONT)
        self._stop.set()
        self._thread.join(5)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        pid = self.writer_pid
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.context.term()
