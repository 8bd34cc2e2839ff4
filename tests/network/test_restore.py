"""The safe configuration across restarts of vdsmd and "reboots" (a fresh namespace).

A restart in the same namespace keeps what runs (unsafe changes included); a change that a
killed agent never got confirmed is rolled back by the next one; a host that "rebooted"
(new namespaces, same state dir) gets its safe configuration back and loses the rest.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from messaging.client import ClientError
from tests.harness import wait_for
from tests.network.bed import bed

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

NET1 = {"nic": "veth_h0", "ipaddr": "10.200.0.1", "prefix": 24}


def test_the_safe_configuration_comes_back_after_a_reboot(tmp_path: Path) -> None:
    with bed(tmp_path) as b:
        d = b.vdsmd().start()
        assert d.call("Host.setupNetworks", networks={"net1": NET1}) is True
        assert d.call("Host.setSafeNetworkConfig") is True
        # unsafe: net1's MTU changes and net2 appears
        assert d.call("Host.setupNetworks", networks={
            "net1": {**NET1, "mtu": 1400},
            "net2": {"nic": "veth_h1", "ipaddr": "10.201.0.1", "prefix": 24}}) is True
        unsafe = b.host.state()

        # vdsmd restarts, same namespace: what runs stays as it is
        assert d.stop() == 0
        d.start()
        wait_for(lambda: "net2" in d.call("Host.getNetworkCapabilities")["networks"], 30,
                 what="the running configuration")
        assert b.host.state() == unsafe

        # a change waiting for a confirmation when the agent dies is rolled back at start
        with d.client() as c:  # open until the change is applied (close drops unsent)
            c.notify("Host.setupNetworks", {
                "networks": {"net3": {"bridged": True, "ipaddr": "10.203.0.1",
                                      "prefix": 24}},
                "options": {"connectivityCheck": True, "connectivityTimeout": 120}})
            wait_for(lambda: b.host.link("net3") is not None, 30, interval=0.05,
                     what="the unconfirmed change applied")
        d.kill()
        d.start()
        wait_for(lambda: b.host.state() == unsafe, 30, interval=0.1,
                 what="the unconfirmed change rolled back")
        assert sorted(d.call("Host.getNetworkCapabilities")["networks"]) == ["net1", "net2"]
        assert d.stop() == 0

    with bed(tmp_path) as b:  # the host "rebooted": fresh links, the same state dir
        assert b.host.link("net1") is None
        d = b.vdsmd().start()
        wait_for(lambda: b.host.addrs("net1") == ["10.200.0.1/24"], 30, interval=0.1,
                 what="the safe configuration restored")
        assert b.host.ports("net1") == ["veth_h0"]
        assert b.host.link("net1")["mtu"] == 1500  # type: ignore[index]
        assert b.host.link("net2") is None
        caps = d.call("Host.getNetworkCapabilities")
        assert sorted(caps["networks"]) == ["net1"]
        wait_for(lambda: b.peer.ping("10.200.0.1"), 20, interval=0.2, what="ping from P")
        # and it is running now: a restart does not apply it again
        assert d.stop() == 0
        index = b.host.link("net1")["ifindex"]  # type: ignore[index]
        d.start()
        wait_for(lambda: "net1" in d.call("Host.getNetworkCapabilities")["networks"], 30,
                 what="the running configuration")
        assert b.host.link("net1")["ifindex"] == index  # type: ignore[index]


def test_a_crash_of_the_network_actor_rolls_back_its_unconfirmed_change(
        tmp_path: Path) -> None:
    with bed(tmp_path) as b:
        d = b.vdsmd("[debug]\nfault_injection = true\n").start()
        assert d.call("Host.setupNetworks", networks={"net1": NET1}) is True
        committed = b.host.state()
        outcome: dict[str, Any] = {}

        def change() -> None:
            try:
                outcome["result"] = d.call("Host.setupNetworks", networks={
                    "net1": {**NET1, "mtu": 1400},
                    "net2": {"nic": "veth_h1", "ipaddr": "10.201.0.1", "prefix": 24}},
                    options={"connectivityCheck": True, "connectivityTimeout": 120})
            except ClientError as e:
                outcome["error"] = e.code

        def detail() -> dict[str, Any]:
            found: dict[str, Any] = d.call("Actors.inspect", path="/host/network")["detail"]
            return found

        caller = threading.Thread(target=change)
        caller.start()
        try:
            wait_for(lambda: detail()["waitingForConnectivity"], 30, interval=0.1,
                     what="the change waiting for its confirmation")
            assert b.host.ports("net2") == ["veth_h1"]
            d.call("Actors.crash", path="/host/network", reason="drill")
            caller.join(30)
            # the caller learns that the actor it waited on stopped; its change is undone
            # by the next incarnation (it was never confirmed)
            assert outcome == {"error": 102}
            wait_for(lambda: b.host.state() == committed, 30, interval=0.1,
                     what="the unconfirmed change rolled back")
        finally:
            caller.join(30)
        actor = {a["path"]: a for a in d.call("Actors.list")}["/host/network"]
        assert actor["restarts"] == 1 and actor["state"] == "running"
        assert sorted(d.call("Host.getNetworkCapabilities")["networks"]) == ["net1"]
        # and the next change is served by the new incarnation
        assert d.call("Host.setupNetworks", networks={"net1": {**NET1, "mtu": 1300}}) is True
        assert b.host.link("net1")["mtu"] == 1300  # type: ignore[index]
