"""A lease file (or block device) read and written in whole sectors, each I/O timed.

Each :class:`SectorFile` has its own descriptor, its own aligned buffer (allocated once, the
size of the largest read it will do) and its own :class:`TimedIO`, so a stuck I/O on one
never delays another's. Even ``open`` runs on the I/O thread: on frozen storage opening for
writing blocks too. After an error the descriptor is closed and the next I/O opens the path
again (an NFS server that came back, a device that was replaced).

A SectorFile serves one caller thread at a time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from actors.storage.lease import aligned
from actors.storage.lease.errors import IoBusy, IoFailed, IoTimeout
from actors.storage.lease.timedio import Clock, Timed, TimedIO


class SectorFile:
    def __init__(self, path: str | Path, *, sector_size: int, span: int, io_timeout: float,
                 clock: Clock = time.monotonic, write: bool = False, name: str = "") -> None:
        aligned.check_aligned(0, span, sector_size)
        self.path = str(path)
        self.sector_size = sector_size
        self.span = span
        self.write_enabled = write
        self.name = name or self.path
        self.io = TimedIO(self.name, timeout=io_timeout, clock=clock)
        self._buf = aligned.AlignedBuffer(span)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = aligned.open_direct(self.path, write=self.write_enabled)
        return self._fd

    def _reset(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass  # the descriptor is gone either way

    def read(self, offset: int, length: int) -> Timed[bytes]:
        """Read ``length`` bytes (whole sectors, at most ``span``) at ``offset``."""
        aligned.check_aligned(offset, length, self.sector_size)
        if length > self.span:
            raise ValueError(f"a read of {length} bytes exceeds this file's span {self.span}")

        def call() -> bytes:
            try:
                return aligned.read_at(self._open(), self._buf, offset, length)
            except OSError:
                self._reset()
                raise

        try:
            return self.io.run(call)
        except OSError as e:
            raise self._failed(e) from e

    def write(self, offset: int, data: bytes) -> Timed[None]:
        """Write ``data`` (whole sectors; the callers here write one) at ``offset``."""
        aligned.check_aligned(offset, len(data), self.sector_size)
        if not self.write_enabled or len(data) > self.span:
            raise ValueError(f"{self.name} is not open for writes of {len(data)} bytes")

        def call() -> None:
            try:
                aligned.write_at(self._open(), self._buf, offset, data)
            except OSError:
                self._reset()
                raise

        try:
            return self.io.run(call)
        except OSError as e:
            raise self._failed(e) from e

    def _failed(self, e: OSError) -> IoFailed:
        return IoFailed(what=self.name, reason=e.strerror or str(e))

    def close(self) -> None:
        """Close the descriptor and let the I/O thread go. While an I/O is stuck, the thread
        exits when it returns, and the descriptor stays open until the process exits."""
        if self.io.closed:
            return
        if self.io.busy_since is None:
            try:
                self.io.run(self._reset)
            except (IoBusy, IoTimeout):
                pass  # it got stuck meanwhile: the descriptor stays open, as documented
        self.io.close()
