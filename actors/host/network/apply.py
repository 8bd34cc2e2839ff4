"""Runs a plan's steps through netlink, journaling how to undo each, and rolls back exactly.

An :class:`Applier` lives on the network actor's one apply thread: every write to the host's
network configuration (changes, rollbacks, DHCP leases) goes through it, one at a time.
Before each step it reads what the step will change and records the inverse step; when a
step fails, the recorded steps run in reverse and the links, addresses and routes the change
touched are compared with the snapshot taken before it: a difference is reported as
:class:`NetworkRollbackFailed` (never silently).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from actors.host.network import ops
from actors.host.network.dhcp import DhcpClient, Lease
from actors.host.network.model import NetConfig, Request
from actors.host.network.netlink import Netlink
from actors.host.network.netstate import HostNet
from actors.host.network.plan import plan
from actors.host.network.validate import check
from messaging.errors import DhcpFailed, NetworkApplyFailed, NetworkRollbackFailed

log = logging.getLogger(__name__)

DhcpFactory = Callable[[str, str], DhcpClient]


@dataclass
class Transaction:
    """An applied change that can still be undone."""

    before: HostNet
    journal: list[ops.Op] = field(default_factory=list)  # undo steps, in the order done
    touched: set[str] = field(default_factory=set)


class StepFailed(Exception):
    def __init__(self, step: ops.Op, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


class Applier:
    """The apply thread's worker: the only writer of the host's network configuration."""

    def __init__(self, *, dhcp_client: DhcpFactory, dhcp_timeout: float,
                 fake_nics: tuple[str, ...], cancel: threading.Event,
                 netns: str | None = None) -> None:
        self._dhcp_client = dhcp_client
        self._dhcp_timeout = dhcp_timeout
        self._fake_nics = fake_nics
        self._cancel = cancel
        self._netns = netns
        self.clients: dict[str, DhcpClient] = {}

    def netlink(self) -> Netlink:
        return Netlink(self._netns)

    # --- a whole change ----------------------------------------------------------------------

    def apply(self, request: Request, old: NetConfig) -> tuple[NetConfig, Transaction]:
        """Check ``request`` against the host, then apply it: the new configuration and the
        transaction (to undo it if connectivity is not confirmed). Nothing is left changed
        when this raises."""
        new = old.merged(request)
        with self.netlink() as nl:
            live = nl.snapshot()
            check(request, old, new, live, fake_nics=self._fake_nics,
                  kind_supported=nl.kind_supported)
            steps = plan(live, old, new)
            log.info("network change: %d steps: %s", len(steps),
                     "; ".join(s.describe() for s in steps) or "nothing to do")
            return new, self.run(nl, steps, live, new)

    def reconcile(self, old: NetConfig, new: NetConfig) -> Transaction:
        """Bring the host from ``old`` to ``new`` (restore at start), unchecked."""
        with self.netlink() as nl:
            live = nl.snapshot()
            return self.run(nl, plan(live, old, new), live, new)

    def run(self, nl: Netlink, steps: list[ops.Op], live: HostNet,
            config: NetConfig) -> Transaction:
        tx = Transaction(before=live)
        for step in steps:
            tx.touched |= _names(step)
            try:
                self._do(nl, step, tx, config)
            except Exception as e:  # a bug midway too: never leave the change half-done
                reason = e.reason if isinstance(e, StepFailed) else _reason(e)
                if isinstance(e, NetlinkError | OSError | KeyError | StepFailed | DhcpFailed):
                    log.warning("network change failed at %r: %s; rolling back",
                                step.describe(), reason)
                else:
                    log.exception("network change failed at %r (a bug); rolling back",
                                  step.describe())
                self.rollback(nl, tx, reason)
                if isinstance(e, DhcpFailed):
                    raise
                raise NetworkApplyFailed(step=step.describe(), reason=reason) from e
        return tx

    def rollback(self, nl: Netlink, tx: Transaction, reason: str) -> None:
        """Undo ``tx`` in reverse order and check the result against its snapshot."""
        problems = []
        for undo in reversed(tx.journal):
            try:
                self._do(nl, undo, Transaction(before=tx.before), None)
            except Exception as e:  # the other undo steps still run; the check reports it
                problems.append(f"{undo.describe()}: {_reason(e)}")
                log.exception("undoing the network change: %s failed", undo.describe())
        tx.journal.clear()
        after = nl.snapshot()
        want, got = tx.before.view(tx.touched), after.view(tx.touched)
        if want != got:
            problems.append(f"expected {want}, found {got}")
        if problems:
            raise NetworkRollbackFailed(reason=reason, detail="; ".join(problems)[:2000])
        log.info("the network change was rolled back exactly")

    def undo(self, tx: Transaction, reason: str) -> None:
        with self.netlink() as nl:
            self.rollback(nl, tx, reason)

    # --- one step -----------------------------------------------------------------------------

    def _do(self, nl: Netlink, step: ops.Op, tx: Transaction, config: NetConfig | None) -> None:
        links = nl.links()
        if isinstance(step, ops.CreateLink):
            parent = links[step.parent].index if step.parent else None
            nl.request(ops.create_link(step, parent))
            tx.journal.append(ops.DeleteLink(step.name, step))
        elif isinstance(step, ops.DeleteLink):
            link = links[step.name]
            # as it was before the change: a bridge whose ports the change released may
            # have lost the MAC it took from them (and a zero MAC cannot be set)
            was = tx.before.links.get(step.name, link)
            nl.request(ops.delete_link(link.index))
            tx.journal.append(dataclasses.replace(step.recipe, mac=was.mac, mtu=was.mtu))
        elif isinstance(step, ops.SetLink):
            self._set_link(nl, step, links, tx)
        elif isinstance(step, ops.AddAddr | ops.DelAddr):
            index = links[step.device].index
            add = isinstance(step, ops.AddAddr)
            nl.request((ops.add_addr if add else ops.del_addr)(index, step.address, step.prefix))
            inverse = ops.DelAddr if add else ops.AddAddr
            tx.journal.append(inverse(step.device, step.address, step.prefix))
        elif isinstance(step, ops.AddRoute):
            nl.request(ops.add_route(step, links[step.device].index))
            tx.journal.append(ops.DelRoute(**dataclasses.asdict(step)))
        elif isinstance(step, ops.DelRoute):
            nl.request(ops.del_route(step, links[step.device].index))
            tx.journal.append(ops.AddRoute(**dataclasses.asdict(step)))
        elif isinstance(step, ops.StartDhcp):
            self._start_dhcp(nl, step, tx)
        elif isinstance(step, ops.StopDhcp):
            client = self.clients.pop(step.network, None)
            if client is not None:
                client.stop()
            tx.journal.append(ops.StartDhcp(step.network, step.device,
                                            default_route=step.default_route))

    def _set_link(self, nl: Netlink, step: ops.SetLink, links: dict[str, Any],
                  tx: Transaction) -> None:
        link = links[step.name]
        master = None
        if step.master is not None:
            master = links[step.master].index if step.master else 0
        old_master = ""
        if link.master is not None:
            old_master = next((x.name for x in links.values() if x.index == link.master), "")
        nl.request(ops.set_link(link.index, mtu=step.mtu, master=master, up=step.up))
        tx.journal.append(ops.SetLink(
            step.name,
            mtu=link.mtu if step.mtu is not None else None,
            master=old_master if step.master is not None else None,
            up=link.up if step.up is not None else None,
        ))

    def _start_dhcp(self, nl: Netlink, step: ops.StartDhcp, tx: Transaction) -> None:
        old = self.clients.pop(step.network, None)
        if old is not None:
            old.stop()
        client = self._dhcp_client(step.network, step.device)
        client.start()
        self.clients[step.network] = client
        tx.journal.append(ops.StopDhcp(step.network, step.device, step.default_route))
        if not step.wait:
            return
        lease = client.wait_lease(self._dhcp_timeout, self._cancel)
        if lease is None:
            raise DhcpFailed(network=step.network, device=step.device,
                             timeout=self._dhcp_timeout)
        for lease_step in lease_steps(nl.snapshot(), client, step.default_route):
            tx.touched |= _names(lease_step)
            self._do(nl, lease_step, tx, None)
        client.applied = lease

    # --- DHCP leases after a change -------------------------------------------------------

    def sync_lease(self, network: str, default_route: bool) -> bool:
        """Apply the current lease of ``network``'s client; True if anything changed."""
        client = self.clients.get(network)
        if client is None:
            return False
        with self.netlink() as nl:
            steps = lease_steps(nl.snapshot(), client, default_route)
            tx = Transaction(before=HostNet())
            for step in steps:
                self._do(nl, step, tx, None)
        client.applied = client.lease()
        return bool(steps)

    def stop_clients(self) -> None:
        for client in self.clients.values():
            client.stop()
        self.clients.clear()


def lease_steps(live: HostNet, client: DhcpClient, default_route: bool) -> list[ops.Op]:
    """What makes the device carry the client's current lease instead of the applied one."""
    device, applied, lease = client.device, client.applied, client.lease()
    present = {(a.address, a.prefix) for a in live.addrs_of(device)}
    link = live.links.get(device)
    steps: list[ops.Op] = []
    if applied is not None and (lease is None or _cidr(applied) != _cidr(lease)):
        if applied.router and default_route and link is not None:
            for route in live.default_routes():
                if route.oif == link.index and route.gateway == applied.router:
                    steps.append(ops.DelRoute(route.dst, route.gateway, device, route.priority,
                                              route.proto, route.scope))
        if _cidr(applied) in present:
            steps.append(ops.DelAddr(device, applied.address, applied.prefix))
    if lease is not None and _cidr(lease) not in present:
        steps.append(ops.AddAddr(device, lease.address, lease.prefix))
    if lease is not None and lease.router and default_route and link is not None:
        routes = live.default_routes()
        if not any(r.oif == link.index and r.gateway == lease.router for r in routes):
            for route in routes:
                other = live.by_index(route.oif)
                steps.append(ops.DelRoute(route.dst, route.gateway,
                                          other.name if other else device, route.priority,
                                          route.proto, route.scope))
            steps.append(ops.AddRoute("0.0.0.0/0", lease.router, device))
    return steps


def _cidr(lease: Lease) -> tuple[str, int]:
    return lease.address, lease.prefix


def _names(step: ops.Op) -> set[str]:
    if isinstance(step, ops.CreateLink | ops.DeleteLink | ops.SetLink):
        names = {step.name}
        if isinstance(step, ops.SetLink) and step.master:
            names.add(step.master)
        return names
    return {step.device}


def _reason(error: BaseException) -> str:
    if isinstance(error, NetlinkError):
        return f"the kernel refused it: {error.args[1] if len(error.args) > 1 else error}"
    if isinstance(error, KeyError):
        return f"link {error.args[0]} vanished"
    return str(error)
