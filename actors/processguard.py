"""The root supervisor's parent: the process itself.

A supervisor escalates what it cannot handle to its parent. The root has no supervisor
above it, so an escalation past the root (the root gives up on a whole subsystem, or the
root itself fails or stops while nobody asked it to) used to be recorded and forgotten: the
daemon went on answering ``Host.ping`` with a dead tree behind it. :class:`ProcessGuard` is
the root's ``ctx.supervisor``: it turns any such message into a call of ``on_fatal(reason)``,
and the daemon then stops what it can and exits with a non-zero status, so that the service
manager restarts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pykka

from actors.base import ChildFailed, ChildStopped
from actors.supervisor import ChildGaveUp

log = logging.getLogger(__name__)


class ProcessGuard(pykka.ThreadingActor):
    """Receives what the root reports to its supervisor; every report is fatal."""

    def __init__(self, on_fatal: Callable[[str], None]) -> None:
        super().__init__()
        self._on_fatal = on_fatal

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildGaveUp):
            self._on_fatal(f"the root supervisor gave up: {message.reason}")
        elif isinstance(message, ChildFailed):
            self._on_fatal(f"the root supervisor failed: {message.reason}")
        elif isinstance(message, ChildStopped):
            self._on_fatal("the root supervisor stopped")
        else:
            log.warning("process guard: unexpected message %r", message)
        return None

    def on_stop(self) -> None:
        # A BaseException anywhere stops every pykka actor, this one included.
        self._on_fatal("the actor system stopped")
