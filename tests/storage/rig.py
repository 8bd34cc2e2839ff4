"""A real vdsmd with storage, driven through its API, for the process-level storage tests.

:class:`Rig` starts (and restarts) vdsmd on a work dir under the test's ``tmp`` and offers
the few API sequences the tests share. :meth:`Rig.cleanup` always runs (the ``rig`` fixture
calls it): it stops vdsmd, then unmounts whatever is still mounted under ``tmp`` and detaches
loop devices backed by files under it, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actors.storage import mount
from messaging.client import ClientError, Subscriber
from tests.harness import Vdsmd, wait_for
from tests.storage.helpers import detach, loop_devices_of, sh, sparse_file, unmount

SPM_CONFIG = ("[spm]\nlease_time = 3\nrenew_interval = 0.5\nio_timeout = 0.5\n"
              "agent_timeout = 2\nheartbeat_interval = 0.2\njournal = true\n")
"""Short SPM lease timings (a dead SPM is replaced within seconds) and the safety journal."""
CONFIG = SPM_CONFIG + "[storage]\nmonitor_interval = 1\nmonitor_timeout = 2\n"
"""Ends in the [storage] table: tests append more storage settings to it."""


def new_id() -> str:
    return str(uuid.uuid4())


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    with Path("/proc/self/mounts").open() as f:
        targets = [line.split()[1] for line in f]
    return [t for t in targets if t.startswith(prefix)]


def thread_names(pid: int) -> collections.Counter[str]:
    """How many threads of ``pid`` have each name, as the kernel sees them (``comm``: the
    storage threads name themselves; the rest carry the process's name)."""
    names: collections.Counter[str] = collections.Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[(task / "comm").read_text().strip()] += 1
        except OSError:
            continue  # ended meanwhile
    return names


CONFIRM = "|host|block_device|"


class ConfirmedSubscriber(Subscriber):
    """A subscriber that has been seen receiving (see :meth:`Rig.subscriber`); the events
    used to confirm it are dropped, the others kept in order."""

    def __init__(self, endpoint: str, prefixes: tuple[str, ...]) -> None:
        super().__init__(endpoint, prefixes)
        self.early: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()

    def confirmed(self, timeout: float) -> bool:
        """Whether a confirmation event arrives within ``timeout`` (others are kept)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = super().receive(left)
            if event is None:
                return False
            if event[0].startswith(CONFIRM):
                return True
            self.early.append(event)
        return False

    def receive(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        if self.early:
            return self.early.popleft()
        deadline = time.monotonic() + timeout
        while True:
            event = super().receive(max(0.0, deadline - time.monotonic()))
            if event is None or not event[0].startswith(CONFIRM):
                return event


def children(pid: int, *, keepers: bool = False) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid`` (the pools' lease keepers, which
    vdsmd runs for as long as a pool is connected, only when ``keepers``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            if not keepers and b"actors.storage.spm.keeper" in cmdline:
                continue
            found.append(int(entry.name))
    return found


def tools_holding(path: Path) -> list[int]:
    """Live qemu-img/fallocate processes that have ``path`` open (or its deleted inode)."""
    found = []
    target = str(path)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in ("qemu-img", "fallocate"):
                continue
            if "Z" in (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]:
                continue
            links = [str(fd.readlink()) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(link.startswith(target) for link in links):
            found.append(int(entry.name))
    return found


class Rig:
    def __init__(self, tmp: Path, config: str = CONFIG) -> None:
        self.tmp = tmp
        self.config = config
        self.workdir = tmp / "vdsmd"
        self.daemon: Vdsmd | None = None
        self.pools: list[str] = []
        """Pools this rig made its vdsmd the SPM of: a restarted vdsmd is made SPM again, as
        a management layer would (spmStart), before the test goes on."""

    # --- the daemon ----------------------------------------------------------------------

    def start(self) -> Vdsmd:
        self.daemon = Vdsmd(self.workdir, config=self.config).start()
        for sp in list(self.pools):
            try:
                self.spm_start(sp)
            except ClientError as e:
                if e.code != 202:  # disconnected meanwhile: nothing to take over
                    raise
                self.pools.remove(sp)
        return self.daemon

    @property
    def d(self) -> Vdsmd:
        assert self.daemon is not None
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None:
            try:
                self.daemon.stop(timeout=60)
            finally:
                self.daemon.kill()

    def kill(self) -> None:
        """SIGKILL vdsmd (its process group only: storage commands run in their own)."""
        os.killpg(self.d.pid, signal.SIGKILL)
        assert self.d.proc is not None
        self.d.proc.wait(10)

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            for target in reversed(mounts_under(self.tmp)):
                subprocess.run(["fsfreeze", "--unfreeze", target], capture_output=True,
                               timeout=30, check=False)
                unmount(Path(target))
            for device in loop_devices_of(self.tmp):
                detach(device)

    def call(self, method: str, **params: Any) -> Any:
        return self.d.call(method, **params)

    @contextlib.contextmanager
    def subscriber(self, *prefixes: str) -> Iterator[Subscriber]:
        """Events of ``prefixes`` from the moment this returns: a SUB socket misses what is
        published before its subscription reaches the publisher, so this also subscribes to
        block device events and attaches a small loop device (which the agent's udev actor
        reports) until one arrives."""
        image = sparse_file(self.tmp / f"confirm-{uuid.uuid4().hex[:8]}.img", 1 << 20)
        with ConfirmedSubscriber(self.d.events, (*prefixes, CONFIRM)) as sub:
            for _attempt in range(30):
                device = sh("losetup", "--find", "--show", str(image)).strip()
                detach(device)
                if sub.confirmed(2.0):
                    break
            else:
                raise TimeoutError("the subscription was never seen receiving")
            yield sub
        image.unlink()

    def error(self, method: str, **params: Any) -> ClientError:
        try:
            result = self.d.call(method, **params)
        except ClientError as e:
            return e
        raise AssertionError(f"{method} succeeded: {result!r}")

    # --- storage sequences -------------------------------------------------------------

    def mount_point(self, spec: str) -> Path:
        return self.workdir / "run" / "storage" / "mnt" / mount.escape(spec)

    def connect(self, kind: str, spec: str, **extra: Any) -> None:
        result = self.call("StoragePool.connectStorageServer", storagepoolID=new_id(),
                           domainType=kind,
                           connectionParams=[{"id": "c", "connection": spec, **extra}])
        assert result[0]["status"] == 0, result

    def local_dir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir()
        self.connect("localfs", str(path))
        return path

    def domain(self, kind: str, spec: str, name: str = "d") -> str:
        sd = new_id()
        assert self.call("StorageDomain.create", storagedomainID=sd, domainType=kind,
                         typeArgs=spec, name=name, domainClass="data") is True
        return sd

    def pool(self, master: str, others: tuple[str, ...] = (), host_id: int = 1) -> str:
        sp = new_id()
        assert self.call("StoragePool.create", storagepoolID=sp, name="pool",
                         masterSdUUID=master, masterVersion=1,
                         domainList=[master, *others]) is True
        assert self.call("StoragePool.connect", storagepoolID=sp, hostID=host_id,
                         masterSdUUID=master, masterVersion=1) is True
        self.spm_start(sp)
        self.pools.append(sp)
        for sd in others:
            assert self.call("StorageDomain.activate", storagedomainID=sd,
                             storagepoolID=sp) is True
        return sp

    def spm_start(self, sp: str, timeout: float = 60.0) -> None:
        """Make this host the pool's SPM (spmStart, then its task must succeed)."""
        task_id = self.call("StoragePool.spmStart", storagepoolID=sp)
        status = self.task(task_id, timeout)
        assert status["taskResult"] == "success", status
        assert self.call("Task.clear", taskID=task_id) is True  # as a manager would
        assert self.call("StoragePool.getSpmStatus", storagepoolID=sp)["spmStatus"] == "SPM"

    def task(self, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The task's status once it is finished."""
        def finished() -> dict[str, Any] | None:
            status: dict[str, Any] = self.call("Task.getStatus", taskID=task_id)
            return status if status["taskState"] == "finished" else None

        result: dict[str, Any] = wait_for(finished, timeout, 0.1, f"task {task_id}")
        return result

    def create_volume(self, sp: str, sd: str, *, size: int = 64 << 20, fmt: str = "cow",
                      prealloc: str = "sparse", img: str | None = None, **extra: Any,
                      ) -> tuple[str, str, str]:
        """Start a Volume.create: (imgUUID, volUUID, taskID)."""
        img, vol = img or new_id(), new_id()
        task_id = self.call("Volume.create", storagepoolID=sp, storagedomainID=sd,
                            imageID=img, volumeID=vol, size=size, volFormat=fmt,
                            preallocate=prealloc, **extra)
        return img, vol, task_id

    def repo_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.call("Host.getStorageRepoStats", timeout=5)
        return stats

    def wait_valid(self, sd: str, valid: bool = True, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            entry: dict[str, Any] | None = self.repo_stats().get(sd)
            return entry if entry and entry["actual"] and entry["valid"] is valid else None

        result: dict[str, Any] = wait_for(check, timeout, 0.1, f"{sd} valid={valid}")
        return result


def ext4_device(tmp: Path, name: str, size: int) -> str:
    """A loop device over a new ext4 image (detached by the rig's cleanup)."""
    image = tmp / f"{name}.img"
    with image.open("wb") as f:
        f.truncate(size)
    device = sh("losetup", "--find", "--show", str(image)).strip()
    sh("mkfs.ext4", "-q", "-m", "0", device, timeout=60)
    return device
