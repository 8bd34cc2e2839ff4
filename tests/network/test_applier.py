"""The Applier in this process, on a namespace the test made (``Applier(netns=...)``).

What cannot be provoked through the API is provoked here: a step that fails with an error
no one expected (a bug) still rolls the whole change back before the error is reported.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from actors.host.network import ops
from actors.host.network.apply import Applier
from actors.host.network.dhcp import DhcpClient
from actors.host.network.model import NetConfig, parse_request
from messaging.errors import NetworkApplyFailed
from tests.netns import NetNs, namespaces, veth

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


@pytest.fixture
def host() -> Iterator[NetNs]:
    with namespaces("h", "p") as (h, p):
        veth(h, "veth_h0", p, "p0")
        yield h


def _applier(netns: str) -> Applier:
    def no_dhcp(network: str, device: str) -> DhcpClient:
        raise AssertionError("no DHCP in this test")

    return Applier(dhcp_client=no_dhcp, dhcp_timeout=5.0, fake_nics=("veth_*",),
                   cancel=threading.Event(), netns=netns)


def test_an_unexpected_error_midway_rolls_back_everything(
        host: NetNs, monkeypatch: pytest.MonkeyPatch) -> None:
    applier = _applier(host.name)
    before = host.state()

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the address step")

    # the bridge is made and the NIC joins it; then the address step raises
    monkeypatch.setattr(ops, "add_addr", broken)
    request = parse_request({"net1": {"nic": "veth_h0", "ipaddr": "10.200.0.1",
                                      "prefix": 24, "mtu": 1400}}, {})
    with pytest.raises(NetworkApplyFailed) as caught:
        applier.apply(request, NetConfig())
    assert caught.value.code == 309
    assert "a bug in the address step" in caught.value.message
    assert host.link("net1") is None
    assert host.state() == before


def test_the_applier_applies_and_undoes_in_a_namespace(host: NetNs) -> None:
    applier = _applier(host.name)
    before = host.state()
    request = parse_request({"net1": {"nic": "veth_h0", "ipaddr": "10.200.0.1",
                                      "prefix": 24}}, {})
    config, tx = applier.apply(request, NetConfig())
    assert sorted(config.networks) == ["net1"]
    assert host.ports("net1") == ["veth_h0"] and host.addrs("net1") == ["10.200.0.1/24"]
    applier.undo(tx, "the test undoes it")
    assert host.state() == before
