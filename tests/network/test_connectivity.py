"""The connectivity check, with the client on the far side of the link the change moves.

vdsmd runs in the host namespace with its API on tcp (CURVE); every call comes from a
helper process in the peer namespace (``tests/network/peer.py``), through the veth pair the
changes reconfigure. Events are read from the root namespace over ipc.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from messaging.client import Subscriber
from messaging.curve import ClientCurve, generate_keys
from tests.harness import TOP, next_event, wait_for
from tests.network.bed import bed
from tests.network.peer import Peer

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

TOPIC = "|net|host_conn|no_id"
PORT = 54321  # inside the test's own namespace: no other test can hold it


def test_a_change_is_kept_when_confirmed_and_rolled_back_when_not(tmp_path: Path) -> None:
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    server_public, server_secret = generate_keys(tmp_path / "keys", "server")
    secret = {}
    for name in ("alice", "bob"):
        public, secret[name] = generate_keys(tmp_path / name, name)
        (authorized / f"{name}.key").write_bytes(public.read_bytes())
    config = (f'[curve]\nserver_secret = "{server_secret}"\n'
              f'authorized_keys = "{authorized}"\n')
    with bed(tmp_path, nics=1) as b:
        b.host.ip("addr", "add", "10.200.0.1/24", "dev", "veth_h0")  # the host's own address
        d = b.vdsmd(config)
        d.api = f"tcp://0.0.0.0:{PORT}"
        d.start_process()
        peer = Peer(b.peer.exec_argv([]), f"tcp://10.200.0.1:{PORT}", server_public, TOP)
        try:
            alice, bob = secret["alice"], secret["bob"]
            wait_for(lambda: peer.wait(peer.send(bob, "Host.ping", timeout=2)).get("result"),
                     60, interval=0.2, what="vdsmd answering over tcp from the peer")
            def armed() -> bool:  # the change applied and waiting (asked by bob: not alice)
                found = peer.call(bob, "Actors.inspect", path="/host/network")
                return bool(found["detail"]["waitingForConnectivity"])

            with Subscriber(d.events, [TOPIC], curve=ClientCurve(bob, server_public)) as sub:
                # 1. The management address moves from the NIC to a new bridge. Another
                # client's requests confirm nothing; the same client's next request does.
                change = peer.send(alice, "Host.setupNetworks", timeout=60, networks={
                    "mgmt": {"nic": "veth_h0", "ipaddr": "10.200.0.1", "prefix": 24}},
                    options={"connectivityCheck": True, "connectivityTimeout": 30})
                wait_for(armed, 30, interval=0.1, what="the change waiting for confirmation")
                assert b.host.addrs("mgmt") == ["10.200.0.1/24"]
                assert peer.call(bob, "Host.ping") is True
                assert peer.wait(change, timeout=1.0) == {"pending": True}
                assert peer.call(alice, "Host.getVMList") == []
                assert peer.wait(change) == {"result": True}
                next_event(sub, lambda t, p: t == TOPIC, 10)
                assert b.host.ports("mgmt") == ["veth_h0"] and b.host.addrs("veth_h0") == []

                # 2. Host.confirmConnectivity from anyone confirms (Host.ping2 likewise)
                for verb, mtu in (("Host.confirmConnectivity", 1400), ("Host.ping2", 1300)):
                    change = peer.send(alice, "Host.setupNetworks", timeout=60, networks={
                        "mgmt": {"nic": "veth_h0", "ipaddr": "10.200.0.1", "prefix": 24,
                                 "mtu": mtu}},
                        options={"connectivityCheck": True, "connectivityTimeout": 30})
                    wait_for(armed, 30, interval=0.1, what="the change waiting")
                    assert b.host.link("mgmt")["mtu"] == mtu  # type: ignore[index]
                    assert peer.call(bob, verb) is True
                    assert peer.wait(change) == {"result": True}
                    next_event(sub, lambda t, p: t == TOPIC, 10)
                confirmed = b.host.state()

                # 3. A change that cuts the client off: nobody confirms, it is rolled back
                change = peer.send(alice, "Host.setupNetworks", timeout=30, networks={
                    "mgmt": {"nic": "veth_h0", "ipaddr": "10.210.0.1", "prefix": 24}},
                    options={"connectivityCheck": True, "connectivityTimeout": 3})
                wait_for(lambda: b.host.addrs("mgmt") == ["10.210.0.1/24"], 30,
                         interval=0.05, what="the change applied")
                wait_for(lambda: b.host.state() == confirmed, 30, interval=0.1,
                         what="the rollback")
                next_event(sub, lambda t, p: t == TOPIC, 10)
            caps = peer.call(bob, "Host.getNetworkCapabilities")
            assert caps["networks"]["mgmt"]["addr"] == "10.200.0.1"
            assert caps["networks"]["mgmt"]["mtu"] == 1300
            # The reply may reach alice once the address is back (TCP retransmits), or not.
            outcome = peer.wait(change, timeout=40)
            if "error" in outcome:
                assert outcome["error"]["code"] == 311, outcome
                assert "rolled back" in outcome["error"]["message"]
            else:
                assert outcome == {"timeout": True}, outcome
        finally:
            peer.close()
