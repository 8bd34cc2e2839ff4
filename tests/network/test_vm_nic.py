"""A VM's NIC joins a network's bridge, and stays on it while the network is edited.

libvirt creates a VM's tap device in its own network namespace, so the test runs a private
libvirtd (with its virtlogd) inside the host namespace, next to vdsmd. The VM is a bare one
(SeaBIOS, no OS): its NIC is what matters here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import wait_for
from tests.network.bed import bed
from tests.vm import agent

pytestmark = [pytest.mark.root, pytest.mark.libvirt, pytest.mark.timeout(240)]


def _taps(ports: list[str]) -> list[str]:
    return [p for p in ports if p != "veth_h0"]


def test_a_vm_nic_joins_the_bridge_and_stays_through_an_edit(tmp_path: Path) -> None:
    with bed(tmp_path, nics=1) as b:
        libvirtd = agent.GuestLibvirtd(tmp_path / "libvirtd",
                                       wrapper=tuple(b.host.exec_argv([])))
        try:
            libvirtd.start()
            hooks = tmp_path / "hooks"
            hooks.mkdir()
            d = b.vdsmd(agent.config(hooks), libvirt_uri=libvirtd.uri).start()
            agent.wait_ready(d)
            net = {"nic": "veth_h0", "ipaddr": "10.200.0.1", "prefix": 24}
            assert d.call("Host.setupNetworks", networks={"net1": net}) is True
            vm_id = agent.new_id()
            params = agent.bare_params(nics=[{"bridge": "net1", "nicModel": "virtio"}])
            d.call("VM.create", vmID=vm_id, vmParams=params)
            agent.wait_status(d, vm_id, "Up")
            taps = wait_for(lambda: _taps(b.host.ports("net1")), 30, what="the VM's tap")
            assert len(taps) == 1
            caps = d.call("Host.getNetworkCapabilities")
            assert sorted(caps["networks"]["net1"]["ports"]) == sorted(["veth_h0", *taps])

            assert d.call("Host.setupNetworks", networks={
                "net1": {**net, "ipaddr": "10.200.0.7", "mtu": 1400}}) is True
            assert _taps(b.host.ports("net1")) == taps  # the bridge was not re-made
            assert b.host.addrs("net1") == ["10.200.0.7/24"]
            wait_for(lambda: b.peer.ping("10.200.0.7"), 20, interval=0.2, what="ping")
            assert d.call("VM.destroy", vmID=vm_id) is True
            wait_for(lambda: not _taps(b.host.ports("net1")), 30, what="the tap to go")
        finally:
            libvirtd.close()
