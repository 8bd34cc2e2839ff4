"""Several real vdsmd processes ("hosts") sharing one storage directory, as one pool.

Each host has its own work dir (state, run dir, endpoints), its own host id and host UUID,
and connects the same shared directory as a localfs connection, so all of them see the same
domain files, lease areas and mailbox. :meth:`Cluster.pool` creates a domain and a pool on
host 1 and connects every host to it. The SPM is whichever host a test makes it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from actors.storage.spm import journal
from messaging.client import ClientError
from tests.harness import Vdsmd, wait_for
from tests.storage.helpers import detach, loop_devices_of, unmount
from tests.storage.rig import SPM_CONFIG, mounts_under

CONFIG = ("[storage]\nmonitor_interval = 1\nmonitor_timeout = 2\n" + SPM_CONFIG
          + "[mailbox]\npoll_interval = 0.05\nhosts = 8\n")
LEASE, IO, RENEW = 3.0, 0.5, 0.5  # as SPM_CONFIG says


def new_id() -> str:
    return str(uuid.uuid4())


class Cluster:
    def __init__(self, tmp: Path, hosts: int = 3, *, shared: Path | None = None,
                 config: str = CONFIG) -> None:
        self.tmp = tmp
        self.shared = shared or tmp / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.hosts = [Vdsmd(tmp / f"host{i}", config=config, host_id=i)
                      for i in range(1, hosts + 1)]
        self.sp = ""
        self.sd = ""
        self.kind = ""

    def host(self, host_id: int) -> Vdsmd:
        return self.hosts[host_id - 1]

    def start(self) -> None:
        for h in self.hosts:
            h.start()
        for h in self.hosts:
            h.wait_ready()

    def call(self, host_id: int, method: str, **params: Any) -> Any:
        return self.host(host_id).call(method, **params)

    def error(self, host_id: int, method: str, **params: Any) -> ClientError:
        try:
            self.call(host_id, method, **params)
        except ClientError as e:
            return e
        raise AssertionError(f"{method} on host {host_id} succeeded")

    # --- the pool --------------------------------------------------------------------------

    def connect_storage(self, host_id: int) -> None:
        result = self.call(host_id, "StoragePool.connectStorageServer", storagepoolID=new_id(),
                           domainType="localfs",
                           connectionParams=[{"id": new_id(), "connection": str(self.shared)}])
        assert result[0]["status"] == 0, result

    def pool(self, kind: str = "localfs") -> tuple[str, str]:
        """A domain of ``kind`` (localfs or loop) on the shared dir, as the master of a new
        pool that every host connects to (host ids 1..n)."""
        for h in range(1, len(self.hosts) + 1):
            self.connect_storage(h)
        sd, sp = new_id(), new_id()
        assert self.call(1, "StorageDomain.create", storagedomainID=sd, domainType=kind,
                         typeArgs=str(self.shared), name="shared", domainClass="data") is True
        assert self.call(1, "StoragePool.create", storagepoolID=sp, name="pool",
                         masterSdUUID=sd, masterVersion=1, domainList=[sd]) is True
        for h in range(1, len(self.hosts) + 1):
            assert self.call(h, "StoragePool.connect", storagepoolID=sp, hostID=h,
                             masterSdUUID=sd, masterVersion=1) is True
        self.sp, self.sd, self.kind = sp, sd, kind
        return sp, sd

    def spm_status(self, host_id: int) -> dict[str, Any]:
        status: dict[str, Any] = self.call(host_id, "StoragePool.getSpmStatus",
                                           storagepoolID=self.sp, timeout=5)
        return status

    def spm_start(self, host_id: int, timeout: float = 60.0) -> dict[str, Any]:
        """spmStart on one host and its task's outcome."""
        task = self.call(host_id, "StoragePool.spmStart", storagepoolID=self.sp)
        return self.task(host_id, task, timeout)

    def take_over(self, host_id: int, timeout: float) -> float:
        """spmStart on ``host_id`` until it holds the role (as a manager retries it); the
        seconds it took."""
        started = time.monotonic()

        def done() -> bool:
            if self.spm_status(host_id)["spmStatus"] == "SPM":
                return True
            status = self.spm_start(host_id, timeout=timeout)
            return status["taskResult"] == "success"

        wait_for(done, timeout, interval=0.2, what=f"host {host_id} to become SPM")
        return time.monotonic() - started

    def task(self, host_id: int, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            status: dict[str, Any] = self.call(host_id, "Task.getStatus", taskID=task_id)
            return status if status["taskState"] == "finished" else None

        result: dict[str, Any] = wait_for(finished, timeout, 0.1, f"task {task_id}")
        return result

    def spms(self) -> list[int]:
        """The hosts that say they are the SPM (every live one is asked)."""
        return [i for i, h in enumerate(self.hosts, 1)
                if h.proc is not None and h.proc.poll() is None
                and self.spm_status(i)["spmStatus"] == "SPM"]

    # --- processes -------------------------------------------------------------------------

    def keeper_pid(self, host_id: int) -> int:
        detail = self.call(host_id, "Actors.inspect",
                           path=f"/storage/pools/{self.sp}/lease")["detail"]
        return int(detail["keeperPid"] or 0)

    def writer_pid(self, host_id: int) -> int:
        detail = self.call(host_id, "Actors.inspect",
                           path=f"/storage/pools/{self.sp}/lease")["detail"]
        writer = detail.get("writer") or {}
        return int(writer.get("pid", 0))

    def kill(self, host_id: int) -> float:
        """SIGKILL the host's vdsmd and its process group (its keeper); the kill time."""
        h = self.host(host_id)
        assert h.proc is not None
        os.killpg(h.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        h.proc.wait(10)
        return killed

    # --- the safety journal ----------------------------------------------------------------

    def journal_dir(self) -> Path:
        return self.shared / self.sd / "dom_md" / "spmjournal"

    def check_journal(self, kills: tuple[tuple[int, float], ...] = ()) -> list[journal.Write]:
        writes = journal.writes(journal.load(self.journal_dir()), kills)
        violations = journal.check(writes)
        assert violations == [], violations
        return writes

    # --- cleanup ---------------------------------------------------------------------------

    def cleanup(self) -> None:
        for h in self.hosts:
            if h.proc is not None and h.proc.poll() is None:
                try:
                    os.kill(h.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        for h in self.hosts:
            try:
                h.stop(timeout=30)
            except Exception:  # noqa: BLE001 - kill what does not stop; cleanup goes on
                h.kill()
        for target in reversed(mounts_under(self.tmp)):
            unmount(Path(target))
        for device in loop_devices_of(self.tmp):
            detach(device)
