"""setupNetworks against a real vdsmd running in a namespace whose NICs are veth pairs.

Every change happens inside the test's host namespace (H); the peer namespace (P) is the
network on the far side. State is read back with ``ip -j`` (not the agent's own reader).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors.host.network.api import START_SLACK
from messaging.client import ClientError
from messaging.deadline import REPLY_MARGIN
from tests.harness import Vdsmd, next_event, wait_for
from tests.network.bed import bed, error_of, peer_address

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

TOPIC = "|net|host_conn|no_id"


def setup(d: Vdsmd, networks: dict[str, Any], bondings: dict[str, Any] | None = None,
          **options: Any) -> Any:
    return d.call("Host.setupNetworks", networks=networks, bondings=bondings or {},
                  options=options)


def test_a_bridged_network_is_made_reached_edited_and_removed(tmp_path: Path) -> None:
    with bed(tmp_path) as b:
        d = b.vdsmd().start()
        nic_mac = b.host.link("veth_h0")["address"]  # type: ignore[index]
        with d.subscriber(TOPIC) as sub:
            assert setup(d, {"net1": {"nic": "veth_h0", "ipaddr": "10.200.0.1",
                                      "netmask": "255.255.255.0"}}) is True
            next_event(sub, lambda t, p: t == TOPIC, 10)
        assert b.host.link("net1")["linkinfo"]["info_kind"] == "bridge"  # type: ignore[index]
        assert b.host.ports("net1") == ["veth_h0"]
        assert b.host.addrs("net1") == ["10.200.0.1/24"]
        wait_for(lambda: b.peer.ping("10.200.0.1"), 20, interval=0.2, what="ping from P")

        caps = d.call("Host.getNetworkCapabilities")
        net = caps["networks"]["net1"]
        assert (net["iface"], net["bridged"], net["nic"], net["ports"]) == \
            ("net1", True, "veth_h0", ["veth_h0"])
        assert (net["addr"], net["netmask"], net["mtu"]) == ("10.200.0.1", "255.255.255.0",
                                                            1500)
        nic = caps["nics"]["veth_h0"]
        assert (nic["hwaddr"], nic["mtu"], nic["speed"], nic["master"]) == \
            (nic_mac, 1500, 10000, "net1")
        assert caps["bridges"]["net1"]["ports"] == ["veth_h0"]
        assert caps["bondings"] == {} and caps["vlans"] == {}
        full = d.call("Host.getCapabilities")
        assert full["networks"] == caps["networks"] and full["nics"].keys() == caps["nics"].keys()

        # per-NIC counters in Host.getStats: the ping went through veth_h0
        def counted() -> bool:
            stats = d.call("Host.getStats")["network"].get("veth_h0", {})
            return stats.get("rxBytes", 0) > 0 and stats.get("txBytes", 0) > 0
        wait_for(counted, 20, interval=0.2, what="veth_h0's counters in Host.getStats")

        # edit: address and MTU change in place; the bridge is the same link
        index = b.host.link("net1")["ifindex"]  # type: ignore[index]
        with d.subscriber(TOPIC) as sub:
            assert setup(d, {"net1": {"nic": "veth_h0", "ipaddr": "10.200.0.5",
                                      "prefix": 24, "mtu": 1400}}) is True
            next_event(sub, lambda t, p: t == TOPIC, 10)
        assert b.host.link("net1")["ifindex"] == index  # type: ignore[index]
        assert b.host.addrs("net1") == ["10.200.0.5/24"]
        assert b.host.link("net1")["mtu"] == b.host.link("veth_h0")["mtu"] == 1400  # type: ignore[index]
        wait_for(lambda: b.peer.ping("10.200.0.5"), 20, interval=0.2, what="ping new address")

        # delete: the bridge goes, the NIC is released with the default MTU
        with d.subscriber(TOPIC) as sub:
            assert setup(d, {"net1": {"remove": True}}) is True
            next_event(sub, lambda t, p: t == TOPIC, 10)
        assert b.host.link("net1") is None
        nic_after = b.host.link("veth_h0")
        assert nic_after is not None and "master" not in nic_after and nic_after["mtu"] == 1500
        assert d.call("Host.getNetworkCapabilities")["networks"] == {}


def test_a_bridgeless_network_with_a_static_default_route(tmp_path: Path) -> None:
    with bed(tmp_path) as b:
        d = b.vdsmd().start()
        before = b.host.state()
        gateway = peer_address(0)  # P's end of veth_h0
        with d.subscriber(TOPIC) as sub:
            assert setup(d, {"plain": {"nic": "veth_h0", "bridged": False,
                                       "ipaddr": "10.200.0.1", "prefix": 24,
                                       "gateway": gateway, "defaultRoute": True}}) is True
            next_event(sub, lambda t, p: t == TOPIC, 10)
        # no bridge: the address is on the NIC itself, and so is the default route
        assert b.host.link("plain") is None
        assert "master" not in b.host.link("veth_h0")  # type: ignore[operator]
        assert b.host.addrs("veth_h0") == ["10.200.0.1/24"]
        assert _defaults(b) == [(gateway, "veth_h0")]
        wait_for(lambda: b.peer.ping("10.200.0.1"), 20, interval=0.2, what="ping from P")
        # the default route is used: P's other address is reached through the gateway
        b.peer.ip("addr", "add", "10.77.0.1/32", "dev", "lo")
        assert b.host.ping("10.77.0.1")
        net = d.call("Host.getNetworkCapabilities")["networks"]["plain"]
        assert (net["iface"], net["bridged"], net["nic"], net["addr"], net["gateway"],
                net["defaultRoute"]) == ("veth_h0", False, "veth_h0", "10.200.0.1", gateway,
                                         True)
        assert "ports" not in net
        nic = d.call("Host.getNetworkCapabilities")["nics"]["veth_h0"]
        assert (nic["ipv4addrs"], nic["addr"], nic["netmask"], nic["master"]) == \
            (["10.200.0.1/24"], "10.200.0.1", "255.255.255.0", "")

        # edit: another MTU, no default route any more
        assert setup(d, {"plain": {"nic": "veth_h0", "bridged": False, "ipaddr": "10.200.0.1",
                                   "prefix": 24, "mtu": 1400}}) is True
        assert b.host.link("veth_h0")["mtu"] == 1400  # type: ignore[index]
        assert _defaults(b) == [] and not b.host.ping("10.77.0.1", timeout=1)
        # then bridged, with the route back: the address moves from the NIC to the bridge
        assert setup(d, {"plain": {"nic": "veth_h0", "ipaddr": "10.200.0.1", "prefix": 24,
                                   "gateway": gateway, "defaultRoute": True}}) is True
        assert b.host.ports("plain") == ["veth_h0"] and b.host.addrs("veth_h0") == []
        assert b.host.addrs("plain") == ["10.200.0.1/24"]
        assert _defaults(b) == [(gateway, "plain")]
        assert setup(d, {"plain": {"remove": True}}) is True
        assert b.host.state() == before


def _defaults(b: Any) -> list[tuple[str, str]]:
    return [(r["gateway"], r["dev"]) for r in b.host.routes() if r["dst"] == "default"]


def test_a_failure_midway_restores_exactly_the_previous_state(tmp_path: Path) -> None:
    with bed(tmp_path) as b:
        d = b.vdsmd().start()
        assert setup(d, {"net0": {"nic": "veth_h0", "ipaddr": "10.200.0.1",
                                  "prefix": 24}}) is True
        before = b.host.state()
        # net0 is edited (address, MTU), net2 is made (a bridge, a port, an address), and
        # the last step fails in the kernel: the gateway is on no network the host has
        # (the agent cannot know that beforehand: another route might reach it).
        error = error_of(lambda: setup(d, {
            "net0": {"nic": "veth_h0", "ipaddr": "10.200.0.9", "prefix": 24, "mtu": 1300},
            "net2": {"nic": "veth_h1", "ipaddr": "10.201.0.1", "prefix": 24,
                     "gateway": "10.99.0.1", "defaultRoute": True},
        }))
        assert error.code == 309, error
        assert "add route 0.0.0.0/0 via 10.99.0.1" in error.message
        assert "Network is unreachable" in error.message
        assert b.host.state() == before
        caps = d.call("Host.getNetworkCapabilities")
        assert list(caps["networks"]) == ["net0"]
        assert caps["networks"]["net0"]["addr"] == "10.200.0.1"
        # a removal that fails midway puts the bridge back as it was (MAC, port, address)
        error = error_of(lambda: setup(d, {
            "net0": {"remove": True},
            "net2": {"nic": "veth_h1", "ipaddr": "10.201.0.1", "prefix": 24,
                     "gateway": "10.99.0.1", "defaultRoute": True},
        }))
        assert error.code == 309, error
        assert b.host.state() == before
        wait_for(lambda: b.peer.ping("10.200.0.1"), 20, interval=0.2, what="ping after")


def test_changes_run_one_at_a_time(tmp_path: Path) -> None:
    with bed(tmp_path) as b:
        d = b.vdsmd(network="max_queued = 1").start()
        outcomes: dict[str, Any] = {}

        def call(tag: str, networks: dict[str, Any], **options: Any) -> None:
            try:
                outcomes[tag] = setup(d, networks, **options)
            except ClientError as e:
                outcomes[tag] = e.code

        def inspect() -> dict[str, Any]:
            found: dict[str, Any] = d.call("Actors.inspect", path="/host/network")["detail"]
            return found

        first = threading.Thread(target=call, args=("first", {"net1": {
            "nic": "veth_h0", "ipaddr": "10.200.0.1", "prefix": 24}}),
            kwargs={"connectivityCheck": True, "connectivityTimeout": 60})
        first.start()
        wait_for(lambda: inspect()["waitingForConnectivity"], 30, what="the first change")
        # the second change has a connectivity check of its own, whose wait plus the
        # change's budget exceed the verb's timeout: it may still wait in the queue as long
        # as that timeout allows, not only the reply margin (5 s)
        second = threading.Thread(target=call, args=("second", {"net2": {
            "nic": "veth_h1", "ipaddr": "10.201.0.1", "prefix": 24}}),
            kwargs={"connectivityCheck": True, "connectivityTimeout": 120})
        second.start()
        wait_for(lambda: inspect()["queued"] == 1, 30, what="the second change queued")
        assert error_of(lambda: setup(d, {"net3": {"bridged": True}})).code == 312
        time.sleep(REPLY_MARGIN + 1)  # time passing is the point: the second still waits
        assert b.host.link("net2") is None  # waits behind the first
        assert d.call("Host.confirmConnectivity") is True
        first.join(30)
        assert outcomes == {"first": True}
        wait_for(lambda: inspect()["waitingForConnectivity"], 30, what="the second change")
        assert b.host.ports("net2") == ["veth_h1"]
        assert d.call("Host.confirmConnectivity") is True
        second.join(30)
        assert outcomes == {"first": True, "second": True}
        assert b.host.ports("net2") == ["veth_h1"]


def test_a_change_that_waited_too_long_is_dropped_unapplied(tmp_path: Path) -> None:
    # a change's budget (apply_timeout + dhcp_timeout = 185 s) past the verb's timeout
    # (180 s): a change must start at once, or its client may stop waiting before it ends
    with bed(tmp_path) as b:
        d = b.vdsmd(network="apply_timeout = 170").start()
        outcomes: dict[str, Any] = {}

        def call(tag: str, networks: dict[str, Any], **options: Any) -> None:
            try:
                outcomes[tag] = setup(d, networks, **options)
            except ClientError as e:
                outcomes[tag] = e.code

        def inspect() -> dict[str, Any]:
            found: dict[str, Any] = d.call("Actors.inspect", path="/host/network")["detail"]
            return found

        first = threading.Thread(target=call, args=("first", {"net1": {
            "nic": "veth_h0", "ipaddr": "10.200.0.1", "prefix": 24}}),
            kwargs={"connectivityCheck": True, "connectivityTimeout": 60})
        first.start()
        wait_for(lambda: inspect()["waitingForConnectivity"], 30, what="the first change")
        second = threading.Thread(target=call, args=("second", {"net2": {
            "nic": "veth_h1", "ipaddr": "10.201.0.1", "prefix": 24}}))
        second.start()
        wait_for(lambda: inspect()["queued"] == 1, 30, what="the second change queued")
        time.sleep(START_SLACK + 1)  # time passing is the point: past the second's start_by
        assert d.call("Host.confirmConnectivity") is True
        first.join(30)
        second.join(30)
        assert outcomes == {"first": True, "second": 312}
        assert b.host.link("net2") is None and "master" not in b.host.link("veth_h1")  # type: ignore[operator]
        assert inspect()["queued"] == 0 and inspect()["busy"] is None
        assert sorted(d.call("Host.getNetworkCapabilities")["networks"]) == ["net1"]


def test_the_2011_verbs_are_setup_networks(tmp_path: Path) -> None:
    with bed(tmp_path) as b:
        d = b.vdsmd().start()
        assert d.call("Host.addNetwork", bridge="old", nics=["veth_h0"],
                      options={"ipaddr": "10.200.0.1", "netmask": "255.255.255.0",
                               "mtu": "1400"}) is True
        assert b.host.addrs("old") == ["10.200.0.1/24"]
        assert error_of(lambda: d.call("Host.addNetwork", bridge="old",
                                       nics=["veth_h1"])).code == 314
        assert error_of(lambda: d.call("Host.addNetwork", bridge="x", nics=["veth_h1"],
                                       options={"stp": "on"})).code == -32602
        assert error_of(lambda: d.call("Host.addNetwork", bridge="x", nics=["veth_h1"],
                                       options={"mtu": "\u00b2"})).code == -32602
        assert d.call("Host.editNetwork", oldBridge="old", newBridge="new",
                      nics=["veth_h0"], options={"ipaddr": "10.200.0.3",
                                                  "prefix": "24"}) is True
        assert b.host.link("old") is None
        assert b.host.ports("new") == ["veth_h0"] and b.host.addrs("new") == ["10.200.0.3/24"]
        assert error_of(lambda: d.call("Host.editNetwork", oldBridge="old", newBridge="x",
                                       nics=["veth_h1"])).code == 307
        assert d.call("Host.delNetwork", bridge="new") is True
        assert b.host.link("new") is None
        assert error_of(lambda: d.call("Host.delNetwork", bridge="new")).code == 307


BAD: list[tuple[str, dict[str, Any], dict[str, Any], int, str]] = [
    ("unknown NIC", {"a": {"nic": "eth9"}}, {}, 301, "no such NIC on this host: eth9"),
    ("NIC used by two networks", {"a": {"nic": "veth_h0"}, "b": {"nic": "veth_h0"}}, {},
     302, "veth_h0"),
    ("NIC in a bond and a network", {"a": {"nic": "veth_h0"}},
     {"bond0": {"nics": ["veth_h0"]}}, 302, "bond bond0"),
    ("NIC of a bridge the agent does not manage", {"a": {"nic": "veth_h1"}}, {}, 302,
     "foreign"),
    ("invalid address", {"a": {"nic": "veth_h0", "ipaddr": "10.0.0.300", "prefix": 24}},
     {}, -32602, "networks.a.ipaddr"),
    ("invalid prefix", {"a": {"nic": "veth_h0", "ipaddr": "10.0.0.3", "prefix": 33}},
     {}, -32602, "networks.a.prefix"),
    ("invalid netmask", {"a": {"nic": "veth_h0", "ipaddr": "10.0.0.3",
                               "netmask": "255.0.255.0"}}, {}, -32602, "networks.a.netmask"),
    ("the subnet's broadcast address", {"a": {"nic": "veth_h0", "ipaddr": "10.0.0.255",
                                              "prefix": 24}}, {}, 303, "not a host address"),
    ("address without a mask", {"a": {"nic": "veth_h0", "ipaddr": "10.0.0.3"}}, {},
     -32602, "networks.a.netmask"),
    ("gateway without an address", {"a": {"nic": "veth_h0", "gateway": "10.0.0.1"}}, {},
     -32602, "networks.a.gateway"),
    ("two default routes", {
        "a": {"nic": "veth_h0", "ipaddr": "10.0.0.3", "prefix": 24, "gateway": "10.0.0.1",
              "defaultRoute": True},
        "b": {"bridged": True, "ipaddr": "10.1.0.3", "prefix": 24, "gateway": "10.1.0.1",
              "defaultRoute": True}}, {}, 303, "default route"),
    ("bond with no slaves", {}, {"bond0": {"nics": []}}, 304, "at least one NIC"),
    ("bond with an unknown slave", {}, {"bond0": {"nics": ["eth7"]}}, 301, "eth7"),
    ("network on an undefined bond", {"a": {"bonding": "bond9"}}, {}, 304, "bond9"),
    ("bad bond options", {}, {"bond0": {"nics": ["veth_h0"], "options": "mode=fast"}},
     -32602, "bondings.bond0.options"),
    ("bond options with a digit int() refuses", {},
     {"bond0": {"nics": ["veth_h0"], "options": "mode=\u00b2"}}, -32602,
     "bondings.bond0.options"),
    ("MTU out of range", {"a": {"nic": "veth_h0", "mtu": 70000}}, {}, -32602,
     "networks.a.mtu"),
    ("MTU below the minimum", {"a": {"nic": "veth_h0", "mtu": 20}}, {}, -32602,
     "networks.a.mtu"),
    ("name not a link name", {"a/b": {"nic": "veth_h0"}}, {}, -32602, "networks.a/b"),
    ("name too long", {"n" * 16: {"nic": "veth_h0"}}, {}, -32602, "networks.nnnn"),
    ("name of an existing link", {"veth_h0": {"nic": "veth_h0"}}, {}, 308, "veth_h0"),
    ("unknown attribute", {"a": {"nic": "veth_h0", "bridgeOpts": "x"}}, {}, -32602,
     "networks.a.bridgeOpts"),
    ("nic and bonding", {"a": {"nic": "veth_h0", "bonding": "bond0"}}, {}, -32602,
     "networks.a.bonding"),
    ("removing an unknown network", {"nothere": {"remove": True}}, {}, 307, "nothere"),
    ("a VLAN (this kernel has none)", {"a": {"nic": "veth_h0", "vlan": 100}}, {}, 306,
     "vlan links"),
    ("a bond (this kernel has none)", {"a": {"bonding": "bond0"}},
     {"bond0": {"nics": ["veth_h0"], "options": "mode=active-backup miimon=100"}}, 306,
     "bond links"),
]


def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with bed(tmp_path) as b:
        b.host.ip("link", "add", "foreign", "type", "bridge")
        b.host.ip("link", "set", "veth_h1", "master", "foreign")
        d = b.vdsmd().start()
        assert setup(d, {"keep": {"nic": "veth_h0", "ipaddr": "10.200.0.1",
                                  "prefix": 24}}) is True
        assert setup(d, {"keep": {"remove": True}}) is True  # the NIC is free again
        before = b.host.state()
        for what, networks, bondings, code, text in BAD:
            error = error_of(lambda n=networks, bo=bondings: setup(d, n, bo))
            assert error.code == code, (what, error)
            assert text in error.message, (what, error)
            assert b.host.state() == before, what
        assert d.call("Host.getNetworkCapabilities")["networks"] == {}
        # links that are no NICs: loopback, a bridge, a network's own bridge even when its
        # name matches [network] fake_nics (veth_*)
        assert setup(d, {"veth_br": {"bridged": True}}) is True
        before = b.host.state()
        for nic in ("lo", "foreign", "veth_br"):
            for networks, bondings in (({"a": {"nic": nic}}, {}),
                                       ({}, {"bond0": {"nics": [nic]}})):
                error = error_of(lambda n=networks, bo=bondings: setup(d, n, bo))
                assert (error.code, nic in error.message) == (301, True), (nic, error)
                assert b.host.state() == before, nic
        assert setup(d, {"veth_br": {"remove": True}}) is True
        # the options are checked too
        error = error_of(lambda: setup(d, {}, connectivityTimeout=0))
        assert (error.code, error.data) == (-32602, {"param": "options.connectivityTimeout"})
