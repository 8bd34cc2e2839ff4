"""The SPM's writer process: ``python -m actors.storage.spm.writer`` (started by the keeper).

It reads its :class:`~actors.storage.spm.writerconf.WriterConfig` from stdin, asks to be
killed with its parent (the keeper), keeps the storage commands it runs in its own process
group (so that the keeper's ``killpg`` ends them too), serves the writer verbs
(:mod:`actors.storage.spm.wire`) on its ipc endpoint, prints ``ready`` on stdout once it
serves, and runs until it is killed or told to stop (SIGTERM).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import zmq

from actors.storage import command
from actors.storage.locator import DomainLocator
from actors.storage.sd.filecreate import FilePreallocation
from actors.storage.spm import procutil
from actors.storage.spm.fence import FenceError, FenceReader
from actors.storage.spm.guard import FenceGuard
from actors.storage.spm.journal import Journal
from actors.storage.spm.wire import WRITER_SCHEMA
from actors.storage.spm.writerconf import WriterConfig
from actors.storage.spm.writerops import WriterOps
from actors.storage.usage import VolumeUsage
from messaging.server import ApiServer, ServerConfig

log = logging.getLogger("vdsm-writer")

FENCE_WATCH = 0.2
"""Seconds between two looks of the writer at its fence (one mmap read: nearly free)."""


def watch_fence(fence: FenceReader, lver: int, stop: threading.Event, period: float,
                journal: Journal | None) -> None:
    """The writer fences itself: once the fence no longer allows its lver (the deadline the
    keeper last published passed, or the keeper marked it fenced), it kills its own process
    group (itself and the commands it runs). This covers a keeper that is stopped while the
    writer is not (a SIGSTOP of vdsmd's process group does not reach the writer's): a write
    already running in a command cannot outlive the lease by more than ``period``."""
    while not stop.wait(period):
        try:
            allowed = fence.read().allows(lver)
        except FenceError:
            continue  # being rewritten nonstop: the guard refuses writes meanwhile
        if not allowed:
            log.error("the SPM lease (lver %d) is no longer held: the writer kills itself", lver)
            if journal is not None:
                journal.append({"ev": "kill", "writer": os.getpid(), "t": time.monotonic(),
                                "lver": lver, "by": "itself"})
            os.killpg(0, signal.SIGKILL)


def serve(config: WriterConfig, stop: threading.Event) -> None:
    fence = FenceReader(Path(config.fence_path))
    journal = Journal(Path(config.journal_dir), config.host_id) if config.journal_dir else None
    threading.Thread(target=watch_fence, args=(fence, config.lver, stop, FENCE_WATCH, journal),
                     name="fence-watch", daemon=True).start()
    guard = FenceGuard(fence, sp_uuid=config.sp_uuid, lver=config.lver, journal=journal)
    locator = DomainLocator(
        mnt_root=Path(config.mnt_root), links_dir=Path(config.links_dir),
        file_preallocation=cast(FilePreallocation, config.file_preallocation))
    usage = VolumeUsage(Path(config.prepared_dir), lock_timeout=config.lock_timeout)
    ops = WriterOps(locator=locator, guard=guard, usage=usage, sp_uuid=config.sp_uuid,
                    master_sd=config.master_sd, lver=config.lver,
                    io_timeout=config.io_timeout, mail_hosts=config.mail_hosts)
    context: zmq.Context[Any] = zmq.Context()
    server = ApiServer(context=context,
                       config=ServerConfig(endpoint=config.endpoint, workers=config.workers),
                       schema=WRITER_SCHEMA, bindings=ops.bindings())
    server.start()
    Path(config.endpoint.removeprefix("ipc://")).chmod(0o600)
    log.info("writer of pool %s (lver %d) serving on %s", config.sp_uuid, config.lver,
             config.endpoint)
    print("ready", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
        context.term()


def main() -> int:
    config = WriterConfig.from_json(sys.stdin.read())
    procutil.die_with_parent(signal.SIGKILL, config.keeper_pid)
    command.set_new_session(False)  # commands die with this process group
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s [writer %(threadName)s] "
                        "%(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    serve(config, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
