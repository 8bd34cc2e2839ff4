"""The steps of a network change, as data, and the netlink messages each one sends.

A plan (``plan.py``) is a list of these; the executor (``apply.py``) runs them one by one,
recording before each how to undo it. The message builders are pure: given the links'
indexes they return pyroute2 message objects, so the exact messages a step would send are
testable without a kernel (VLAN and bond links cannot be made on the test machine's kernel,
but the messages that would make them are checked byte for byte).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from actors.host.network.model import BOND_MODES
from actors.host.network.netstate import IFF_UP, MAIN_TABLE

RTPROT_STATIC = 4
RTN_UNICAST = 1
REQUEST = NLM_F_REQUEST | NLM_F_ACK
CREATE = REQUEST | NLM_F_CREATE | NLM_F_EXCL


@dataclass(frozen=True)
class CreateLink:
    name: str
    kind: str  # bridge, vlan, bond
    parent: str | None = None  # a VLAN's NIC or bond
    vlan_id: int | None = None
    bond_mode: str | None = None
    bond_options: tuple[tuple[str, int], ...] = ()
    mtu: int | None = None
    mac: str | None = None  # set when re-creating a link a change deleted

    def describe(self) -> str:
        return f"create {self.kind} {self.name}"


@dataclass(frozen=True)
class DeleteLink:
    name: str
    recipe: CreateLink  # how to make it again (the undo adds its MAC and MTU)

    def describe(self) -> str:
        return f"delete {self.recipe.kind} {self.name}"


@dataclass(frozen=True)
class SetLink:
    """Change some of a link's settings; None leaves one as it is. ``master`` "" releases
    the link from its bridge or bond."""

    name: str
    mtu: int | None = None
    master: str | None = None
    up: bool | None = None

    def describe(self) -> str:
        parts = []
        if self.mtu is not None:
            parts.append(f"mtu {self.mtu}")
        if self.master is not None:
            parts.append(f"master {self.master}" if self.master else "nomaster")
        if self.up is not None:
            parts.append("up" if self.up else "down")
        return f"set {self.name} {' '.join(parts)}"


@dataclass(frozen=True)
class _AddrStep:
    """An IPv4 address on a device: what ``AddAddr`` and ``DelAddr`` both name."""

    device: str
    address: str
    prefix: int


@dataclass(frozen=True)
class AddAddr(_AddrStep):
    def describe(self) -> str:
        return f"add {self.address}/{self.prefix} to {self.device}"


@dataclass(frozen=True)
class DelAddr(_AddrStep):
    def describe(self) -> str:
        return f"remove {self.address}/{self.prefix} from {self.device}"


@dataclass(frozen=True)
class _RouteStep:
    """A route: what ``AddRoute`` and ``DelRoute`` both name (each one's undo is the other,
    made from the same fields)."""

    dst: str  # "0.0.0.0/0"
    gateway: str | None
    device: str
    priority: int = 0
    proto: int = RTPROT_STATIC
    scope: int = 0

    def _describe(self, verb: str) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        return f"{verb} route {self.dst}{via} dev {self.device}"


@dataclass(frozen=True)
class AddRoute(_RouteStep):
    def describe(self) -> str:
        return self._describe("add")


@dataclass(frozen=True)
class DelRoute(_RouteStep):
    def describe(self) -> str:
        return self._describe("remove")


@dataclass(frozen=True)
class StartDhcp:
    network: str
    device: str
    wait: bool = False  # wait for the first lease (blockingdhcp)
    default_route: bool = False

    def describe(self) -> str:
        return f"start DHCP for {self.network} on {self.device}"


@dataclass(frozen=True)
class StopDhcp:
    network: str
    device: str
    default_route: bool = False

    def describe(self) -> str:
        return f"stop DHCP for {self.network} on {self.device}"


Op = CreateLink | DeleteLink | SetLink | AddAddr | DelAddr | AddRoute | DelRoute | StartDhcp \
    | StopDhcp


# --- messages --------------------------------------------------------------------------------


def create_link(op: CreateLink, parent_index: int | None) -> tuple[ifinfmsg, int, int]:
    """RTM_NEWLINK creating ``op``'s link; ``parent_index`` is a VLAN's parent's index."""
    msg = ifinfmsg()
    attrs: list[Any] = [("IFLA_IFNAME", op.name)]
    info: list[Any] = [("IFLA_INFO_KIND", op.kind)]
    if op.kind == "vlan":
        if parent_index is None or op.vlan_id is None:
            raise ValueError(f"VLAN {op.name} needs a parent and an id")
        attrs.append(("IFLA_LINK", parent_index))
        info.append(("IFLA_INFO_DATA", {"attrs": [("IFLA_VLAN_ID", op.vlan_id)]}))
    elif op.kind == "bond":
        data: list[Any] = [("IFLA_BOND_MODE", BOND_MODES[op.bond_mode or "balance-rr"])]
        data += [(f"IFLA_BOND_{key.upper()}", value) for key, value in op.bond_options]
        info.append(("IFLA_INFO_DATA", {"attrs": data}))
    if op.mtu is not None:
        attrs.append(("IFLA_MTU", op.mtu))
    if op.mac:
        attrs.append(("IFLA_ADDRESS", op.mac))
    attrs.append(("IFLA_LINKINFO", {"attrs": info}))
    msg["attrs"] = attrs
    return msg, RTM_NEWLINK, CREATE


def probe_kind(kind: str, name: str) -> tuple[ifinfmsg, int, int]:
    """RTM_NEWLINK that cannot create anything: an MTU of 1 fails after the kernel has
    looked the kind up. "Operation not supported" then means the kernel has no such kind;
    "Invalid argument" means it has (a VLAN's missing id, the MTU)."""
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_MTU", 1),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]})]
    return msg, RTM_NEWLINK, CREATE


def delete_link(index: int) -> tuple[ifinfmsg, int, int]:
    msg = ifinfmsg()
    msg["index"] = index
    return msg, RTM_DELLINK, REQUEST


def set_link(index: int, *, mtu: int | None = None, master: int | None = None,
             up: bool | None = None) -> tuple[ifinfmsg, int, int]:
    """RTM_NEWLINK changing an existing link; ``master`` 0 releases it."""
    msg = ifinfmsg()
    msg["index"] = index
    attrs: list[Any] = []
    if mtu is not None:
        attrs.append(("IFLA_MTU", mtu))
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    if up is not None:
        msg["flags"] = IFF_UP if up else 0
        msg["change"] = IFF_UP
    msg["attrs"] = attrs
    return msg, RTM_NEWLINK, REQUEST


def _addr(index: int, address: str, prefix: int) -> ifaddrmsg:
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET
    msg["prefixlen"] = prefix
    msg["index"] = index
    attrs: list[Any] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
    if prefix < 31:
        net = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
        attrs.append(("IFA_BROADCAST", str(net.broadcast_address)))
    msg["attrs"] = attrs
    return msg


def add_addr(index: int, address: str, prefix: int) -> tuple[ifaddrmsg, int, int]:
    return _addr(index, address, prefix), RTM_NEWADDR, CREATE


def del_addr(index: int, address: str, prefix: int) -> tuple[ifaddrmsg, int, int]:
    return _addr(index, address, prefix), RTM_DELADDR, REQUEST


def _route(op: AddRoute | DelRoute, oif: int) -> rtmsg:
    dst, _, length = op.dst.partition("/")
    msg = rtmsg()
    msg["family"] = socket.AF_INET
    msg["dst_len"] = int(length)
    msg["table"] = MAIN_TABLE
    msg["proto"] = op.proto
    msg["scope"] = op.scope
    msg["type"] = RTN_UNICAST
    attrs: list[Any] = [("RTA_TABLE", MAIN_TABLE), ("RTA_OIF", oif)]
    if int(length):
        attrs.append(("RTA_DST", dst))
    if op.gateway:
        attrs.append(("RTA_GATEWAY", op.gateway))
    if op.priority:
        attrs.append(("RTA_PRIORITY", op.priority))
    msg["attrs"] = attrs
    return msg


def add_route(op: AddRoute, oif: int) -> tuple[rtmsg, int, int]:
    return _route(op, oif), RTM_NEWROUTE, CREATE


def del_route(op: DelRoute, oif: int) -> tuple[rtmsg, int, int]:
    return _route(op, oif), RTM_DELROUTE, REQUEST
