"""Checks a whole configuration against the host's real links before anything is changed.

Everything here reads a :class:`~actors.host.network.netstate.HostNet` snapshot and the
configurations; the kernel is only asked whether it can make the link kinds the change needs
(``kind_supported``: a request that cannot create anything). A refusal names what is wrong
with a 3xx code; nothing has been changed when one is raised.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable

from actors.host.network.model import NetConfig, Request
from actors.host.network.netstate import HostNet, Link
from messaging.errors import (
    BadBonding,
    BadMtu,
    BadNetworkAddress,
    BadVlan,
    LinkKindUnsupported,
    NetworkExists,
    NetworkNameInUse,
    NicInUse,
    NoSuchNetwork,
    UnknownNic,
)

KindProbe = Callable[[str], tuple[bool, str]]


#: the kinds of virtual links that may stand for NICs (never a bridge, bond or VLAN, which
#: a network's name could make match a ``fake_nics`` pattern)
FAKE_NIC_KINDS = frozenset({"veth", "dummy"})


def is_nic(link: Link, fake_nics: Iterable[str]) -> bool:
    """A NIC networks and bonds may use: a physical link (no kind), or a veth or dummy link
    whose name matches ``[network] fake_nics`` (veth pairs in tests and containers' hosts)."""
    if link.loopback:
        return False
    if link.kind is None:
        return True
    return link.kind in FAKE_NIC_KINDS and any(
        fnmatch.fnmatchcase(link.name, pattern) for pattern in fake_nics)


def owned_links(config: NetConfig) -> dict[str, str]:
    """The links a configuration made: name -> kind."""
    owned: dict[str, str] = {}
    for bond in config.bonds.values():
        owned[bond.name] = "bond"
    for net in config.networks.values():
        if net.vlan_device is not None:
            owned[net.vlan_device] = "vlan"
        if net.bridged:
            owned[net.name] = "bridge"
    return owned


def check(request: Request, old: NetConfig, new: NetConfig, live: HostNet, *,
          fake_nics: Iterable[str], kind_supported: KindProbe) -> None:
    fake = tuple(fake_nics)
    for name, net in request.networks.items():
        if (net is None or name in request.existing_only) and name not in old.networks:
            raise NoSuchNetwork(network=name)
        if name in request.new_only and name in old.networks:
            raise NetworkExists(network=name)
    for name, bond in request.bonds.items():
        if bond is None and name not in old.bonds:
            raise BadBonding(bond=name, reason="no such bond")
    ours = owned_links(old) | owned_links(new)
    _check_devices(new)
    _check_names(new, live, owned_links(old))
    _check_bonds(new, live, fake, owned_links(old))
    _check_networks(new, live, fake)
    _check_sharing(new, live, fake, ours)
    _check_addresses(new)
    _check_kinds(new, live, kind_supported)


def _check_names(new: NetConfig, live: HostNet, old_owned: dict[str, str]) -> None:
    for name, kind in owned_links(new).items():
        link = live.links.get(name)
        if link is None:
            continue
        if old_owned.get(name) != kind:
            owner = f"bond {name}" if kind == "bond" else _owner_of(new, name)
            raise NetworkNameInUse(owner=owner, name=name)


def _check_devices(new: NetConfig) -> None:
    """No two networks need one link: a bridge named like another network's VLAN device
    (``eth0.5``) would be both. (A network and a bond sharing a name: refused when parsed.)"""
    bridges = {net.name for net in new.networks.values() if net.bridged}
    for net in sorted(new.networks.values(), key=lambda n: n.name):
        if net.vlan_device is not None and net.vlan_device in bridges:
            raise BadVlan(network=net.name, reason=f"its VLAN device {net.vlan_device} "
                                                   f"would be network {net.vlan_device}'s "
                                                   "bridge")


def _owner_of(config: NetConfig, device: str) -> str:
    for net in config.networks.values():
        if device in (net.name, net.vlan_device):
            return f"network {net.name}"
    return device


def _nic(live: HostNet, fake: tuple[str, ...], name: str, owner: str) -> Link:
    link = live.links.get(name)
    if link is None or not is_nic(link, fake):
        raise UnknownNic(owner=owner, nic=name)
    return link


def _check_bonds(new: NetConfig, live: HostNet, fake: tuple[str, ...],
                 old_owned: dict[str, str]) -> None:
    for bond in new.bonds.values():
        if not bond.slaves:
            raise BadBonding(bond=bond.name, reason="a bond needs at least one NIC in nics")
        for slave in bond.slaves:
            _nic(live, fake, slave, f"bond {bond.name}")
    for net in new.networks.values():
        if net.bonding is not None and net.bonding not in new.bonds:
            raise BadBonding(bond=net.bonding, reason=f"network {net.name} runs on it, and "
                                                      "it is not defined in bondings")


def _check_networks(new: NetConfig, live: HostNet, fake: tuple[str, ...]) -> None:
    for net in new.networks.values():
        if net.nic is not None:
            link = _nic(live, fake, net.nic, f"network {net.name}")
            low, high = link.min_mtu or 68, link.max_mtu or 65535
            if not low <= net.mtu <= high:
                raise BadMtu(owner=f"network {net.name}", mtu=net.mtu, device=net.nic,
                             low=low, high=high)
        elif net.bonding is not None:
            for slave in new.bonds[net.bonding].slaves:
                link = live.links[slave]
                low, high = link.min_mtu or 68, link.max_mtu or 65535
                if not low <= net.mtu <= high:
                    raise BadMtu(owner=f"network {net.name}", mtu=net.mtu, device=slave,
                                 low=low, high=high)


def _check_sharing(new: NetConfig, live: HostNet, fake: tuple[str, ...],
                   ours: dict[str, str]) -> None:
    users: dict[str, list[str]] = defaultdict(list)  # NIC -> who uses it
    untagged: dict[str, list[str]] = defaultdict(list)  # NIC/bond -> untagged networks
    vlans: dict[tuple[str, int], list[str]] = defaultdict(list)
    for bond in new.bonds.values():
        for slave in bond.slaves:
            users[slave].append(f"bond {bond.name}")
    for net in new.networks.values():
        base = net.base
        if base is None:
            continue
        if net.vlan is None:
            untagged[base].append(net.name)
        else:
            vlans[(base, net.vlan)].append(net.name)
        if net.nic is not None:
            users[net.nic].append(f"network {net.name}")
    for nic, who in users.items():
        bonds = [u for u in who if u.startswith("bond ")]
        if len(bonds) > 1 or (bonds and len(who) > len(bonds)):
            raise NicInUse(nic=nic, users=" and ".join(who))
    for base, nets in untagged.items():
        if len(nets) > 1:
            raise NicInUse(nic=base, users="networks " + " and ".join(sorted(nets)) +
                           " (one untagged network per NIC or bond)")
    for (base, vlan), nets in vlans.items():
        if len(nets) > 1:
            raise BadVlan(network=sorted(nets)[1],
                          reason=f"VLAN {vlan} on {base} is already network {sorted(nets)[0]}")
    for nic in users:
        master = live.master_of(nic)
        if master is not None and master not in ours:
            raise NicInUse(nic=nic, users=f"{master}, which this agent does not manage")


def _check_addresses(new: NetConfig) -> None:
    defaults = sorted(n.name for n in new.networks.values() if n.default_route)
    if len(defaults) > 1:
        raise BadNetworkAddress(network=defaults[1], reason="only one network can hold the "
                                f"default route (so does {defaults[0]})")
    seen: dict[ipaddress.IPv4Address, str] = {}
    for net in sorted(new.networks.values(), key=lambda n: n.name):
        if net.ip is None:
            continue
        address = ipaddress.IPv4Address(net.ip.address)
        if address in seen:
            raise BadNetworkAddress(network=net.name,
                                    reason=f"{address} is already network {seen[address]}'s")
        network = ipaddress.IPv4Network(net.ip.cidr, strict=False)
        if net.ip.prefix < 31 and address in (network.network_address,
                                               network.broadcast_address):
            raise BadNetworkAddress(network=net.name,
                                    reason=f"{net.ip.cidr} is not a host address of its "
                                           "subnet")
        seen[address] = net.name


def _check_kinds(new: NetConfig, live: HostNet, kind_supported: KindProbe) -> None:
    needed: dict[str, str] = {}  # kind -> who needs it first
    for bond in sorted(new.bonds.values(), key=lambda b: b.name):
        if bond.name not in live.links:
            needed.setdefault("bond", f"bond {bond.name}")
    for net in sorted(new.networks.values(), key=lambda n: n.name):
        if net.vlan_device is not None and net.vlan_device not in live.links:
            needed.setdefault("vlan", f"network {net.name}")
        if net.bridged and net.name not in live.links:
            needed.setdefault("bridge", f"network {net.name}")
    for kind, owner in sorted(needed.items()):
        supported, answer = kind_supported(kind)
        if not supported:
            raise LinkKindUnsupported(owner=owner, kind=kind, reason=f"the kernel answered "
                                                                     f"{answer!r}")
