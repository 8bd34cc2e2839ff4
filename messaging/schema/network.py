"""Network configuration verbs (bridges, VLANs, bonds with a safe config and rollback).

The shape of every network and bond is declared here (so a malformed one is -32602 naming
its member before any handler runs); what depends on the host (its NICs, MTU ranges, what
link kinds its kernel can make) is checked by the network actor, with 3xx codes.
"""

from messaging.schema.types import Bool, Enum, Field, Int, ListOf, MapOf, Str, Struct
from messaging.schema.verbs import Verb

LINK_NAME = Str(min_len=1, max_len=15, pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
IPV4 = Str(min_len=7, max_len=15)

NETWORK = Struct(
    (
        Field("nic", LINK_NAME, required=False, doc="the NIC the network runs on"),
        Field("bonding", LINK_NAME, required=False, doc="the bond the network runs on"),
        Field("vlan", Int(min=1, max=4094), required=False, doc="VLAN id (a tagged network)"),
        Field("bridged", Bool(), required=False, default=True,
              doc="a Linux bridge named after the network (VM NICs join it)"),
        Field("mtu", Int(min=68, max=65535), required=False, doc="default 1500"),
        Field("bootproto", Enum(("none", "dhcp")), required=False, default="none"),
        Field("blockingdhcp", Bool(), required=False, default=False,
              doc="wait for the DHCP lease before answering (no lease: rolled back)"),
        Field("ipaddr", IPV4, required=False, doc="static IPv4 address"),
        Field("netmask", IPV4, required=False, doc="its netmask (or prefix)"),
        Field("prefix", Int(min=1, max=32), required=False, doc="its prefix length"),
        Field("gateway", IPV4, required=False),
        Field("defaultRoute", Bool(), required=False, default=False,
              doc="the host's default route goes through this network's gateway"),
        Field("remove", Bool(), required=False, default=False, doc="remove the network"),
        Field("switch", Enum(("legacy",)), required=False, default="legacy"),
    ),
    name="network",
)

BOND = Struct(
    (
        Field("nics", ListOf(LINK_NAME, max_len=32), required=False, default=[],
              doc="its slaves"),
        Field("options", Str(max_len=256), required=False, default="",
              doc="e.g. 'mode=active-backup miimon=100'"),
        Field("remove", Bool(), required=False, default=False, doc="remove the bond"),
        Field("switch", Enum(("legacy",)), required=False, default="legacy"),
    ),
    name="bond",
)

SETUP_OPTIONS = Struct(
    (
        Field("connectivityCheck", Bool(), required=False, default=False,
              doc="roll back unless a client confirms within connectivityTimeout"),
        Field("connectivityTimeout", Int(min=1, max=600), required=False, default=120),
        Field("commitOnSuccess", Bool(), required=False, default=False,
              doc="also make the result the safe configuration"),
    ),
    name="options",
)

CAPS = ("map: networks {name: {iface, bridged, nic?, bonding?, vlan?, mtu, bootproto, "
        "ipv4addrs, addr, netmask, gateway, defaultRoute, ports?}}, bridges {name: {ports, "
        "mtu, hwaddr, ipv4addrs}}, nics {name: {hwaddr, mtu, speed, state, ipv4addrs}}, "
        "bondings {name: {slaves, hwaddr, mtu, opts}}, vlans {name: {iface, vlanid, mtu, "
        "ipv4addrs}}")

VERBS = (
    Verb(
        "Host.getNetworkCapabilities",
        "Networks, bridges, nics, bondings and vlans of this host, as the kernel has them.",
        result=CAPS,
    ),
    Verb(
        "Host.setupNetworks",
        "Apply a set of network changes atomically: checked against the host first, "
        "rolled back exactly on a failure; with connectivityCheck, rolled back unless a "
        "client confirms (Host.confirmConnectivity, Host.ping2, or any request of the "
        "client that made the change) within connectivityTimeout.",
        (
            Field("networks", MapOf(NETWORK, max_len=64)),
            Field("bondings", MapOf(BOND, max_len=32), required=False, default={}),
            Field("options", SETUP_OPTIONS, required=False, default={}),
        ),
        aliases=("setupNetworks",),
        timeout=180.0,
    ),
    Verb(
        "Host.setSafeNetworkConfig",
        "Persist the current network configuration as the one to restore at boot.",
        aliases=("setSafeNetworkConfig",),
    ),
    Verb(
        "Host.confirmConnectivity",
        "Confirm a network change made under a connectivity check.",
        timeout=5.0,
    ),
    Verb(
        "Host.ping2",
        "Liveness check that also confirms a network change under a connectivity check.",
        timeout=5.0,
    ),
    Verb(
        "Host.addNetwork",
        "Add a bridged network (2011 verb; a setupNetworks of one network).",
        (
            Field("bridge", LINK_NAME),
            Field("vlan", Str(max_len=4, pattern=r"[0-9]*"), required=False),
            Field("bond", LINK_NAME, required=False),
            Field("nics", ListOf(LINK_NAME, max_len=32), required=False, default=[]),
            Field("options", MapOf(Str(max_len=64), max_len=32), required=False, default={},
                  doc="ipaddr, netmask, gateway, bootproto, mtu, bridged, bondingOptions, "
                      "connectivityCheck, connectivityTimeout"),
        ),
        aliases=("addNetwork",),
        timeout=180.0,
    ),
    Verb(
        "Host.delNetwork",
        "Remove a network (2011 verb; a setupNetworks removing it).",
        (
            Field("bridge", LINK_NAME),
            Field("vlan", Str(max_len=4, pattern=r"[0-9]*"), required=False),
            Field("bond", LINK_NAME, required=False),
            Field("nics", ListOf(LINK_NAME, max_len=32), required=False, default=[]),
            Field("options", MapOf(Str(max_len=64), max_len=32), required=False, default={}),
        ),
        aliases=("delNetwork",),
        timeout=180.0,
    ),
    Verb(
        "Host.editNetwork",
        "Replace a network by another, in one change (2011 verb).",
        (
            Field("oldBridge", LINK_NAME),
            Field("newBridge", LINK_NAME),
            Field("vlan", Str(max_len=4, pattern=r"[0-9]*"), required=False),
            Field("bond", LINK_NAME, required=False),
            Field("nics", ListOf(LINK_NAME, max_len=32), required=False, default=[]),
            Field("options", MapOf(Str(max_len=64), max_len=32), required=False, default={}),
        ),
        aliases=("editNetwork",),
        timeout=180.0,
    ),
)

__all__ = ["BOND", "NETWORK", "SETUP_OPTIONS", "VERBS"]
