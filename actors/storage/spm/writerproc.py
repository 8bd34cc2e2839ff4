"""The keeper's handle on its writer process: start it, learn when it serves, when it ends.

The writer is started from the keeper's main thread (so that its parent-death signal fires
exactly when the keeper process dies), in a session of its own (its pid is its process group,
which the fencer kills whole). A watcher thread reads its ``ready`` line and waits for its
exit, and reports both through ``on_event``; nothing here blocks the keeper.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from actors.storage.spm import procutil
from actors.storage.spm.writerconf import WriterConfig

log = logging.getLogger(__name__)

READY = "ready"


class WriterProcess:
    def __init__(self, config: WriterConfig, *, pidfile: Path,
                 on_event: Callable[[str, int, int | None], None]) -> None:
        """``on_event(kind, pid, rc)``: kind ``ready`` or ``exit`` (on the watcher thread)."""
        self.config = config
        self.endpoint = config.endpoint
        self.lver = config.lver
        self.ready = False
        self.exited = False
        self._pidfile = pidfile
        self._on_event = on_event
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "actors.storage.spm.writer"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
            close_fds=True,
        )
        self.pid = self._proc.pid
        procutil.write_pidfile(pidfile, self.pid)
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(config.to_json().encode())
            self._proc.stdin.close()
        except OSError as e:
            log.error("cannot hand the writer its config: %s", e)
        threading.Thread(target=self._watch, name=f"writer-{self.pid}", daemon=True).start()

    def _watch(self) -> None:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode(errors="replace").strip()
        if line == READY:
            self._on_event("ready", self.pid, None)
        rc = self._proc.wait()
        self._on_event("exit", self.pid, rc)

    def kill(self) -> None:
        procutil.kill_group(self.pid)

    def describe(self) -> dict[str, object]:
        return {"pid": self.pid, "endpoint": self.endpoint, "lver": self.lver,
                "ready": self.ready, "exited": self.exited}
