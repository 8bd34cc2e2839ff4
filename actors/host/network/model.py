"""The network configuration as typed values: what setupNetworks asks for, what the agent
keeps as its running and safe configurations.

The schema has already checked the shape of the wire maps (types, ranges, unknown members);
:func:`parse_request` checks what the schema cannot say (an address is an address, a netmask
is contiguous, a network names exactly one NIC or bond, a link name is one the kernel takes)
and answers -32602 naming the member. What depends on the host is checked later, against its
real links (``validate.py``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from messaging.errors import InvalidParams

DEFAULT_MTU = 1500
#: names the kernel takes for a link: 1-15 bytes, no '/', ':' or whitespace, not . or ..
LINK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
BOND_MODES = {
    "balance-rr": 0, "active-backup": 1, "balance-xor": 2, "broadcast": 3, "802.3ad": 4,
    "balance-tlb": 5, "balance-alb": 6,
}
#: bond options the agent passes to the kernel (each an integer but mode)
BOND_INT_OPTIONS = ("miimon", "updelay", "downdelay")


@dataclass(frozen=True)
class StaticIp:
    address: str  # "10.0.0.1"
    prefix: int

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix}"

    @property
    def netmask(self) -> str:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{self.prefix}").netmask)


@dataclass(frozen=True)
class Network:
    """One network: on a NIC or a bond (or on nothing: a bridge alone), maybe tagged."""

    name: str
    nic: str | None = None
    bonding: str | None = None
    vlan: int | None = None
    bridged: bool = True
    mtu: int = DEFAULT_MTU
    dhcp: bool = False
    blocking_dhcp: bool = False
    ip: StaticIp | None = None
    gateway: str | None = None
    default_route: bool = False

    @property
    def base(self) -> str | None:
        """The NIC or bond under the network."""
        return self.nic or self.bonding

    @property
    def vlan_device(self) -> str | None:
        if self.vlan is None or self.base is None:
            return None
        return f"{self.base}.{self.vlan}"

    @property
    def device(self) -> str | None:
        """The link carrying the network's addresses: its bridge, VLAN device or NIC/bond."""
        if self.bridged:
            return self.name
        return self.vlan_device or self.base

    @property
    def port(self) -> str | None:
        """What the network's bridge holds: the VLAN device or the NIC/bond."""
        return self.vlan_device or self.base

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bridged": self.bridged, "mtu": self.mtu,
                               "bootproto": "dhcp" if self.dhcp else "none",
                               "defaultRoute": self.default_route}
        if self.nic is not None:
            out["nic"] = self.nic
        if self.bonding is not None:
            out["bonding"] = self.bonding
        if self.vlan is not None:
            out["vlan"] = self.vlan
        if self.blocking_dhcp:
            out["blockingdhcp"] = True
        if self.ip is not None:
            out["ipaddr"] = self.ip.address
            out["prefix"] = self.ip.prefix
        if self.gateway is not None:
            out["gateway"] = self.gateway
        return out


@dataclass(frozen=True)
class Bond:
    name: str
    slaves: tuple[str, ...]
    mode: str = "balance-rr"
    options: tuple[tuple[str, int], ...] = ()  # (miimon, 100), ...

    @property
    def options_text(self) -> str:
        return " ".join([f"mode={self.mode}", *(f"{k}={v}" for k, v in self.options)])

    def to_wire(self) -> dict[str, Any]:
        return {"nics": list(self.slaves), "options": self.options_text}


@dataclass(frozen=True)
class NetConfig:
    """A whole configuration: the running one, the safe one, or one being applied."""

    networks: Mapping[str, Network] = field(default_factory=dict)
    bonds: Mapping[str, Bond] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"networks": {n: v.to_wire() for n, v in sorted(self.networks.items())},
                "bondings": {n: b.to_wire() for n, b in sorted(self.bonds.items())}}

    @classmethod
    def from_wire(cls, value: Mapping[str, Any]) -> NetConfig:
        """A configuration the agent wrote itself (files): parsed by the same rules."""
        request = parse_request(value.get("networks", {}), value.get("bondings", {}))
        return cls().merged(request)

    def merged(self, request: Request) -> NetConfig:
        """This configuration with the request's changes (removals and replacements)."""
        networks = dict(self.networks)
        for name, net in request.networks.items():
            if net is None:
                networks.pop(name, None)
            else:
                networks[name] = net
        bonds = dict(self.bonds)
        for name, bond in request.bonds.items():
            if bond is None:
                bonds.pop(name, None)
            else:
                bonds[name] = bond
        return NetConfig(networks, bonds)

    def __bool__(self) -> bool:
        return bool(self.networks or self.bonds)


@dataclass(frozen=True)
class Options:
    connectivity_check: bool = False
    connectivity_timeout: int = 120
    commit_on_success: bool = False


@dataclass(frozen=True)
class Request:
    """setupNetworks' networks and bonds: a spec to add or replace, None to remove."""

    networks: Mapping[str, Network | None]
    bonds: Mapping[str, Bond | None]
    options: Options = Options()
    #: networks that must not exist yet (addNetwork) / must exist already (editNetwork)
    new_only: frozenset[str] = frozenset()
    existing_only: frozenset[str] = frozenset()


def check_link_name(name: str, path: str) -> str:
    if LINK_NAME.fullmatch(name) is None or name in (".", ".."):
        raise InvalidParams(path, f"{name[:32]!r} is not a valid link name (1-15 letters, "
                                  "digits, '_', '.', '-'; not starting with '.' or '-')")
    return name


def _ipv4(value: str, path: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidParams(path, f"{value[:32]!r} is not an IPv4 address") from None


def _prefix(spec: Mapping[str, Any], path: str) -> int:
    if "netmask" in spec and "prefix" in spec:
        raise InvalidParams(f"{path}.netmask", "give netmask or prefix, not both")
    if "prefix" in spec:
        prefix = spec["prefix"]
        if isinstance(prefix, bool) or not isinstance(prefix, int) or not 1 <= prefix <= 32:
            raise InvalidParams(f"{path}.prefix", f"{prefix!r} is not a prefix length (1-32)")
        return prefix
    if "netmask" not in spec:
        raise InvalidParams(f"{path}.netmask", "a static address needs a netmask or prefix")
    mask = _ipv4(spec["netmask"], f"{path}.netmask")
    try:
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        raise InvalidParams(f"{path}.netmask", f"{spec['netmask']} is not a contiguous "
                                               "netmask") from None
    if prefix == 0:
        raise InvalidParams(f"{path}.netmask", "a netmask of 0.0.0.0 is not a network")
    return prefix


def parse_network(name: str, spec: Mapping[str, Any], path: str) -> Network | None:
    check_link_name(name, path)
    if spec.get("remove", False):
        return None
    nic, bonding = spec.get("nic"), spec.get("bonding")
    if nic is not None and bonding is not None:
        raise InvalidParams(f"{path}.bonding", "a network runs on a nic or a bonding, not both")
    for key, value in (("nic", nic), ("bonding", bonding)):
        if value is not None:
            check_link_name(value, f"{path}.{key}")
    bridged = bool(spec.get("bridged", True))
    if nic is None and bonding is None and not bridged:
        raise InvalidParams(f"{path}.nic", "a network that is not bridged needs a nic or a "
                                           "bonding")
    vlan = spec.get("vlan")
    if vlan is not None and nic is None and bonding is None:
        raise InvalidParams(f"{path}.vlan", "a VLAN needs a nic or a bonding to tag")
    dhcp = spec.get("bootproto", "none") == "dhcp"
    ip = None
    if "ipaddr" in spec:
        if dhcp:
            raise InvalidParams(f"{path}.ipaddr", "a DHCP network takes no static address")
        address = _ipv4(spec["ipaddr"], f"{path}.ipaddr")
        if address.is_multicast or address.is_unspecified or address.is_loopback \
                or address == ipaddress.IPv4Address("255.255.255.255"):
            raise InvalidParams(f"{path}.ipaddr", f"{address} is not a host address")
        ip = StaticIp(str(address), _prefix(spec, path))
    elif "netmask" in spec or "prefix" in spec:
        raise InvalidParams(f"{path}.ipaddr", "a netmask or prefix needs an ipaddr")
    gateway = spec.get("gateway")
    if gateway is not None:
        gw = _ipv4(gateway, f"{path}.gateway")
        if ip is None and not dhcp:
            raise InvalidParams(f"{path}.gateway", "a gateway needs an ipaddr (or DHCP)")
        if ip is not None and gw == ipaddress.IPv4Address(ip.address):
            raise InvalidParams(f"{path}.gateway", "the gateway is the network's own address")
        gateway = str(gw)
    default_route = bool(spec.get("defaultRoute", False))
    if default_route and gateway is None and not dhcp:
        raise InvalidParams(f"{path}.defaultRoute", "a default route needs a gateway")
    net = Network(name=name, nic=nic, bonding=bonding, vlan=vlan, bridged=bridged,
                  mtu=spec.get("mtu", DEFAULT_MTU), dhcp=dhcp,
                  blocking_dhcp=bool(spec.get("blockingdhcp", False)) and dhcp, ip=ip,
                  gateway=gateway, default_route=default_route)
    for what, device in (("vlan", net.vlan_device),):
        if device is not None and len(device) > 15:
            raise InvalidParams(f"{path}.{what}", f"its link {device} would be longer than "
                                                  "15 characters")
    return net


def parse_bond(name: str, spec: Mapping[str, Any], path: str) -> Bond | None:
    check_link_name(name, path)
    if spec.get("remove", False):
        return None
    slaves = tuple(check_link_name(n, f"{path}.nics[{i}]")
                   for i, n in enumerate(spec.get("nics", ())))
    if len(set(slaves)) != len(slaves):
        raise InvalidParams(f"{path}.nics", "a NIC is listed twice")
    mode, options = parse_bond_options(spec.get("options", ""), f"{path}.options")
    return Bond(name=name, slaves=slaves, mode=mode, options=options)


def _is_number(value: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes "²", which ``int`` refuses."""
    return value.isascii() and value.isdigit()


def parse_bond_options(text: str, path: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    mode = "balance-rr"
    options: dict[str, int] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep:
            raise InvalidParams(path, f"{word[:32]!r} is not key=value")
        if key == "mode":
            if value in BOND_MODES:
                mode = value
            elif _is_number(value) and int(value) in BOND_MODES.values():
                mode = next(m for m, n in BOND_MODES.items() if n == int(value))
            else:
                raise InvalidParams(path, f"mode {value[:32]!r} is not one of "
                                          f"{', '.join(BOND_MODES)}")
        elif key in BOND_INT_OPTIONS:
            if not _is_number(value) or int(value) > 1_000_000:
                raise InvalidParams(path, f"{key} {value[:32]!r} is not a number of ms")
            options[key] = int(value)
        else:
            raise InvalidParams(path, f"unknown bond option {key[:32]!r} (known: mode, "
                                      f"{', '.join(BOND_INT_OPTIONS)})")
    return mode, tuple(sorted(options.items()))


def parse_request(networks: Mapping[str, Any], bondings: Mapping[str, Any],
                  options: Mapping[str, Any] | None = None) -> Request:
    nets = {name: parse_network(name, spec, f"networks.{name}")
            for name, spec in networks.items()}
    bonds = {name: parse_bond(name, spec, f"bondings.{name}") for name, spec in bondings.items()}
    for name in nets.keys() & bonds.keys():
        raise InvalidParams(f"networks.{name}", "a network and a bond cannot share a name")
    opts = options or {}
    return Request(nets, bonds, Options(
        connectivity_check=bool(opts.get("connectivityCheck", False)),
        connectivity_timeout=int(opts.get("connectivityTimeout", 120)),
        commit_on_success=bool(opts.get("commitOnSuccess", False)),
    ))
