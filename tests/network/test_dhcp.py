"""DHCP networks: the agent's DHCP client (busybox udhcpc) against a real DHCP server, Debian's
dnsmasq, run by the test inside the peer namespace on the far end of the host's NIC."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.harness import next_event, wait_for
from tests.network.bed import Bed, bed, error_of

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

SERVER = "10.201.0.2"  # p1's address (bed): the router dnsmasq offers
TOPIC = "|net|host_conn|no_id"
POOL = (ipaddress.IPv4Address("10.201.0.50"), ipaddress.IPv4Address("10.201.0.60"))


@contextmanager
def dnsmasq(b: Bed, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "dnsmasq.log").open("ab")
    proc = subprocess.Popen(
        b.peer.exec_argv([
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
            "--interface=p1", "--bind-interfaces", "--no-ping", "--log-dhcp",
            f"--dhcp-range={POOL[0]},{POOL[1]},255.255.255.0,2m",
            f"--dhcp-leasefile={workdir / 'leases'}", f"--pid-file={workdir / 'pid'}",
        ]),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def _leased(addrs: list[str]) -> str | None:
    for cidr in addrs:
        address, _, prefix = cidr.partition("/")
        if POOL[0] <= ipaddress.IPv4Address(address) <= POOL[1] and prefix == "24":
            return address
    return None


def test_a_dhcp_network_gets_its_address_from_the_peer(tmp_path: Path) -> None:
    with bed(tmp_path) as b, dnsmasq(b, tmp_path / "dnsmasq"):
        d = b.vdsmd().start()
        assert d.call("Host.setupNetworks", networks={"lan": {
            "nic": "veth_h1", "bootproto": "dhcp", "blockingdhcp": True,
            "defaultRoute": True}}) is True
        address = _leased(b.host.addrs("lan"))
        assert address is not None, b.host.addrs("lan")
        defaults = [r for r in b.host.routes() if r["dst"] == "default"]
        assert [(r["gateway"], r["dev"]) for r in defaults] == [(SERVER, "lan")]
        net = d.call("Host.getNetworkCapabilities")["networks"]["lan"]
        assert (net["bootproto"], net["dhcpv4"], net["addr"], net["gateway"]) == \
            ("dhcp", True, address, SERVER)
        wait_for(lambda: b.peer.ping(address), 20, interval=0.2, what="ping the lease")

        # removed: the client stops, the lease's address and route go
        assert d.call("Host.setupNetworks", networks={"lan": {"remove": True}}) is True
        assert b.host.link("lan") is None
        assert [r for r in b.host.routes() if r["dst"] == "default"] == []
        assert b.host.pids() == [d.pid]  # no DHCP client left behind

        # without blockingdhcp the verb answers at once and the address comes later: the
        # change and then the lease are each announced on |net|host_conn|no_id
        with d.subscriber(TOPIC) as sub:
            assert d.call("Host.setupNetworks", networks={"lan": {
                "nic": "veth_h1", "bootproto": "dhcp"}}) is True
            next_event(sub, lambda t, p: t == TOPIC, 10)  # the change
            next_event(sub, lambda t, p: t == TOPIC, 30)  # the lease
            assert _leased(b.host.addrs("lan")), b.host.addrs("lan")
        wait_for(lambda: d.call("Host.getNetworkCapabilities")["networks"]["lan"]["addr"],
                 10, what="the lease in the capabilities")
        assert [r for r in b.host.routes() if r["dst"] == "default"] == []  # no defaultRoute


def test_no_lease_rolls_the_change_back(tmp_path: Path) -> None:
    with bed(tmp_path) as b:  # no DHCP server on the far side
        d = b.vdsmd(dhcp_timeout=3.0).start()
        before = b.host.state()
        error = error_of(lambda: d.call("Host.setupNetworks", networks={"lan": {
            "nic": "veth_h0", "bootproto": "dhcp", "blockingdhcp": True}}))
        assert error.code == 313, error
        assert "no DHCP lease on lan within 3.0 s" in error.message
        assert b.host.state() == before
        assert b.host.pids() == [d.pid]


def test_a_safe_dhcp_network_leases_again_after_a_restart_and_a_reboot(tmp_path: Path) -> None:
    lan = {"nic": "veth_h1", "bootproto": "dhcp", "blockingdhcp": True, "defaultRoute": True}
    with bed(tmp_path) as b, dnsmasq(b, tmp_path / "dnsmasq"):
        d = b.vdsmd().start()
        assert d.call("Host.setupNetworks", networks={"lan": lan}) is True
        assert d.call("Host.setSafeNetworkConfig") is True
        address = _leased(b.host.addrs("lan"))
        assert address is not None
        [client] = [p for p in b.host.pids() if p != d.pid]
        # vdsmd SIGKILLed: its DHCP client (own session) lives on; the next agent replaces
        # it with its own, and keeps the address
        d.kill()
        assert [p for p in b.host.pids() if p != d.pid] == [client]
        d.start()

        def replaced() -> bool:
            others = [p for p in b.host.pids() if p != d.pid]
            return len(others) == 1 and others[0] != client

        wait_for(replaced, 30, interval=0.1, what="one new DHCP client, the old one gone")
        assert _leased(b.host.addrs("lan")) == address
        assert d.stop() == 0
        assert b.host.pids() == []  # a stopped agent stops its DHCP client

    with bed(tmp_path) as b, dnsmasq(b, tmp_path / "dnsmasq-after"):  # the host "rebooted"
        d = b.vdsmd().start()
        leased = wait_for(lambda: _leased(b.host.addrs("lan")), 30, interval=0.1,
                          what="a lease for the restored DHCP network")
        defaults = [r for r in b.host.routes() if r["dst"] == "default"]
        assert [(r["gateway"], r["dev"]) for r in defaults] == [(SERVER, "lan")]
        net = d.call("Host.getNetworkCapabilities")["networks"]["lan"]
        assert (net["bootproto"], net["addr"]) == ("dhcp", leased)
        assert len([p for p in b.host.pids() if p != d.pid]) == 1
