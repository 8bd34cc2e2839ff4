"""The host's links, IPv4 addresses and IPv4 routes as the kernel reports them (a snapshot).

Plain frozen values made from pyroute2's netlink messages, so that validation, planning and
the rollback check work on data (and tests can build a host's state without a kernel).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
MAIN_TABLE = 254
ANY = "0.0.0.0"  # noqa: S104 - the unspecified address of a default route, never bound


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None  # bridge, vlan, bond, veth...; None for a physical NIC (and lo)
    mac: str = ""
    mtu: int = 1500
    min_mtu: int = 68
    max_mtu: int = 65535
    master: int | None = None  # the index of its bridge or bond
    up: bool = False
    operstate: str = "UNKNOWN"
    loopback: bool = False
    parent: int | None = None  # a VLAN's link
    vlan_id: int | None = None


@dataclass(frozen=True)
class Addr:
    index: int
    address: str
    prefix: int

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix}"


@dataclass(frozen=True)
class Route:
    dst: str  # "0.0.0.0/0", "10.0.0.0/24"
    gateway: str | None
    oif: int | None
    priority: int = 0
    proto: int = 0
    scope: int = 0
    table: int = MAIN_TABLE


@dataclass(frozen=True)
class HostNet:
    links: Mapping[str, Link] = field(default_factory=dict)
    addrs: tuple[Addr, ...] = ()
    routes: tuple[Route, ...] = ()

    def by_index(self, index: int | None) -> Link | None:
        if index is None:
            return None
        for link in self.links.values():
            if link.index == index:
                return link
        return None

    def master_of(self, name: str) -> str | None:
        link = self.links.get(name)
        master = self.by_index(link.master) if link is not None else None
        return master.name if master is not None else None

    def ports_of(self, name: str) -> list[str]:
        link = self.links.get(name)
        if link is None:
            return []
        return sorted(x.name for x in self.links.values() if x.master == link.index)

    def addrs_of(self, name: str) -> list[Addr]:
        link = self.links.get(name)
        if link is None:
            return []
        return [a for a in self.addrs if a.index == link.index]

    def default_routes(self) -> list[Route]:
        return [r for r in self.routes if r.dst == "0.0.0.0/0" and r.table == MAIN_TABLE]

    def view(self, names: Iterable[str]) -> dict[str, Any]:
        """What a rollback must restore exactly, for the named links: whether each exists,
        its kind, MAC, MTU, master, up flag and IPv4 addresses; and every main-table IPv4
        route (by link name, since a re-created link gets a new index)."""
        links: dict[str, Any] = {}
        for name in sorted(set(names)):
            link = self.links.get(name)
            if link is None:
                links[name] = None
                continue
            links[name] = {
                "kind": link.kind, "mac": link.mac, "mtu": link.mtu,
                "master": self.master_of(name), "up": link.up,
                "addrs": sorted(a.cidr for a in self.addrs_of(name)),
            }
        routes = sorted(
            (r.dst, r.gateway or "", self._name(r.oif), r.priority, r.proto, r.scope)
            for r in self.routes if r.table == MAIN_TABLE
        )
        return {"links": links, "routes": routes}

    def _name(self, index: int | None) -> str:
        link = self.by_index(index)
        return link.name if link is not None else ""


# --- from pyroute2's messages --------------------------------------------------------------


def link_from(msg: Any) -> Link:
    kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    vlan_id = None
    if kind == "vlan":
        vlan_id = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID")
    flags = int(msg["flags"])
    return Link(
        index=int(msg["index"]),
        name=str(msg.get("IFLA_IFNAME")),
        kind=kind,
        mac=str(msg.get("IFLA_ADDRESS") or ""),
        mtu=int(msg.get("IFLA_MTU") or 0),
        min_mtu=int(msg.get("IFLA_MIN_MTU") or 0),
        max_mtu=int(msg.get("IFLA_MAX_MTU") or 0),
        master=msg.get("IFLA_MASTER"),
        up=bool(flags & IFF_UP),
        operstate=str(msg.get("IFLA_OPERSTATE") or "UNKNOWN"),
        loopback=bool(flags & IFF_LOOPBACK),
        parent=msg.get("IFLA_LINK") if kind == "vlan" else None,
        vlan_id=vlan_id,
    )


def addr_from(msg: Any) -> Addr:
    return Addr(index=int(msg["index"]), address=str(msg.get("IFA_ADDRESS")),
                prefix=int(msg["prefixlen"]))


def route_from(msg: Any) -> Route:
    dst = msg.get("RTA_DST")
    table = msg.get("RTA_TABLE") or msg["table"]
    return Route(
        dst=f"{dst or ANY}/{int(msg['dst_len'])}",
        gateway=msg.get("RTA_GATEWAY"),
        oif=msg.get("RTA_OIF"),
        priority=int(msg.get("RTA_PRIORITY") or 0),
        proto=int(msg["proto"]),
        scope=int(msg["scope"]),
        table=int(table),
    )


def build(links: Iterable[Any], addrs: Iterable[Any], routes: Iterable[Any]) -> HostNet:
    by_name = {}
    for msg in links:
        link = link_from(msg)
        by_name[link.name] = link
    return HostNet(
        links=by_name,
        addrs=tuple(addr_from(m) for m in addrs),
        routes=tuple(route_from(m) for m in routes),
    )
