"""The domain-health probe behind each domain monitor: bounded, off-thread, never waited on.

One probe is an O_DIRECT read of the first 4 KiB of the domain's metadata followed, where the
domain has one, by an O_DIRECT write of one 4 KiB slot (``slot`` x 4 KiB, the host id) of a
scratch file in ``dom_md``. The write is what makes the probe faithful: measured here on ext4
frozen with ``fsfreeze -f``, O_DIRECT and buffered reads, ``stat`` and ``open(O_RDONLY)``
all return at once, while ``open(O_WRONLY)`` and every write block in the kernel until the
thaw. A dead NFS server blocks (or, mounted ``soft``, fails) both.

:class:`DomainProbe` runs each probe on a short-lived daemon thread of its own and keeps at
most one outstanding per domain: :meth:`DomainProbe.start` refuses to start another while
the previous one runs, so a hung domain costs exactly one blocked thread, however long it
hangs. The caller never waits: it polls :meth:`DomainProbe.result`, which turns a probe
running past its timeout into a timeout result, and may also get every finished result
through ``on_done`` (called on the probe thread: it must only post a message). When the
storage comes back, the stuck thread completes, reports, and exits.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from actors.storage.sd.records import ProbeTarget
from actors.storage.workers import name_native_thread
from messaging.errors import StorageDomainInvalid, StorageTimeout

log = logging.getLogger(__name__)

BLOCK = 4096
THREAD_PREFIX = "probe-"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    started: float
    """``time.monotonic()`` when the probe began."""
    delay: float
    """Seconds the I/O took (for a timeout: how long it has been running)."""
    timed_out: bool = False
    error: str = ""
    code: int = 0
    """0, or the error code a monitor reports (215 timeout, 208 I/O error)."""


def _direct_fd(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_DIRECT | os.O_CLOEXEC)


def probe_once(target: ProbeTarget, *, slot: int = 0, read_buf: mmap.mmap | None = None,
               write_buf: mmap.mmap | None = None) -> float:
    """Do one probe on the calling thread (may block in the kernel); return its delay.

    Raises OSError when the storage answers with an error. The buffers must be page-aligned
    (an anonymous mmap), :data:`BLOCK` bytes long; they are allocated when not given.
    """
    rbuf = read_buf if read_buf is not None else mmap.mmap(-1, BLOCK)
    started = time.monotonic()
    fd = _direct_fd(target.read_path, os.O_RDONLY)
    try:
        if os.preadv(fd, [rbuf], 0) <= 0:
            raise OSError(f"{target.read_path} is empty")
    finally:
        os.close(fd)
    if target.write_path is not None:
        wbuf = write_buf if write_buf is not None else mmap.mmap(-1, BLOCK)
        stamp = f"probe slot={slot} t={time.time():.3f}\n".encode()
        wbuf[: len(stamp)] = stamp
        fd = _direct_fd(target.write_path, os.O_WRONLY)
        try:
            os.pwritev(fd, [wbuf], slot * BLOCK)
        finally:
            os.close(fd)
    return time.monotonic() - started


class DomainProbe:
    """Probes one domain's ``target`` with at most one probe outstanding."""

    def __init__(self, target: ProbeTarget, *, timeout: float, slot: int = 0, name: str = "",
                 on_done: Callable[[ProbeResult], None] | None = None) -> None:
        if timeout <= 0:
            raise ValueError("the probe timeout must be positive")
        if not 0 <= slot < 4096:
            raise ValueError(f"probe slot {slot} out of range")
        self.target = target
        self.timeout = timeout
        self.slot = slot
        self.name = name or Path(target.read_path).parent.parent.name
        self.on_done = on_done
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._last: ProbeResult | None = None
        self._read_buf = mmap.mmap(-1, BLOCK)
        self._write_buf = mmap.mmap(-1, BLOCK)
        self.probes = 0
        self.timeouts = 0
        """Probes that ran past the timeout (each counted once)."""
        self._counted_timeout = False

    @property
    def outstanding(self) -> bool:
        with self._lock:
            return self._thread is not None

    @property
    def outstanding_since(self) -> float | None:
        """``time.monotonic()`` when the outstanding probe began; None when there is none."""
        with self._lock:
            return self._started if self._thread is not None else None

    def start(self) -> bool:
        """Start a probe unless one is outstanding (then False: no pile-up). Never blocks."""
        with self._lock:
            if self._thread is not None:
                return False
            self._started = time.monotonic()
            self._counted_timeout = False
            thread = threading.Thread(target=self._run, args=(self._started,),
                                      name=f"{THREAD_PREFIX}{self.name}", daemon=True)
            self._thread = thread
            self.probes += 1
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: no probe is outstanding either
            with self._lock:
                self._thread = None
            raise
        return True

    def _run(self, started: float) -> None:
        name_native_thread(threading.current_thread().name)
        result = ProbeResult(ok=False, started=started, delay=0.0, error="the probe crashed",
                             code=StorageDomainInvalid.code)
        try:
            delay = probe_once(self.target, slot=self.slot, read_buf=self._read_buf,
                               write_buf=self._write_buf)
            result = ProbeResult(ok=True, started=started, delay=delay)
        except OSError as e:
            result = ProbeResult(ok=False, started=started, delay=time.monotonic() - started,
                                 error=str(e), code=StorageDomainInvalid.code)
        except Exception as e:  # a bug is a failed probe, reported and logged
            log.error("probe of %s failed unexpectedly", self.name, exc_info=e)
            result = ProbeResult(ok=False, started=started, delay=time.monotonic() - started,
                                 error=f"the probe failed unexpectedly: {e!r}",
                                 code=StorageDomainInvalid.code)
        finally:
            with self._lock:
                self._last = result
                self._thread = None
        if result.delay > self.timeout:
            log.warning("probe of %s finished after %.1f s (timeout %.1f s)", self.name,
                        result.delay, self.timeout)
        if self.on_done is not None:
            try:
                self.on_done(result)
            except Exception:
                log.exception("probe callback of %s failed", self.name)

    def result(self, now: float | None = None) -> ProbeResult | None:
        """The latest outcome without waiting: a timeout while the outstanding probe is past
        its timeout, else the last finished result (None before the first one)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._thread is not None and now - self._started > self.timeout:
                if not self._counted_timeout:
                    self._counted_timeout = True
                    self.timeouts += 1
                    log.warning("probe of %s stuck for %.1f s: abandoned", self.name,
                                now - self._started)
                return ProbeResult(ok=False, started=self._started, delay=now - self._started,
                                   timed_out=True, code=StorageTimeout.code,
                                   error=f"no answer within {self.timeout:g} s")
            return self._last

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the outstanding probe (tests, shutdown); True if none."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True
