"""Fixtures of the lease tests: real files read and written with O_DIRECT, on the ext4 under
/tmp (512-byte sectors) and on ext4 over a loop device with 4096-byte sectors."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.storage.lease.timing import LeaseTiming
from tests.storage.helpers import detach, sh, sparse_file, unmount

IDS_SIZE = 1 << 20
LEASES_SIZE = 16 << 20


class FakeClock:
    """A monotonic clock the test moves; ``sleep`` moves it instead of waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds

    def set(self, t: float) -> None:
        with self._lock:
            self.t = t


@dataclass(frozen=True)
class Store:
    """A directory with a zeroed ``ids`` file and a sparse ``leases`` file."""

    root: Path
    sector_size: int

    @property
    def ids(self) -> Path:
        return self.root / "ids"

    @property
    def leases(self) -> Path:
        return self.root / "leases"


def make_store(root: Path, sector_size: int) -> Store:
    root.mkdir(exist_ok=True)
    (root / "ids").write_bytes(bytes(IDS_SIZE))
    sparse_file(root / "leases", LEASES_SIZE)
    return Store(root, sector_size)


@contextlib.contextmanager
def ext4_4k(tmp: Path) -> Iterator[Path]:
    """ext4 on a loop device with 4096-byte logical sectors, mounted at ``tmp/4k.mnt``."""
    image = sparse_file(tmp / "4k.img", 64 << 20)
    mountpoint = tmp / "4k.mnt"
    mountpoint.mkdir()
    device = sh("losetup", "--find", "--show", "--sector-size", "4096", str(image)).strip()
    try:
        sh("mkfs.ext4", "-q", "-b", "4096", "-m", "0", device, timeout=60)
        sh("mount", device, str(mountpoint))
        try:
            yield mountpoint
        finally:
            unmount(mountpoint)
    finally:
        # another agent on this machine may be reading the new device's label: give it time
        detach(device, wait=30)


@pytest.fixture(params=[512, 4096], ids=["512", "4k"])
def store(request: pytest.FixtureRequest, tmp: Path) -> Iterator[Store]:
    """The lease files with 512-byte sectors (/tmp) or 4096-byte ones (a 4Kn loop device)."""
    if request.param == 512:
        yield make_store(tmp / "sd", 512)
        return
    with ext4_4k(tmp) as mnt:
        yield make_store(mnt / "sd", 4096)


@pytest.fixture
def store512(tmp: Path) -> Store:
    return make_store(tmp / "sd", 512)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


TIMING = LeaseTiming(lease=20.0, renew_interval=5.0, io_timeout=5.0)
"""For tests on a FakeClock: real waits never come near these numbers."""
