"""The mailbox's actors: ``mailbox`` (this host's requests) and ``mailmon`` (the SPM's server).

Both are thin: the work is on the thread their plain class owns (:class:`MailClient`,
:class:`MailServer`); the actors give them a place in the supervision tree (a crash restarts
them; ``Actors.inspect`` shows their state) and the messages that drive them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from actors.base import ActorContext, SupervisedActor
from actors.storage.mailbox.client import MailClient, Paths
from actors.storage.mailbox.format import Message
from actors.storage.mailbox.server import MailServer, Serve


class MailboxActor(SupervisedActor):
    """``/storage/pools/<spUUID>/mailbox``: sends this host's extension requests to the SPM."""

    def __init__(self, ctx: ActorContext, *, host_id: int, paths: Paths, io_timeout: float,
                 poll: float) -> None:
        super().__init__(ctx)
        self.host_id = host_id
        self.paths = paths
        self.io_timeout = io_timeout
        self.poll = poll
        self._client: MailClient | None = None

    def setup(self) -> None:
        self._client = MailClient(host_id=self.host_id, paths=self.paths,
                                  io_timeout=self.io_timeout, poll=self.poll,
                                  name=f"mailbox-{self.ctx.path.split('/')[3][:8]}")

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()

    def describe(self) -> dict[str, Any]:
        return self._client.describe() if self._client else {}

    def extend(self, sd_uuid: str, img_uuid: str, vol_uuid: str,
               size: int) -> Future[Message]:
        """Ask the SPM; the future resolves with its reply (answered at once)."""
        assert self._client is not None
        return self._client.extend(sd_uuid, img_uuid, vol_uuid, size)


@dataclass(frozen=True)
class SpmTerm:
    """This host gained (``active``) or lost the SPM role."""

    active: bool


class MailMonitor(SupervisedActor):
    """``/storage/pools/<spUUID>/mailmon``: serves every host's requests while this is SPM."""

    def __init__(self, ctx: ActorContext, *, paths: Paths, hosts: int, io_timeout: float,
                 poll: float, serve: Serve, active: bool,
                 live: Callable[[], int] | None = None, idle_poll: float | None = None) -> None:
        super().__init__(ctx)
        self.live = live
        self.idle_poll = idle_poll
        self.paths = paths
        self.hosts = hosts
        self.io_timeout = io_timeout
        self.poll = poll
        self.serve = serve
        self._active = active
        self._server: MailServer | None = None

    def setup(self) -> None:
        self._server = MailServer(paths=self.paths, hosts=self.hosts,
                                  io_timeout=self.io_timeout, poll=self.poll, serve=self.serve,
                                  name=f"mailmon-{self.ctx.path.split('/')[3][:8]}",
                                  live=self.live, idle_poll=self.idle_poll)
        if self._active:
            self._server.activate()

    def teardown(self) -> None:
        if self._server is not None:
            self._server.close()

    def describe(self) -> dict[str, Any]:
        return self._server.describe() if self._server else {}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, SpmTerm):
            assert self._server is not None
            self._active = message.active
            if message.active:
                self._server.activate()
            else:
                self._server.deactivate()
            return None
        return super().on_receive(message)
