"""The network service: builds the ``/host/network`` actor, its verbs and the capability
reader, and holds what the API server and the capability verbs share with the actor (the
running configuration's board, the connectivity watch)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pykka

from actors.base import ActorContext, Runtime
from actors.config import NetworkConfig
from actors.directory import ServiceRef
from actors.host.network import api, caps, dhcp
from actors.host.network.actor import LeaseChanged, NetworkActor
from actors.host.network.apply import Applier
from actors.host.network.netlink import Netlink
from actors.host.network.persist import NetStore
from actors.host.network.shared import ConnectivityWatch, NetworkBoard
from actors.supervisor import ChildSpec
from messaging.errors import VdsmError
from messaging.server import Binding

log = logging.getLogger(__name__)

PATH = "/host/network"


class NetworkService:
    def __init__(self, config: NetworkConfig, *, runtime: Runtime, state_dir: Path,
                 run_dir: Path) -> None:
        self.config = config
        self.board = NetworkBoard()
        self.watch = ConnectivityWatch()
        self._store = NetStore(state_dir)
        self._run_dir = run_dir / "network"
        self._ref: ServiceRef[NetworkActor] = ServiceRef(runtime.directory, PATH)

    def child_spec(self) -> ChildSpec:
        return ChildSpec("network", self._start, cls="NetworkActor", stop_timeout=60.0)

    def _start(self, ctx: ActorContext) -> pykka.ActorRef[NetworkActor]:
        cancel = threading.Event()  # one per incarnation: set when it stops
        applier = Applier(dhcp_client=self._dhcp_client, dhcp_timeout=self.config.dhcp_timeout,
                          fake_nics=self.config.fake_nics, cancel=cancel)
        return NetworkActor.start(ctx, applier=applier, store=self._store, board=self.board,
                                  watch=self.watch, cancel=cancel,
                                  max_queued=self.config.max_queued)

    def _dhcp_client(self, network: str, device: str) -> dhcp.DhcpClient:
        """Made on the apply thread, when a step starts a network's DHCP."""
        script = dhcp.write_script(self._run_dir)
        return dhcp.DhcpClient(network, device, command=self.config.dhcp_client,
                               script=script, run_dir=self._run_dir,
                               on_change=self._lease_changed)

    def _lease_changed(self, network: str) -> None:
        try:
            self._ref.tell(LeaseChanged(network))
        except (VdsmError, pykka.ActorDeadError):
            log.info("DHCP lease of %s changed while the network actor is down", network)

    def capabilities(self) -> dict[str, Any]:
        """The network part of the host's capabilities (a few netlink dumps)."""
        with Netlink() as nl:
            live = nl.snapshot()
        return caps.capabilities(live, self.board.get(), self.config.fake_nics)

    def bindings(self) -> dict[str, Binding]:
        return api.bindings(network=self._ref, watch=self.watch,
                            capabilities=self.capabilities,
                            budget=self.config.apply_timeout + self.config.dhcp_timeout)
