"""A wake-up pipe for a thread that waits in a ZeroMQ poller.

The thread that owns a socket registers :attr:`WakePipe.fd` in its poller next to the socket;
other threads put their work on a queue and call :meth:`WakePipe.wake`, and the owner, once the
poller reports the pipe, calls :meth:`WakePipe.drain` and serves the queue. Both ends are
non-blocking: a full pipe means a wake-up is already pending, so waking never blocks.
"""

from __future__ import annotations

import os


class WakePipe:
    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write_fd, False)

    def wake(self) -> None:
        """Wake the poller's thread; never blocks, never raises."""
        try:
            os.write(self._write_fd, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the thread will wake anyway) or closed (stopping)

    def drain(self) -> None:
        """Read every pending wake-up (on the poller's thread)."""
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close both ends; once the poller's thread is done with the pipe."""
        for fd in (self.fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
