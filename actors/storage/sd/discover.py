"""Finding and opening file-based domains under the connections' root.

Every connection is a path ``<mnt_root>/<escaped connection>`` (see
:mod:`actors.storage.mount`), so a file or loop domain is ``<mnt_root>/*/<sdUUID>``. Looking
touches every connected filesystem: like every backend call it may hang on a dead mount and
belongs on a worker, not on an actor's thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from actors.storage.sd.filedomain import FileDomain
from actors.storage.sd.filelayout import DOM_MD, Layout
from actors.storage.sd.loopdomain import LoopDomain
from actors.storage.sd.records import check_uuid
from messaging.errors import NoSuchStorageDomain

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 4096
"""Entries of the root looked at, at most (a bound on a runaway directory)."""


def find_file_domain(mnt_root: Path, sd_uuid: str) -> Path:
    """The connection path holding domain ``sd_uuid``; :class:`NoSuchStorageDomain` if none."""
    sd_uuid = check_uuid(sd_uuid, "storagedomainID")
    if mnt_root.is_dir():
        for count, connection in enumerate(sorted(mnt_root.iterdir())):
            if count >= MAX_CONNECTIONS:
                log.warning("more than %d connections under %s: search cut short",
                            MAX_CONNECTIONS, mnt_root)
                break
            if (connection / sd_uuid / DOM_MD / "metadata").is_file():
                return connection
    raise NoSuchStorageDomain(sdUUID=sd_uuid)


def open_file_domain(mount: Path, sd_uuid: str, *, run_dir: Path,
                     **options: Any) -> FileDomain:
    """The domain at ``<mount>/<sdUUID>`` as the class its metadata's TYPE names.

    ``options`` go to the constructor (``space_precheck``; ``preallocation`` for file
    domains, ``chunk_size`` for loop domains).
    """
    meta = Layout(mount, sd_uuid).read_metadata()
    if meta.domain_type in LoopDomain.DOMAIN_TYPES:
        return LoopDomain(mount, sd_uuid, run_dir=run_dir, **options)
    return FileDomain(mount, sd_uuid, **options)
