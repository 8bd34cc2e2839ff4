"""From the configuration the host has to the one asked for: the list of steps.

The planner compares the links each configuration needs (:class:`Layout`) with the host's
live state and returns the steps in an order the kernel accepts: DHCP clients stopped,
routes and addresses removed, ports released and links deleted first; then links created,
MTUs set (lowered from the top of each stack down, raised from the bottom up), ports
enslaved, links brought up, addresses added, DHCP started, the default route added. A
network that stays keeps its bridge (VM NICs attached to it stay attached); an edit only
changes what differs. The plan is data: tests check it without a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.host.network import ops
from actors.host.network.model import DEFAULT_MTU, NetConfig, Network
from actors.host.network.netstate import HostNet
from actors.host.network.validate import owned_links

LEVEL = {"nic": 0, "bond": 1, "vlan": 2, "bridge": 3}


@dataclass
class Layout:
    """The links one configuration needs, and their settings."""

    recipes: dict[str, ops.CreateLink] = field(default_factory=dict)  # links it makes
    kinds: dict[str, str] = field(default_factory=dict)  # every device -> level kind
    masters: dict[str, str] = field(default_factory=dict)  # port/slave -> bridge/bond
    mtus: dict[str, int] = field(default_factory=dict)
    addrs: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    managed: set[str] = field(default_factory=set)  # devices whose addresses it owns
    dhcp: dict[str, tuple[str, bool]] = field(default_factory=dict)  # net -> (dev, route)
    default: tuple[str, str] | None = None  # a static (gateway, device)


def layout(config: NetConfig) -> Layout:
    out = Layout()
    owned = owned_links(config)
    for bond in config.bonds.values():
        out.recipes[bond.name] = ops.CreateLink(bond.name, "bond", bond_mode=bond.mode,
                                                bond_options=bond.options)
        out.kinds[bond.name] = "bond"
        out.managed.add(bond.name)
        for slave in bond.slaves:
            out.masters[slave] = bond.name
            out.kinds[slave] = "nic"
            out.managed.add(slave)
    for net in sorted(config.networks.values(), key=lambda n: n.name):
        _network(out, net, owned)
    for bond in config.bonds.values():  # slaves follow their bond's MTU
        out.mtus.setdefault(bond.name, DEFAULT_MTU)
        for slave in bond.slaves:
            out.mtus[slave] = out.mtus[bond.name]
    for name, recipe in out.recipes.items():
        out.recipes[name] = ops.CreateLink(**{**recipe.__dict__, "mtu": out.mtus[name]})
    return out


def _network(out: Layout, net: Network, owned: dict[str, str]) -> None:
    base = net.base
    if base is not None:
        out.kinds.setdefault(base, "bond" if base in owned else "nic")
        out.mtus[base] = max(out.mtus.get(base, 0), net.mtu)  # the largest of its networks
        out.managed.add(base)
    if net.vlan_device is not None and base is not None:
        vdev = net.vlan_device
        out.recipes[vdev] = ops.CreateLink(vdev, "vlan", parent=base, vlan_id=net.vlan)
        out.kinds[vdev] = "vlan"
        out.mtus[vdev] = net.mtu
        out.managed.add(vdev)
    if net.bridged:
        out.recipes[net.name] = ops.CreateLink(net.name, "bridge")
        out.kinds[net.name] = "bridge"
        out.mtus[net.name] = net.mtu
        if net.port is not None:
            out.masters[net.port] = net.name
    device = net.device
    assert device is not None  # model.parse_network: a network has a device
    out.managed.add(device)
    out.addrs.setdefault(device, set())
    if net.ip is not None:
        out.addrs[device].add((net.ip.address, net.ip.prefix))
    if net.dhcp:
        out.dhcp[net.name] = (device, net.default_route)
    elif net.default_route and net.gateway is not None:
        out.default = (net.gateway, device)


def plan(live: HostNet, old: NetConfig, new: NetConfig) -> list[ops.Op]:
    before, after = layout(old), layout(new)
    steps: list[ops.Op] = []
    kept_dhcp = {n for n, v in after.dhcp.items() if before.dhcp.get(n) == v}
    kept_dhcp_devices = {after.dhcp[n][0] for n in kept_dhcp}
    for name, (device, route) in sorted(before.dhcp.items()):
        if name not in kept_dhcp:
            steps.append(ops.StopDhcp(name, device, route))
    steps += _routes(live, before, after, kept_dhcp_devices)
    for device in sorted((before.managed | after.managed) - kept_dhcp_devices):
        wanted = after.addrs.get(device, set())
        for addr in live.addrs_of(device):
            if (addr.address, addr.prefix) not in wanted:
                steps.append(ops.DelAddr(device, addr.address, addr.prefix))
    # ports and slaves leave what they should no longer be in
    for device in sorted(set(before.masters) | set(after.masters)):
        master = live.master_of(device)
        if master is not None and master != after.masters.get(device):
            steps.append(ops.SetLink(device, master=""))
    recreated = {n for n, r in after.recipes.items()
                 if n in before.recipes and _differs(r, before.recipes[n])}
    gone = [n for n in before.recipes if n not in after.recipes or n in recreated]
    for name in sorted(gone, key=lambda n: -LEVEL[before.recipes[n].kind]):
        if name in live.links:
            steps.append(ops.SetLink(name, up=False))
            steps.append(ops.DeleteLink(name, before.recipes[name]))
    created = {n for n in after.recipes if n not in live.links or n in recreated}
    for name in sorted(created, key=lambda n: (LEVEL[after.recipes[n].kind], n)):
        steps.append(after.recipes[name])
    steps += _mtus(live, before, after, created)
    for slave, master in sorted(after.masters.items()):
        if after.kinds.get(master) == "bond" and (live.master_of(slave) != master
                                                  or master in created):
            steps.append(ops.SetLink(slave, up=False))
            steps.append(ops.SetLink(slave, master=master))
    for port, master in sorted(after.masters.items()):
        if after.kinds.get(master) == "bridge" and (live.master_of(port) != master
                                                    or master in created or port in created):
            steps.append(ops.SetLink(port, master=master))
    for device in sorted(after.kinds, key=lambda d: (LEVEL[after.kinds[d]], d)):
        link = live.links.get(device)
        if device in created or link is None or not link.up \
                or any(isinstance(s, ops.SetLink) and s.name == device and s.up is False
                       for s in steps):
            steps.append(ops.SetLink(device, up=True))
    for device, addrs in sorted(after.addrs.items()):
        present = set() if device in created else {
            (a.address, a.prefix) for a in live.addrs_of(device)}
        for address, prefix in sorted(addrs - present):
            steps.append(ops.AddAddr(device, address, prefix))
    for name, (device, route) in sorted(after.dhcp.items()):
        if name not in kept_dhcp:
            net = new.networks[name]
            steps.append(ops.StartDhcp(name, device, wait=net.blocking_dhcp,
                                       default_route=route))
    if after.default is not None and not _has_default(live, after.default, created):
        gateway, device = after.default
        steps.append(ops.AddRoute("0.0.0.0/0", gateway, device))
    return steps


def _differs(a: ops.CreateLink, b: ops.CreateLink) -> bool:
    """Whether a link must be made again (a bridge never is: its ports would drop)."""
    if a.kind == "bridge":
        return False
    return (a.kind, a.parent, a.vlan_id, a.bond_mode, a.bond_options) != \
        (b.kind, b.parent, b.vlan_id, b.bond_mode, b.bond_options)


def _has_default(live: HostNet, want: tuple[str, str], created: set[str]) -> bool:
    gateway, device = want
    if device in created:
        return False
    link = live.links.get(device)
    return any(r.gateway == gateway and link is not None and r.oif == link.index
               for r in live.default_routes())


def _routes(live: HostNet, before: Layout, after: Layout,
            kept_dhcp_devices: set[str]) -> list[ops.Op]:
    """Default routes to remove: all but the wanted one when a network takes the default
    route; else those through the old configuration's networks (kept DHCP ones stay)."""
    steps: list[ops.Op] = []
    ours = set(before.addrs) | {d for d, _ in before.dhcp.values()}
    for route in live.default_routes():
        link = live.by_index(route.oif)
        device = link.name if link is not None else ""
        if after.default is not None:
            if (route.gateway, device) == after.default and device not in \
                    {n for n in before.recipes if n not in after.recipes}:
                continue
        elif device not in ours or device in kept_dhcp_devices:
            continue
        steps.append(ops.DelRoute(route.dst, route.gateway, device, route.priority,
                                  route.proto, route.scope))
    return steps


def _mtus(live: HostNet, before: Layout, after: Layout, created: set[str]) -> list[ops.Op]:
    """MTU changes: lowered top-down, then raised bottom-up; a NIC no network uses any more
    goes back to the default MTU."""
    wanted = dict(after.mtus)
    for device, kind in before.kinds.items():
        if kind == "nic" and device not in after.kinds:
            wanted[device] = DEFAULT_MTU
    kinds = {**before.kinds, **after.kinds}
    lower: list[tuple[int, str, int]] = []
    raise_: list[tuple[int, str, int]] = []
    for device, mtu in wanted.items():
        if device in created:
            continue  # made with its MTU
        link = live.links.get(device)
        if link is None or link.mtu == mtu:
            continue
        (lower if mtu < link.mtu else raise_).append((LEVEL[kinds[device]], device, mtu))
    steps: list[ops.Op] = [ops.SetLink(d, mtu=m) for _, d, m in sorted(lower, reverse=True)]
    steps += [ops.SetLink(d, mtu=m) for _, d, m in sorted(raise_)]
    return steps
