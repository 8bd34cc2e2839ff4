"""The capabilities of a bonded VLAN network, from netlink dumps, without a kernel.

This kernel cannot create VLAN or bond links, so the live tests only ever see empty
``bondings`` and ``vlans``. Here the dump messages such a host's kernel would answer (the
links, the bridge's address, the default route) are built with pyroute2, encoded and decoded
again as if read from the socket, parsed by the agent's reader (``netstate.build``) and
turned into ``Host.getNetworkCapabilities``' answer (``caps.capabilities``).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from actors.host.network.caps import capabilities
from actors.host.network.model import NetConfig, parse_request
from actors.host.network.netstate import IFF_LOOPBACK, IFF_UP, build

pytestmark = pytest.mark.timeout(30)

# NIC names no test machine has: capabilities() reads their speed from sysfs (0 when absent)
NICS = ("vtnic9a", "vtnic9b")


def _received(msg: Any, cls: type) -> Any:
    msg.encode()
    again = cls(msg.data)
    again.decode()
    return again


def _link(index: int, name: str, kind: str | None = None, *, master: int | None = None,
          parent: int | None = None, vlan: int | None = None) -> Any:
    msg = ifinfmsg()
    flags = IFF_UP | (IFF_LOOPBACK if name == "lo" else 0)
    msg["index"], msg["flags"], msg["change"] = index, flags, 0
    attrs: list[tuple[str, Any]] = [
        ("IFLA_IFNAME", name), ("IFLA_MTU", 9000), ("IFLA_OPERSTATE", "UP"),
        ("IFLA_ADDRESS", f"02:00:00:00:00:{index:02x}")]
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    if parent is not None:
        attrs.append(("IFLA_LINK", parent))
    if kind is not None:
        info: list[tuple[str, Any]] = [("IFLA_INFO_KIND", kind)]
        if vlan is not None:
            info.append(("IFLA_INFO_DATA", {"attrs": [("IFLA_VLAN_ID", vlan)]}))
        attrs.append(("IFLA_LINKINFO", {"attrs": info}))
    msg["attrs"] = attrs
    return _received(msg, ifinfmsg)


def _addr(index: int, address: str, prefix: int) -> Any:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, prefix, index
    msg["attrs"] = [("IFA_ADDRESS", address), ("IFA_LOCAL", address)]
    return _received(msg, ifaddrmsg)


def _default_route(gateway: str, oif: int) -> Any:
    msg = rtmsg()
    msg["family"], msg["dst_len"], msg["table"] = socket.AF_INET, 0, 254
    msg["proto"], msg["scope"], msg["type"] = 4, 0, 1
    msg["attrs"] = [("RTA_TABLE", 254), ("RTA_GATEWAY", gateway), ("RTA_OIF", oif)]
    return _received(msg, rtmsg)


def test_a_bridged_vlan_network_on_a_bond() -> None:
    config = NetConfig().merged(parse_request(
        {"vmnet": {"bonding": "bond0", "vlan": 100, "mtu": 9000, "ipaddr": "10.5.0.2",
                   "prefix": 24, "gateway": "10.5.0.1", "defaultRoute": True}},
        {"bond0": {"nics": list(NICS), "options": "mode=active-backup miimon=100"}}))
    live = build(
        [_link(1, "lo"), _link(2, NICS[0], master=4), _link(3, NICS[1], master=4),
         _link(4, "bond0", "bond"),
         _link(5, "bond0.100", "vlan", master=6, parent=4, vlan=100),
         _link(6, "vmnet", "bridge")],
        [_addr(6, "10.5.0.2", 24)],
        [_default_route("10.5.0.1", 6)])

    caps = capabilities(live, config, fake_nics=())
    assert caps["bondings"] == {"bond0": {
        "hwaddr": "02:00:00:00:00:04", "mtu": 9000, "state": "up", "ipv4addrs": [],
        "addr": "", "netmask": "", "slaves": list(NICS),
        "opts": {"mode": "active-backup", "miimon": "100"}}}
    assert caps["vlans"] == {"bond0.100": {
        "hwaddr": "02:00:00:00:00:05", "mtu": 9000, "state": "up", "ipv4addrs": [],
        "addr": "", "netmask": "", "vlanid": 100, "iface": "bond0"}}
    assert caps["bridges"]["vmnet"]["ports"] == ["bond0.100"]
    assert caps["bridges"]["vmnet"]["ipv4addrs"] == ["10.5.0.2/24"]
    assert sorted(caps["nics"]) == list(NICS)  # not lo, the bond, the VLAN or the bridge
    assert {n["master"] for n in caps["nics"].values()} == {"bond0"}
    assert caps["networks"] == {"vmnet": {
        "iface": "vmnet", "bridged": True, "bootproto": "none", "dhcpv4": False,
        "defaultRoute": True, "switch": "legacy", "mtu": 9000, "ipv4addrs": ["10.5.0.2/24"],
        "addr": "10.5.0.2", "netmask": "255.255.255.0", "gateway": "10.5.0.1",
        "bonding": "bond0", "vlan": 100, "ports": ["bond0.100"]}}


def test_a_vlan_without_a_bridge_reports_its_own_gateway() -> None:
    config = NetConfig().merged(parse_request(
        {"storage": {"nic": NICS[0], "vlan": 20, "bridged": False, "ipaddr": "10.6.0.2",
                     "prefix": 24}}, {}))
    live = build([_link(2, NICS[0]), _link(3, f"{NICS[0]}.20", "vlan", parent=2, vlan=20)],
                 [_addr(3, "10.6.0.2", 24)], [_default_route("10.6.0.1", 3)])
    caps = capabilities(live, config, fake_nics=())
    net = caps["networks"]["storage"]
    assert (net["iface"], net["bridged"], net["nic"], net["vlan"]) == \
        (f"{NICS[0]}.20", False, NICS[0], 20)
    assert (net["addr"], net["gateway"]) == ("10.6.0.2", "10.6.0.1")  # from the route
    assert "ports" not in net
    assert caps["vlans"][f"{NICS[0]}.20"]["iface"] == NICS[0]
    assert caps["bondings"] == {} and caps["bridges"] == {}
