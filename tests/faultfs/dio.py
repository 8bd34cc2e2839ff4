"""An I/O client in its own process, driven line by line over stdin/stdout (tests only).

Commands, one per line, each answered by one JSON line:

- ``read PATH OFFSET SIZE``: an O_DIRECT read into an aligned buffer;
  answers ``{"ok": true, "seconds": s, "data": hex}`` or ``{"ok": false, "errno": "EIO"}``;
- ``write PATH OFFSET SIZE BYTE``: an O_DIRECT write of SIZE bytes of value BYTE (0-255);
- ``bench PATH SIZE COUNT``: COUNT O_DIRECT writes then COUNT reads of SIZE bytes at offset 0;
  answers the median seconds of each;
- ``pid``: the process id.

Running as a separate process is the point: the I/O goes through the kernel's FUSE client
exactly as another program's (vdsmd's probe, a lease keeper) would.
"""

from __future__ import annotations

import errno
import json
import logging
import mmap
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOP = Path(__file__).resolve().parent.parent.parent

log = logging.getLogger(__name__)


def _direct(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_DIRECT | os.O_CLOEXEC)


def read(path: str, offset: int, size: int) -> dict[str, Any]:
    buf = mmap.mmap(-1, max(size, mmap.PAGESIZE))
    started = time.monotonic()
    fd = _direct(path, os.O_RDONLY)
    try:
        got = os.preadv(fd, [memoryview(buf)[:size]], offset)
    finally:
        os.close(fd)
    return {"ok": True, "seconds": time.monotonic() - started, "data": buf[:got].hex()}


def write(path: str, offset: int, size: int, value: int) -> dict[str, Any]:
    buf = mmap.mmap(-1, max(size, mmap.PAGESIZE))
    buf[:size] = bytes([value]) * size
    started = time.monotonic()
    fd = _direct(path, os.O_WRONLY | os.O_CREAT)
    try:
        done = os.pwritev(fd, [memoryview(buf)[:size]], offset)
    finally:
        os.close(fd)
    return {"ok": True, "seconds": time.monotonic() - started, "written": done}


def bench(path: str, size: int, count: int) -> dict[str, Any]:
    buf = mmap.mmap(-1, max(size, mmap.PAGESIZE))
    view = memoryview(buf)[:size]
    fd = _direct(path, os.O_RDWR | os.O_CREAT)
    writes, reads = [], []
    try:
        for _ in range(count):
            started = time.perf_counter()
            os.pwritev(fd, [view], 0)
            writes.append(time.perf_counter() - started)
        for _ in range(count):
            started = time.perf_counter()
            os.preadv(fd, [view], 0)
            reads.append(time.perf_counter() - started)
    finally:
        os.close(fd)
    return {"ok": True, "write": statistics.median(writes), "read": statistics.median(reads)}


def serve_line(line: str) -> dict[str, Any]:
    cmd, *args = line.split()
    try:
        if cmd == "read":
            return read(args[0], int(args[1]), int(args[2]))
        if cmd == "write":
            return write(args[0], int(args[1]), int(args[2]), int(args[3]))
        if cmd == "bench":
            return bench(args[0], int(args[1]), int(args[2]))
        if cmd == "pid":
            return {"ok": True, "pid": os.getpid()}
    except OSError as e:
        return {"ok": False, "errno": errno.errorcode.get(e.errno or 0, str(e.errno))}
    return {"ok": False, "errno": "EINVAL", "error": f"unknown command {cmd!r}"}


class Client:
    """Drives one ``dio`` process from a test; :meth:`close` (or ``with``) always kills it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faultfs.dio"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, bufsize=0, cwd=TOP, env={**os.environ, "PYTHONPATH": str(TOP)})
        self.pid = self.proc.pid

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, *words: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((" ".join(map(str, words)) + "\n").encode())
        self.proc.stdin.flush()

    def answered(self, timeout: float = 0.0) -> bool:
        """Whether an answer is waiting (within ``timeout``)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return bool(ready)

    def answer(self, timeout: float = 30.0) -> dict[str, Any]:
        if not self.answered(timeout):
            raise TimeoutError(f"dio process {self.pid} did not answer in {timeout} s")
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError(f"dio process {self.pid} exited ({self.proc.poll()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def call(self, *words: object, timeout: float = 30.0) -> dict[str, Any]:
        self.send(*words)
        return self.answer(timeout)

    def close(self) -> None:
        """Kill the process. One held by an uninterruptible faultfs hang dies only when the
        hang is released (the fixture's cleanup does that): then this gives up waiting."""
        self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            log.warning("dio process %d is held in the kernel: it dies once released",
                        self.pid)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(serve_line(line)), flush=True)


if __name__ == "__main__":
    main()
