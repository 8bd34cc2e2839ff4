"""The other hosts this agent may migrate VMs to: ``[peers.<name>]`` of the config.

``VM.migrate``'s ``dst`` names a peer: by its name, or by its endpoint (``tcp://HOST:PORT``,
or vdsm's ``HOST:PORT``). Nothing else is reachable: a client cannot make the agent (root)
connect to an address the operator did not list, and every peer is known by its server key,
so the agent never hands a VM to an impostor. This host's key pair (``[curve]
server_secret``) is its identity with the peer (the peer authorises its public key).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from actors.config import PeerConfig
from messaging.curve import ClientCurve
from messaging.errors import InvalidParams
from messaging.peer import PeerClient


class Peers:
    def __init__(self, peers: Mapping[str, PeerConfig], *, own_secret: Path | None,
                 connect_timeout: float) -> None:
        self._peers = dict(peers)
        self._own_secret = own_secret
        self.connect_timeout = connect_timeout

    def names(self) -> list[str]:
        return sorted(self._peers)

    def resolve(self, dst: str, where: str = "dst") -> tuple[str, PeerConfig]:
        """The peer ``dst`` names (InvalidParams naming ``where`` if none)."""
        if dst in self._peers:
            return dst, self._peers[dst]
        wanted = dst if dst.startswith("tcp://") else f"tcp://{dst}"
        for name, peer in self._peers.items():
            if peer.endpoint == wanted:
                return name, peer
        known = ", ".join(self.names()) or "none"
        raise InvalidParams(where, f"{dst[:120]!r} is not a peer of this host (its peers: "
                                   f"{known}; see [peers] in the agent's config)")

    def client(self, name: str) -> PeerClient:
        peer = self._peers[name]
        if self._own_secret is None:  # the config check forbids peers without keys
            raise InvalidParams("dst", "this host has no CURVE key pair to call its peers")
        return PeerClient(name, peer.endpoint, ClientCurve(self._own_secret, peer.public_key),
                          connect_timeout=self.connect_timeout)
