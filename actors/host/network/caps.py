"""Host.getNetworkCapabilities (and the network part of Host.getCapabilities): the kernel's
links as netlink reports them, with the agent's networks on top. Plain functions."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from actors.host.network.model import NetConfig, Network
from actors.host.network.netstate import HostNet, Link
from actors.host.network.validate import is_nic


def speed(name: str) -> int:
    """Mb/s from sysfs (0 when the driver does not say: no netlink attribute carries it)."""
    try:
        value = int((Path("/sys/class/net") / name / "speed").read_text().strip())
    except (OSError, ValueError):
        return 0
    return max(0, value)


def _addrs(live: HostNet, name: str) -> dict[str, Any]:
    addrs = live.addrs_of(name)
    out: dict[str, Any] = {"ipv4addrs": [a.cidr for a in addrs], "addr": "", "netmask": ""}
    if addrs:
        out["addr"] = addrs[0].address
        out["netmask"] = _netmask(addrs[0].prefix)
    return out


def _netmask(prefix: int) -> str:
    bits = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return ".".join(str((bits >> s) & 0xFF) for s in (24, 16, 8, 0))


def _link(live: HostNet, link: Link) -> dict[str, Any]:
    return {"hwaddr": link.mac, "mtu": link.mtu, "state": link.operstate.lower(),
            **_addrs(live, link.name)}


def _network(live: HostNet, net: Network) -> dict[str, Any]:
    device = net.device or ""
    link = live.links.get(device)
    out: dict[str, Any] = {
        "iface": device, "bridged": net.bridged, "bootproto": "dhcp" if net.dhcp else "none",
        "dhcpv4": net.dhcp, "defaultRoute": net.default_route, "switch": "legacy",
        "mtu": link.mtu if link is not None else net.mtu, **_addrs(live, device),
        "gateway": net.gateway or _gateway(live, link),
    }
    for key, value in (("nic", net.nic), ("bonding", net.bonding), ("vlan", net.vlan)):
        if value is not None:
            out[key] = value
    if net.bridged:
        out["ports"] = live.ports_of(device)
    return out


def _gateway(live: HostNet, link: Link | None) -> str:
    if link is None:
        return ""
    for route in live.default_routes():
        if route.oif == link.index and route.gateway:
            return route.gateway
    return ""


def capabilities(live: HostNet, config: NetConfig, fake_nics: Iterable[str]) -> dict[str, Any]:
    fake = tuple(fake_nics)
    links = sorted(live.links.values(), key=lambda x: x.name)
    return {
        "networks": {n.name: _network(live, n) for n in sorted(config.networks.values(),
                                                                  key=lambda n: n.name)},
        "bridges": {x.name: {**_link(live, x), "ports": live.ports_of(x.name), "stp": "off"}
                    for x in links if x.kind == "bridge"},
        "nics": {x.name: {**_link(live, x), "speed": speed(x.name),
                          "master": live.master_of(x.name) or ""}
                 for x in links if is_nic(x, fake)},
        "bondings": {x.name: {**_link(live, x), "slaves": live.ports_of(x.name),
                              "opts": _bond_opts(config, x.name)}
                     for x in links if x.kind == "bond"},
        "vlans": {x.name: {**_link(live, x), "vlanid": x.vlan_id,
                           "iface": _name(live, x.parent)}
                  for x in links if x.kind == "vlan"},
    }


def _bond_opts(config: NetConfig, name: str) -> dict[str, str]:
    bond = config.bonds.get(name)
    if bond is None:
        return {}
    return {"mode": bond.mode, **{k: str(v) for k, v in bond.options}}


def _name(live: HostNet, index: int | None) -> str:
    link = live.by_index(index)
    return link.name if link is not None else ""
