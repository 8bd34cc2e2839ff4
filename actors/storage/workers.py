"""Threads for blocking storage work: a bounded pool, and lanes that bound it per domain.

Storage I/O can hang in the kernel (a frozen filesystem, a dead NFS server), so it never runs
on an actor's thread: the actor hands it to a :class:`Workers` pool it owns and gives the
caller a :class:`concurrent.futures.Future` to wait on with a timeout. The threads are daemon
threads, never joined at exit: a thread stuck on a frozen mount must not hold up vdsmd's exit
(``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter exit, which is
why it is not used here). Threads are started on demand, up to ``size``, and then live as
long as the pool.

:class:`Lanes` adds a bound per key (a domain): at most ``per_key`` jobs of one domain run or
wait at a time, so a hung domain can hold at most that many threads and further work on it
is refused at once (:class:`StorageBusy`, retryable) instead of piling up.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from messaging.errors import StorageBusy

log = logging.getLogger(__name__)

T = TypeVar("T")

_Job = tuple[Future[Any], Callable[[], Any]]
COMM_MAX = 15
"""Bytes of a thread's name the kernel keeps (``/proc/<pid>/task/<tid>/comm``)."""


def name_native_thread(name: str) -> None:
    """Give the calling thread ``name`` as the OS sees it too (``ps -L``, ``top -H``,
    ``/proc/<pid>/task/<tid>/comm``; cut to :data:`COMM_MAX` bytes), so that storage threads
    (a probe stuck on a frozen mount, a lane's worker) can be told apart from outside."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "wb") as comm:
            comm.write(name.encode()[:COMM_MAX])
    except OSError as e:  # no /proc: the name is only a convenience
        log.debug("cannot name thread %s: %s", name, e)


class Handoff:
    """Settles, once, whether a worker's result reaches its caller or is abandoned.

    The caller waits with a deadline; past it, :meth:`abandon` tells the worker (which may
    still be running) that nobody will take its result, so the worker undoes it instead of
    leaving an effect nobody knows of. Whichever of :meth:`deliver` and :meth:`abandon`
    comes first wins; both answer whether the caller is to get the result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delivered: bool | None = None

    def deliver(self) -> bool:
        """Worker: True if the caller takes the result, False if it was abandoned."""
        with self._lock:
            if self._delivered is None:
                self._delivered = True
            return self._delivered

    def abandon(self) -> bool:
        """Caller: True if abandoned now, False if the result was just delivered."""
        with self._lock:
            if self._delivered is None:
                self._delivered = False
            return not self._delivered


class Workers:
    """Up to ``size`` daemon threads named ``<name>-N`` running submitted jobs in order."""

    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one thread")
        self.name = name
        self.size = size
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        """Jobs submitted and not finished: a new thread is started while it reaches the
        number of threads (and the bound allows)."""
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"worker pool {self.name} is shut down")
            if self._busy >= len(self._threads) < self.size:
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"{self.name}-{len(self._threads) + 1}")
                self._threads.append(thread)
                thread.start()
            self._busy += 1
        self._queue.put((future, lambda: fn(*args, **kwargs)))
        return future

    def _run(self) -> None:
        name_native_thread(threading.current_thread().name)
        while True:
            job = self._queue.get()
            if job is None:
                return
            future, call = job
            ran = future.set_running_or_notify_cancel()
            value: Any = None
            error: BaseException | None = None
            if ran:
                try:
                    value = call()
                except BaseException as e:  # noqa: BLE001 - every outcome goes to the future
                    error = e
            # Counted as done before its caller has the outcome: a caller that submits its
            # next job as soon as it has this one's finds this thread idle (no new thread).
            with self._lock:
                self._busy -= 1
            if not ran:
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def threads(self) -> int:
        with self._lock:
            return len(self._threads)

    def busy(self) -> int:
        with self._lock:
            return self._busy

    def shutdown(self) -> None:
        """Let every thread exit once its current job is done (never waits for them)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._queue.put(None)


class _Slot:
    """One job's place in its key's lane (released once, by identity)."""

    __slots__ = ("started",)

    def __init__(self, started: float) -> None:
        self.started = started


class Lanes:
    """A :class:`Workers` pool with at most ``per_key`` jobs per key in flight.

    A job leaves its lane on its worker thread when it returns, before its future resolves:
    a caller that submits the next job on the key as soon as it has this one's outcome is
    never refused because of it (a done-callback would run only after the caller waiting on
    the future was woken)."""

    def __init__(self, name: str, *, workers: int, per_key: int) -> None:
        self.workers = Workers(name, workers)
        self.per_key = per_key
        self._lock = threading.Lock()
        self._inflight: dict[str, list[_Slot]] = {}

    def submit(self, key: str, fn: Callable[..., T], *args: Any, what: str = "",
               ) -> Future[T]:
        """Run ``fn(*args)`` on the pool; :class:`StorageBusy` when ``key`` is at its bound."""
        now = time.monotonic()
        slot = _Slot(now)
        with self._lock:
            started = self._inflight.setdefault(key, [])
            if len(started) >= self.per_key:
                raise StorageBusy(what=what or key, pending=len(started),
                                  age=now - started[0].started)
            started.append(slot)

        def job() -> T:
            try:
                return fn(*args)
            finally:
                self._release(key, slot)

        try:
            future = self.workers.submit(job)
        except BaseException:
            self._release(key, slot)
            raise
        # A job cancelled before it ran never runs its own release.
        future.add_done_callback(lambda _f: self._release(key, slot))
        return future

    def _release(self, key: str, slot: _Slot) -> None:
        with self._lock:
            started = self._inflight.get(key)
            if started is None:
                return
            for i, held in enumerate(started):
                if held is slot:
                    del started[i]
                    break  # not there: released already
            if not started:
                del self._inflight[key]

    def inflight(self) -> dict[str, int]:
        with self._lock:
            return {key: len(v) for key, v in self._inflight.items()}

    def shutdown(self) -> None:
        self.workers.shutdown()
