"""Plans and the netlink messages they send, without a kernel.

This kernel cannot create VLAN, bond or dummy links ("Operation not supported": the live
tests check that such requests fail with 306 and change nothing). What the agent would send
for them is checked here instead: the plan for a network on a VLAN of a bond, and the bytes
of each message as pyroute2 encodes them, decoded again.
"""

from __future__ import annotations

import socket

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from actors.host.network import ops
from actors.host.network.model import NetConfig, parse_request
from actors.host.network.netstate import HostNet, Link
from actors.host.network.plan import plan

pytestmark = pytest.mark.timeout(30)

CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL


def _host(*names: str) -> HostNet:
    return HostNet(links={n: Link(index=i + 2, name=n, kind=None, mac=f"02:00:00:00:00:0{i}",
                                  up=True) for i, n in enumerate(names)})


def _decoded(message: tuple[object, int, int], cls: type) -> tuple[object, int, int]:
    msg, msg_type, flags = message
    msg.encode()  # type: ignore[attr-defined]
    again = cls(msg.data)  # type: ignore[attr-defined]
    again.decode()
    return again, msg_type, flags


def test_a_bridged_vlan_network_on_a_bond_plans_every_link_in_order() -> None:
    request = parse_request(
        {"vmnet": {"bonding": "bond0", "vlan": 100, "mtu": 9000, "ipaddr": "10.5.0.2",
                   "prefix": 24, "gateway": "10.5.0.1", "defaultRoute": True}},
        {"bond0": {"nics": ["eth0", "eth1"], "options": "mode=active-backup miimon=100"}})
    steps = plan(_host("eth0", "eth1"), NetConfig(), NetConfig().merged(request))
    assert [s.describe() for s in steps] == [
        "create bond bond0",
        "create vlan bond0.100",
        "create bridge vmnet",
        "set eth0 mtu 9000",
        "set eth1 mtu 9000",
        "set eth0 down",
        "set eth0 master bond0",
        "set eth1 down",
        "set eth1 master bond0",
        "set bond0.100 master vmnet",
        "set eth0 up",
        "set eth1 up",
        "set bond0 up",
        "set bond0.100 up",
        "set vmnet up",
        "add 10.5.0.2/24 to vmnet",
        "add route 0.0.0.0/0 via 10.5.0.1 dev vmnet",
    ]
    bond, vlan, bridge = steps[0], steps[1], steps[2]
    assert bond == ops.CreateLink("bond0", "bond", bond_mode="active-backup",
                                  bond_options=(("miimon", 100),), mtu=9000)
    assert vlan == ops.CreateLink("bond0.100", "vlan", parent="bond0", vlan_id=100, mtu=9000)
    assert bridge == ops.CreateLink("vmnet", "bridge", mtu=9000)


def test_the_vlan_and_bond_messages() -> None:
    msg, msg_type, flags = _decoded(ops.create_link(
        ops.CreateLink("bond0.100", "vlan", parent="bond0", vlan_id=100, mtu=9000), 7),
        ifinfmsg)
    assert (msg_type, flags) == (RTM_NEWLINK, CREATE)
    assert msg.get("IFLA_IFNAME") == "bond0.100"  # type: ignore[attr-defined]
    assert msg.get("IFLA_LINK") == 7  # type: ignore[attr-defined]
    assert msg.get("IFLA_MTU") == 9000  # type: ignore[attr-defined]
    assert msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "vlan"  # type: ignore[attr-defined]
    assert msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA",  # type: ignore[attr-defined]
                          "IFLA_VLAN_ID") == 100

    msg, _, _ = _decoded(ops.create_link(
        ops.CreateLink("bond0", "bond", bond_mode="802.3ad",
                       bond_options=(("miimon", 100), ("updelay", 200))), None), ifinfmsg)
    data = ("IFLA_LINKINFO", "IFLA_INFO_DATA")
    assert msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "bond"  # type: ignore[attr-defined]
    assert msg.get_nested(*data, "IFLA_BOND_MODE") == 4  # type: ignore[attr-defined]
    assert msg.get_nested(*data, "IFLA_BOND_MIIMON") == 100  # type: ignore[attr-defined]
    assert msg.get_nested(*data, "IFLA_BOND_UPDELAY") == 200  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="needs a parent"):
        ops.create_link(ops.CreateLink("x.5", "vlan", vlan_id=5), None)

    msg, _, _ = _decoded(ops.set_link(3, master=9, up=False), ifinfmsg)  # enslave a NIC
    assert (msg["index"], msg.get("IFLA_MASTER")) == (3, 9)  # type: ignore[index,attr-defined]
    assert (msg["flags"], msg["change"]) == (0, 1)  # type: ignore[index]
    msg, _, _ = _decoded(ops.set_link(3, master=0), ifinfmsg)  # release it
    assert msg.get("IFLA_MASTER") == 0  # type: ignore[attr-defined]
    assert msg["change"] == 0  # type: ignore[index]


def test_the_address_and_route_messages() -> None:
    msg, msg_type, flags = _decoded(ops.add_addr(5, "10.5.0.2", 24), ifaddrmsg)
    assert (msg_type, flags) == (RTM_NEWADDR, CREATE)
    assert (msg["family"], msg["prefixlen"], msg["index"]) == (socket.AF_INET, 24, 5)  # type: ignore[index]
    assert msg.get("IFA_LOCAL") == "10.5.0.2"  # type: ignore[attr-defined]
    assert msg.get("IFA_BROADCAST") == "10.5.0.255"  # type: ignore[attr-defined]
    msg, msg_type, _ = _decoded(
        ops.add_route(ops.AddRoute("0.0.0.0/0", "10.5.0.1", "vmnet"), 5), rtmsg)
    assert msg_type == RTM_NEWROUTE
    assert (msg["dst_len"], msg["table"], msg["proto"]) == (0, 254, 4)  # type: ignore[index]
    assert msg.get("RTA_GATEWAY") == "10.5.0.1"  # type: ignore[attr-defined]
    assert msg.get("RTA_OIF") == 5  # type: ignore[attr-defined]
    assert msg.get("RTA_DST") is None  # type: ignore[attr-defined]


def test_the_kind_probe_cannot_create_a_link() -> None:
    msg, msg_type, flags = _decoded(ops.probe_kind("bond", "vdsmprb0"), ifinfmsg)
    assert (msg_type, flags) == (RTM_NEWLINK, CREATE)
    assert msg.get("IFLA_MTU") == 1  # type: ignore[attr-defined]  # below every minimum
    assert msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "bond"  # type: ignore[attr-defined]


def test_removing_the_bonded_vlan_network_undoes_the_links_top_down() -> None:
    request = parse_request(
        {"vmnet": {"bonding": "bond0", "vlan": 100}}, {"bond0": {"nics": ["eth0"]}})
    old = NetConfig().merged(request)
    live = HostNet(links={
        "eth0": Link(2, "eth0", None, up=True, master=3),
        "bond0": Link(3, "bond0", "bond", up=True),
        "bond0.100": Link(4, "bond0.100", "vlan", up=True, master=5, parent=3, vlan_id=100),
        "vmnet": Link(5, "vmnet", "bridge", up=True),
    })
    gone = old.merged(parse_request({"vmnet": {"remove": True}},
                                    {"bond0": {"remove": True}}))
    assert [s.describe() for s in plan(live, old, gone)] == [
        "set bond0.100 nomaster",
        "set eth0 nomaster",
        "set vmnet down",
        "delete bridge vmnet",
        "set bond0.100 down",
        "delete vlan bond0.100",
        "set bond0 down",
        "delete bond bond0",
    ]
    # the network alone goes: the bond and its slave stay
    only = old.merged(parse_request({"vmnet": {"remove": True}}, {}))
    assert [s.describe() for s in plan(live, old, only)] == [
        "set bond0.100 nomaster", "set vmnet down", "delete bridge vmnet",
        "set bond0.100 down", "delete vlan bond0.100",
    ]
