"""A VM with a NIC on a Linux bridge, through vdsmd's API.

The bridge has no uplink and no address, and the guest loads no network driver: no packet
leaves this machine (nor even the bridge)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import guest as g
from tests.harness import Vdsmd, wait_for
from tests.vm import agent as a

pytestmark = [pytest.mark.libvirt, pytest.mark.root, pytest.mark.timeout(180)]


@pytest.fixture
def bridge() -> Iterator[str]:
    name = f"vmtbr{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True,
                   timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, timeout=30)


def ports(bridge: str) -> list[str]:
    return sorted(p.name for p in Path(f"/sys/class/net/{bridge}/brif").iterdir())


def test_nic_joins_the_bridge_and_shows_in_stats(
    agent: Vdsmd, guest_image: g.GuestImage, bridge: str
) -> None:
    vm_id = a.new_id()
    mac = "52:54:00:ab:cd:ef"
    params = a.guest_params(guest_image, nics=[{"bridge": bridge, "macAddr": mac}])
    agent.call("VM.create", vmID=vm_id, vmParams=params)
    taps = wait_for(lambda: ports(bridge), 60, what="a tap device on the bridge")
    assert len(taps) == 1
    tap = taps[0]
    assert Path(f"/sys/class/net/{tap}/address").read_text().strip() == "fe:54:00:ab:cd:ef"
    stats = wait_for(lambda: a.status(agent, vm_id).get("network"), 60, what="nic stats")
    assert tap in stats
    assert agent.call("VM.destroy", vmID=vm_id) is True
    wait_for(lambda: not ports(bridge), 30, what="the tap device gone")


def test_nic_on_a_missing_bridge_fails_cleanly(agent: Vdsmd, guest_image: g.GuestImage) -> None:
    vm_id = a.new_id()
    params = a.guest_params(guest_image, nics=[{"bridge": "nosuchbr0"}])
    error = a.error(lambda: agent.call("VM.create", vmID=vm_id, vmParams=params))
    assert error.code == 5
    assert "nosuchbr0" in error.message
    assert a.vm_actors(agent) == []
