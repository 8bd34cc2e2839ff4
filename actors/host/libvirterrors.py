"""libvirt's error handler: errors go to the agent's log, at a level that fits, not to stderr.

By default libvirt's client prints every error as a raw line on stderr, expected ones
included: "Domain not found" when the agent looks a domain up during a create, a destroy or
a recovery pass. Every error also reaches the caller as a ``libvirtError``, which handles it
where it has a meaning (a verb's error reply, a status); so this handler only logs:

- errors that are part of normal operation (no such domain, no metadata, an operation not
  valid in the domain's state) at DEBUG;
- trouble with the connection to libvirtd (RPC, system errors) at WARNING, and any other
  error at INFO, each through a :class:`~messaging.ratelog.RateLimitedLog` (a libvirtd that
  went away fails every call at once).

The handler is process-wide (a libvirt rule): :func:`register` installs it once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import libvirt

from messaging.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

EXPECTED = frozenset({
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_DOMAIN_METADATA,
    libvirt.VIR_ERR_OPERATION_INVALID,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    libvirt.VIR_ERR_NO_NETWORK,
})
CONNECTION_DOMAINS = frozenset({libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE})
CONNECTION_CODES = frozenset({libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_NO_CONNECT,
                              libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC})


class ErrorLog:
    """What the handler does with one error (``virGetLastError``'s fields)."""

    def __init__(self) -> None:
        self.connection = RateLimitedLog(log, "libvirt connection errors")
        self.other = RateLimitedLog(log, "libvirt errors", level=logging.INFO)

    def __call__(self, _opaque: Any, error: Sequence[Any]) -> None:
        try:
            code, domain, message = int(error[0]), int(error[1]), str(error[2]).strip()
        except (TypeError, ValueError, IndexError):
            log.debug("libvirt error %r", error)
            return
        if code in EXPECTED:
            log.debug("libvirt: %s (code %d)", message, code)
        elif domain in CONNECTION_DOMAINS or code in CONNECTION_CODES:
            self.connection("libvirt: %s (code %d)", message, code)
        else:
            self.other("libvirt: %s (code %d)", message, code)


_lock = threading.Lock()
_registered: ErrorLog | None = None


def register() -> ErrorLog:
    """Install the handler (once per process: libvirt's handler is process-global state)."""
    global _registered  # noqa: PLW0603 - libvirt's error handler is process-global state
    with _lock:
        if _registered is None:
            _registered = ErrorLog()
            libvirt.registerErrorHandler(_registered, None)
        return _registered
