"""The SPM lease version (LVER) stamped into every metadata record written under the lease.

The LVER is the lease's fencing token: each acquisition of the SPM lease bumps it. The SPM's
writer runs every metadata write inside :meth:`~actors.storage.spm.guard.FenceGuard.write`,
which sets the version here for that write (on its own thread: a context variable); the
records written meanwhile carry it (a volume's ``lver``, a domain's ``SPM_LVER`` key), so
that the last writer of any record can be told from the metadata itself, and a record
carrying a version newer than the writer's shows that a later SPM has been there.

Outside a guarded write (vdsmd itself, a domain being created before it joins a pool)
nothing is stamped and a record keeps the version it had.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["DOMAIN_KEY", "current_lver", "stamping"]

DOMAIN_KEY = "SPM_LVER"

_LVER: ContextVar[int | None] = ContextVar("spm_lver", default=None)


@contextlib.contextmanager
def stamping(lver: int) -> Iterator[None]:
    """Metadata written in the block (on this thread) carries ``lver``."""
    token = _LVER.set(lver)
    try:
        yield
    finally:
        _LVER.reset(token)


def current_lver() -> int | None:
    """The lease version of the guarded write in progress on this thread, if any."""
    return _LVER.get()
