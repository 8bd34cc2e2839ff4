"""Rate-limited logging, for lines that a client can cause at any rate.

Refused requests, dropped replies, refused handshakes: each is worth one log line, but a
careless or hostile client can cause thousands per second. A :class:`RateLimitedLog` writes
at most ``burst`` lines per ``window`` seconds and then counts; when the next window opens
(or on :meth:`flush`) it says in one line how many it did not write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

# At most BURST lines per WINDOW seconds for each kind of line.
BURST = 50
WINDOW = 10.0


class RateLimitedLog:
    """``log(msg, *args)`` like a logger method, but at most ``burst`` lines per ``window``."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        level: int = logging.WARNING,
        burst: int = BURST,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._what = what
        self._level = level
        self._burst = burst
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = -window
        self._count = 0
        self._suppressed = 0
        self.total = 0

    def __call__(self, msg: str, *args: object) -> None:
        with self._lock:
            self.total += 1
            now = self._clock()
            if now - self._window_start >= self._window:
                self._summarise()
                self._window_start, self._count = now, 0
            if self._count >= self._burst:
                self._suppressed += 1
                return
            self._count += 1
        self._logger.log(self._level, msg, *args)

    def flush(self) -> None:
        """Say how many lines were suppressed so far (for instance when stopping)."""
        with self._lock:
            self._summarise()

    def _summarise(self) -> None:
        if self._suppressed:
            self._logger.log(self._level, "%d more %s were not logged", self._suppressed,
                             self._what)
            self._suppressed = 0
