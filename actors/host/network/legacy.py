"""The 2011 verbs (addNetwork, delNetwork, editNetwork) as setupNetworks requests.

Their ``options`` map carries strings (as vdsm's did): the network's attributes and the
change's options, each converted and then checked by the same schema as setupNetworks, so
an error names the member as the client wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.host.network.model import Request, parse_request
from messaging.errors import InvalidParams
from messaging.schema.network import BOND, NETWORK, SETUP_OPTIONS

_TEXT = ("ipaddr", "netmask", "gateway", "bootproto")
_BOOL = ("bridged", "defaultRoute", "blockingdhcp")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _int(value: str, path: str) -> int:
    if not (value.isascii() and value.isdigit()):  # "²" is a digit int() refuses
        raise InvalidParams(path, f"{value[:32]!r} is not a number")
    return int(value)


def _bool(value: str, path: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise InvalidParams(path, f"{value[:32]!r} is not true or false")


def _network(params: Mapping[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any],
                                                           dict[str, Any]]:
    """(networks, bondings, options) of setupNetworks for one legacy network."""
    options = dict(params.get("options", {}))
    net: dict[str, Any] = {}
    change: dict[str, Any] = {}
    for key in _TEXT:
        if key in options:
            net[key] = options.pop(key)
    if "prefix" in options:
        net["prefix"] = _int(options.pop("prefix"), "options.prefix")
    if "mtu" in options:
        net["mtu"] = _int(options.pop("mtu"), "options.mtu")
    for key in _BOOL:
        if key in options:
            net[key] = _bool(options.pop(key), f"options.{key}")
    if "connectivityCheck" in options:
        change["connectivityCheck"] = _bool(options.pop("connectivityCheck"),
                                            "options.connectivityCheck")
    if "connectivityTimeout" in options:
        change["connectivityTimeout"] = _int(options.pop("connectivityTimeout"),
                                             "options.connectivityTimeout")
    bonding_options = options.pop("bondingOptions", "")
    for key in options:
        raise InvalidParams(f"options.{key}", "unknown option")
    bondings: dict[str, Any] = {}
    nics = list(params.get("nics", []))
    bond = params.get("bond")
    if bond:
        net["bonding"] = bond
        if nics:
            bondings[bond] = BOND.check({"nics": nics, "options": bonding_options}, "nics")
    elif nics:
        if len(nics) != 1:
            raise InvalidParams("nics", "a network without a bond takes one NIC")
        net["nic"] = nics[0]
    vlan = params.get("vlan")
    if vlan:
        net["vlan"] = _int(vlan, "vlan")
    networks = {name: NETWORK.check(net, f"networks.{name}")}
    return networks, bondings, SETUP_OPTIONS.check(change, "options")


def add_network(params: Mapping[str, Any]) -> Request:
    name = params["bridge"]
    networks, bondings, options = _network(params, name)
    request = parse_request(networks, bondings, options)
    return Request(request.networks, request.bonds, request.options,
                   new_only=frozenset((name,)))


def del_network(params: Mapping[str, Any]) -> Request:
    change = {k: v for k, v in params.get("options", {}).items()
              if k in ("connectivityCheck", "connectivityTimeout")}
    _, _, options = _network({"options": change}, params["bridge"])
    return parse_request({params["bridge"]: {"remove": True}}, {}, options)


def edit_network(params: Mapping[str, Any]) -> Request:
    old, new = params["oldBridge"], params["newBridge"]
    networks, bondings, options = _network(params, new)
    if old != new:
        networks[old] = {"remove": True}
    request = parse_request(networks, bondings, options)
    return Request(request.networks, request.bonds, request.options,
                   new_only=frozenset((new,)) if old != new else frozenset(),
                   existing_only=frozenset((old,)))
