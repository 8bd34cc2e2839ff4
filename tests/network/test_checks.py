"""The checks that need no kernel: request parsing, validation against a host's state (as a
snapshot value), DHCP script lines, the connectivity watch and the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.host.network import legacy
from actors.host.network.dhcp import Lease, parse_event
from actors.host.network.model import NetConfig, parse_request
from actors.host.network.netstate import HostNet, Link
from actors.host.network.persist import NetStore, boot_marker
from actors.host.network.shared import ConnectivityWatch
from actors.host.network.validate import check
from messaging.errors import InvalidParams, VdsmError

pytestmark = pytest.mark.timeout(30)


def _live(**mtus: tuple[int, int]) -> HostNet:
    links = {"eth0": Link(2, "eth0", None, max_mtu=9000), "eth1": Link(3, "eth1", None),
             "lo": Link(1, "lo", None, loopback=True), "tap0": Link(4, "tap0", "tun"),
             "veth_x": Link(5, "veth_x", "veth")}
    return HostNet(links=links)


def _check(networks: dict[str, Any], bondings: dict[str, Any] | None = None,
           supported: tuple[str, ...] = ("bridge", "vlan", "bond")) -> None:
    request = parse_request(networks, bondings or {})
    check(request, NetConfig(), NetConfig().merged(request), _live(), fake_nics=("veth_*",),
          kind_supported=lambda kind: (kind in supported, "Operation not supported"))


@pytest.mark.parametrize(("networks", "bondings", "code", "text"), [
    ({"n": {"nic": "eth0", "mtu": 9001}}, {}, 305, "MTU 9001 is outside what eth0 takes"),
    ({"n": {"bonding": "b"}}, {"b": {"nics": ["eth0", "eth1"]}, "c": {"nics": ["eth1"]}},
     302, "eth1"),
    ({"n": {"nic": "lo"}}, {}, 301, "lo"),
    ({"n": {"nic": "tap0"}}, {}, 301, "tap0"),
    ({"n": {"nic": "eth0", "vlan": 5}, "m": {"nic": "eth0", "vlan": 5}}, {}, 315, "VLAN 5"),
    ({"n": {"nic": "eth0", "ipaddr": "10.0.0.2", "prefix": 24},
      "m": {"nic": "eth1", "ipaddr": "10.0.0.2", "prefix": 24}}, {}, 303, "already"),
    ({"n": {"nic": "eth0", "vlan": 7}}, {}, 306, "vlan links"),
    ({"eth0.5": {"bridged": True}, "m": {"nic": "eth0", "vlan": 5, "bridged": False}}, {},
     315, "VLAN device eth0.5 would be network eth0.5's bridge"),
])
def test_what_the_host_refuses(networks: dict[str, Any], bondings: dict[str, Any], code: int,
                               text: str) -> None:
    with pytest.raises(VdsmError) as caught:
        _check(networks, bondings, supported=("bridge", "bond"))
    assert caught.value.code == code
    assert text in caught.value.message


def test_what_the_host_accepts() -> None:
    _check({"a": {"nic": "eth0", "mtu": 9000}, "b": {"nic": "eth0", "vlan": 5},
            "c": {"nic": "veth_x", "bridged": False, "ipaddr": "10.1.0.1", "prefix": 24},
            "d": {"bonding": "bond0"}}, {"bond0": {"nics": ["eth1"]}})


@pytest.mark.parametrize(("networks", "param"), [
    ({"n": {"nic": "eth0", "ipaddr": "224.0.0.1", "prefix": 4}}, "networks.n.ipaddr"),
    ({"n": {"nic": "eth0", "ipaddr": "10.0.0.1", "netmask": "255.255.0.0",
            "prefix": 16}}, "networks.n.netmask"),
    ({"n": {"nic": "eth0", "bootproto": "dhcp", "ipaddr": "10.0.0.1", "prefix": 8}},
     "networks.n.ipaddr"),
    ({"n": {"nic": "eth0", "ipaddr": "10.0.0.1", "prefix": 8, "gateway": "10.0.0.1"}},
     "networks.n.gateway"),
    ({"n": {"nic": "eth0", "defaultRoute": True}}, "networks.n.defaultRoute"),
    ({"n": {"bridged": False}}, "networks.n.nic"),
    ({"n": {"vlan": 3}}, "networks.n.vlan"),
    ({"n": {"nic": "eth0/x"}}, "networks.n.nic"),
    ({".n": {"nic": "eth0"}}, "networks..n"),
    ({"n": {"nic": "averylongnic123", "vlan": 4000}}, "networks.n.vlan"),
])
def test_what_the_request_itself_gets_wrong(networks: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_request(networks, {})
    assert caught.value.param == param


def test_bond_options() -> None:
    bond = parse_request({}, {"b": {"nics": ["eth0"], "options": "mode=4 miimon=100"}}).bonds["b"]
    assert bond is not None and bond.options_text == "mode=802.3ad miimon=100"
    for text in ("mode=9", "miimon=x", "lacp_rate=fast", "mode", "mode=\u00b2",
                 "miimon=\u00b9\u00b2", "updelay=-1"):
        with pytest.raises(InvalidParams):
            parse_request({}, {"b": {"nics": ["eth0"], "options": text}})


def test_dhcp_script_lines_are_parsed_strictly() -> None:
    line = "VDSM-DHCP bound ip=10.1.0.50 mask=24 router=10.1.0.1 10.1.0.2 lease=120"
    assert parse_event(line) == ("bound", Lease("10.1.0.50", 24, "10.1.0.1", 120))
    assert parse_event("VDSM-DHCP deconfig ip= mask= router= lease=") == ("deconfig", None)
    assert parse_event("udhcpc: sending discover") is None
    for bad in ("ip=10.1.0.500 mask=24", "ip=10.1.0.5 mask=40", "ip=0.0.0.0 mask=8",
                "ip=10.1.0.5 mask=24 router=;reboot", "ip=224.1.1.1 mask=24"):
        assert parse_event(f"VDSM-DHCP bound {bad} lease=1") == ("bound", None), bad


def test_the_watch_confirms_only_for_the_client_or_an_explicit_confirmation() -> None:
    watch = ConnectivityWatch()
    confirmed: list[int] = []
    watch.seen("key:alice", "Host.ping")  # nothing armed: nothing happens
    watch.arm(1, "key:alice", confirmed.append)
    watch.seen("key:bob", "Host.ping")
    watch.seen("", "Host.ping")
    assert confirmed == []
    watch.seen("key:alice", "Host.getVMList")
    assert confirmed == [1]
    watch.seen("key:alice", "Host.ping")  # once only
    assert confirmed == [1]
    watch.arm(2, "key:alice", confirmed.append)
    watch.disarm(2)
    assert not watch.confirm()
    watch.arm(3, "conn:00aa", confirmed.append)
    assert watch.confirm()
    assert confirmed == [1, 3]


def test_the_files_keep_the_configuration_and_ignore_damage(tmp_path: Path) -> None:
    store = NetStore(tmp_path)
    assert store.running() is None and store.safe() is None and store.pending() is None
    config = NetConfig().merged(parse_request(
        {"n": {"nic": "eth0", "vlan": 5, "mtu": 9000, "ipaddr": "10.0.0.2", "prefix": 24,
               "gateway": "10.0.0.1", "defaultRoute": True},
         "d": {"nic": "eth1", "bootproto": "dhcp", "blockingdhcp": True}},
        {"b": {"nics": ["eth2"], "options": "mode=1 miimon=100"}}))
    marker = boot_marker()
    store.save_running(config, marker)
    store.save_safe(config)
    running = store.running()
    assert running is not None and running.config == config and running.marker == marker
    assert store.safe() == config
    (store.directory / "safe.json").write_text('{"networks": {"../x": {}}}')
    assert store.safe() is None  # refused like a client's request, never fatal
    (store.directory / "running.json").write_text("not json")
    assert store.running() is None
    assert marker.count("/") == 1 and marker.split("/")[1].startswith("cookie:")


@pytest.mark.parametrize(("params", "param"), [
    ({"options": {"mtu": "\u00b2"}}, "options.mtu"),  # a digit to str.isdigit, not to int()
    ({"options": {"prefix": "2\u0663"}}, "options.prefix"),  # an Arabic-Indic digit
    ({"options": {"mtu": "-1"}}, "options.mtu"),
    ({"options": {"bridged": "maybe"}}, "options.bridged"),
    ({"options": {"stp": "on"}}, "options.stp"),
    ({"vlan": "\u00b9"}, "vlan"),
    ({"nics": ["eth0", "eth1"]}, "nics"),
    ({"options": {"mtu": "99999"}}, "networks.x.mtu"),
])
def test_the_2011_verbs_refuse_bad_strings(params: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        legacy.add_network({"bridge": "x", **params})
    assert caught.value.data == {"param": param}
