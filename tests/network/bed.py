"""A host namespace running a real vdsmd and a peer namespace on the far side of its NICs.

``bed(tmp_path, nics=2)`` makes namespaces H (the agent's host) and P (the network it is
plugged into), joined by veth pairs ``veth_h<i>`` (H's NICs) and ``p<i>`` (P's ends, up,
with ``10.20<i>.0.2/24``), and removes everything afterwards. ``Bed.vdsmd()`` runs vdsmd
inside H (``ip netns exec``): its netlink changes only ever reach H.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from messaging.client import ClientError
from tests.harness import Vdsmd
from tests.netns import NetNs, namespaces, veth

CONFIG = """
[host]
stats_interval = 0.5
[network]
dhcp_timeout = {dhcp_timeout}
{network}
"""


def peer_address(i: int) -> str:
    return f"10.20{i}.0.2"


@dataclass
class Bed:
    host: NetNs
    peer: NetNs
    workdir: Path
    daemons: list[Vdsmd] = field(default_factory=list)

    def vdsmd(self, config: str = "", *, name: str = "vdsmd", dhcp_timeout: float = 15.0,
              network: str = "", **kwargs: Any) -> Vdsmd:
        """``network``: more lines of the [network] section."""
        daemon = Vdsmd(self.workdir / name,
                       config=config + CONFIG.format(dhcp_timeout=dhcp_timeout,
                                                     network=network),
                       wrapper=tuple(self.host.exec_argv([])), **kwargs)
        self.daemons.append(daemon)
        return daemon


@contextmanager
def bed(tmp_path: Path, nics: int = 2) -> Iterator[Bed]:
    with namespaces("h", "p") as (host, peer):
        for i in range(nics):
            veth(host, f"veth_h{i}", peer, f"p{i}")
            peer.ip("addr", "add", f"{peer_address(i)}/24", "dev", f"p{i}")
        made = Bed(host, peer, tmp_path)
        try:
            yield made
        finally:
            for daemon in made.daemons:
                try:
                    daemon.stop(timeout=30)
                finally:
                    daemon.kill()


def error_of(call: Any) -> ClientError:
    """The ClientError a call raises (fails the test if it answers)."""
    try:
        result = call()
    except ClientError as e:
        return e
    raise AssertionError(f"expected an error, got {result!r}")
