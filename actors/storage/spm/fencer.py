"""The fencer: a thread of the keeper that kills the writer when the lease runs out.

It is deliberately independent of the keeper's main loop: it sleeps until the kill time the
renewals keep pushing back, and if nothing pushed it back, it SIGKILLs the writer's process
group, marks the fence file fenced and reports. A stalled main loop therefore cannot keep a
writer alive past the lease; only a stall of the whole keeper process can, and then the
writer's own check of the fence file stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from actors.storage.spm import procutil

log = logging.getLogger(__name__)


class Fencer:
    def __init__(self, on_kill: Callable[[int, float], None]) -> None:
        """``on_kill(writer_pgid, late_by)`` runs on the fencer thread after a kill."""
        self._on_kill = on_kill
        self._cond = threading.Condition()
        self._pgid: int | None = None
        self._kill_at = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="fencer", daemon=True)
        self._thread.start()

    def arm(self, pgid: int, kill_at: float) -> None:
        """Kill ``pgid`` at monotonic time ``kill_at`` unless :meth:`extend` moves it."""
        with self._cond:
            self._pgid, self._kill_at = pgid, kill_at
            self._cond.notify()

    def extend(self, kill_at: float) -> None:
        with self._cond:
            if self._pgid is not None and kill_at > self._kill_at:
                self._kill_at = kill_at

    def disarm(self) -> int | None:
        """Stop watching; the pgid that was armed (the caller kills it if it must)."""
        with self._cond:
            pgid, self._pgid = self._pgid, None
            self._cond.notify()
            return pgid

    def kill_now(self) -> int | None:
        """Kill the armed writer at once (a release or a shutdown); its pgid or None."""
        pgid = self.disarm()
        if pgid is not None:
            procutil.kill_group(pgid)
        return pgid

    @property
    def kill_at(self) -> float | None:
        with self._cond:
            return self._kill_at if self._pgid is not None else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._pgid is None:
                        self._cond.wait()
                        continue
                    delay = self._kill_at - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                if self._closed:
                    return
                pgid, kill_at = self._pgid, self._kill_at
                self._pgid = None
            assert pgid is not None
            procutil.kill_group(pgid)
            late = time.monotonic() - kill_at
            log.error("lease not renewed in time: killed the writer (group %d), %.3f s after "
                      "the kill time", pgid, late)
            try:
                self._on_kill(pgid, late)
            except Exception:
                log.exception("reporting the kill failed")
