"""This agent's host UUID: ``<state_dir>/host-uuid``, made once.

One name for the host everywhere: the owner name its host-id records carry on shared
storage, ``hostUUID`` in Host.getCapabilities, and what vdsm-tool register announces to an
engine (docs/registration.md). Per state directory, so that several agents on one machine
(the multi-host tests) are distinct hosts; the machine's DMI UUID is reported apart
(``systemUUID``). Plain file I/O: the host layer uses it and must not import storage.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


def host_uuid(state_dir: Path) -> str:
    path = state_dir / "host-uuid"
    try:
        return str(uuid.UUID(path.read_text().strip()))
    except FileNotFoundError:
        pass
    except ValueError:
        log.error("%s holds no UUID: making a new one", path)
    made = str(uuid.uuid4())
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".host-uuid.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, made.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return made
