"""The agent's one way into the kernel's network configuration: rtnetlink, through pyroute2.

:class:`Netlink` is a blocking facade over pyroute2's ``AsyncIPRoute`` with an event loop of
its own: it is made, used and closed by one thread (the network actor's apply thread, or a
verb's worker reading the state). No ``ip`` command is run and no text is parsed.
"""

from __future__ import annotations

import asyncio
import errno
import secrets
from collections.abc import Coroutine
from typing import Any, TypeVar

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from actors.host.network import netstate, ops

T = TypeVar("T")
AF_INET = 2


class Netlink:
    """rtnetlink requests and dumps. ``netns`` (tests only) opens the socket in a named
    network namespace instead of the caller's."""

    def __init__(self, netns: str | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._ipr = self._run(self._open(netns))
        except BaseException:
            self._loop.close()
            raise

    async def _open(self, netns: str | None) -> Any:
        ipr = AsyncIPRoute(netns=netns, flags=0) if netns else AsyncIPRoute()
        await ipr.setup_endpoint()
        return ipr

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            self._ipr.close()
        finally:
            self._loop.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests --------------------------------------------------------------------------

    def request(self, message: tuple[Any, int, int]) -> None:
        """Send one request built by :mod:`ops`; NetlinkError if the kernel refuses it."""
        msg, msg_type, flags = message

        async def go() -> None:
            async for _ in await self._ipr.nlm_request(msg, msg_type, flags):
                pass

        self._run(go())

    def kind_supported(self, kind: str) -> tuple[bool, str]:
        """Whether the kernel can create links of ``kind`` (and its answer), asking it with
        a request that cannot create anything (:func:`ops.probe_kind`)."""
        name = f"vdsmprb{secrets.token_hex(4)}"
        try:
            self.request(ops.probe_kind(kind, name))
        except NetlinkError as e:
            if e.code == errno.EOPNOTSUPP:
                return False, "Operation not supported"
            return True, str(e)
        # the kernel made it after all: remove it at once
        link = self.links().get(name)
        if link is not None:
            self.request(ops.delete_link(link.index))
        return True, "created"

    # --- dumps -----------------------------------------------------------------------------

    def _dump(self, method: Any, **kwargs: Any) -> list[Any]:
        async def go() -> list[Any]:
            return [m async for m in await method(**kwargs)]

        return self._run(go())

    def links(self) -> dict[str, netstate.Link]:
        return {link.name: link
                for link in map(netstate.link_from, self._dump(self._ipr.get_links))}

    def snapshot(self) -> netstate.HostNet:
        return netstate.build(
            self._dump(self._ipr.get_links),
            self._dump(self._ipr.get_addr, family=AF_INET),
            [r for r in self._dump(self._ipr.get_routes, family=AF_INET)
             if (r.get("RTA_TABLE") or r["table"]) == netstate.MAIN_TABLE],
        )
