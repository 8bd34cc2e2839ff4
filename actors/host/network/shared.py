"""What the network actor shares with other threads without being asked: its running
configuration (read by the capability verbs) and the connectivity watch (told by the API
server's socket thread about every request). Both only take a lock for a moment."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from actors.host.network.model import NetConfig


class NetworkBoard:
    """The configuration the agent committed, written by the actor, read by any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config = NetConfig()

    def set(self, config: NetConfig) -> None:
        with self._lock:
            self._config = config

    def get(self) -> NetConfig:
        with self._lock:
            return self._config


@dataclass(frozen=True)
class _Armed:
    token: int
    client: str
    on_confirm: Callable[[int], None]


class ConnectivityWatch:
    """A change under a connectivity check waits here for its confirmation: a
    ``Host.confirmConnectivity`` or ``Host.ping2`` from anyone (:meth:`confirm`), or any
    request of the client that made the change (:meth:`seen`, called by the API server for
    every request it accepts). Only requests accepted after the change was applied count:
    the watch is armed then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: _Armed | None = None

    def arm(self, token: int, client: str, on_confirm: Callable[[int], None]) -> None:
        with self._lock:
            self._armed = _Armed(token, client, on_confirm)

    def disarm(self, token: int) -> None:
        with self._lock:
            if self._armed is not None and self._armed.token == token:
                self._armed = None

    def seen(self, client: str, verb: str) -> None:
        """A request of ``client`` was accepted (on the socket thread: never blocks)."""
        self._fire(lambda armed: armed.client == client)

    def confirm(self) -> bool:
        """An explicit confirmation; True if a change was waiting for one."""
        return self._fire(lambda armed: True)

    def _fire(self, matches: Callable[[_Armed], bool]) -> bool:
        with self._lock:
            armed = self._armed
            if armed is None or not matches(armed):
                return False
            self._armed = None
        armed.on_confirm(armed.token)  # tells the actor
        return True
