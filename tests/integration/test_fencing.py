"""Host.fenceNode end to end: a libvirt domain plays the node, VirtualBMC gives it IPMI on
127.0.0.1, and vdsmd runs Debian's fence_ipmilan against it.

Also every way a request can go wrong, each a clear error that runs nothing it should not:
a wrong password, an unreachable BMC (the agent killed at the deadline, nothing left
behind), unknown agents, names with paths or shell characters, forbidden options, values
that would add lines to the agent's input, agent programs another user could change. The
password is looked for in every process's command line while fences run, and in vdsmd's
log (at DEBUG): it is never there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from messaging.client import ClientError
from tests.faultfs.rules import descends_from
from tests.harness import Vdsmd, running_vdsmd, wait_for
from tests.storage.spm.cluster import Cluster
from tests.vbmc import PASSWORD, USER, Bmc, processes_with, wait_gone

pytestmark = [pytest.mark.timeout(240), pytest.mark.libvirt, pytest.mark.root,
              pytest.mark.slow, pytest.mark.xdist_group("fencing")]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bmc]:
    made = Bmc(tmp_path_factory.mktemp("bmc"))
    try:
        yield made.open()
    finally:
        made.close()


@pytest.fixture
def bmc(node: Bmc) -> Bmc:
    """The node, powered on (an earlier test may have left it off)."""
    node.power_on()
    return node


RIG = "/.venv-vbmc/bin/vbmc "  # tests.vbmc.VENV, in this or another checkout


class PasswordWatch:
    """Reads every process's command line in a loop while it runs (bounded: 120 s)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.seen: list[tuple[int, str]] = []
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            # the rig's own vbmc commands pass the BMC's password on their command line (its
            # CLI has no other way); another run of these tests may be setting up its node
            self.seen.extend(p for p in processes_with(self.secret) if RIG not in p[1])
            self.scans += 1

    def __enter__(self) -> PasswordWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def fence(d: Vdsmd, bmc: Bmc, action: str, **extra: Any) -> Any:
    params = {"addr": "127.0.0.1", "port": str(bmc.port), "agent": "ipmilan",
              "username": USER, "password": PASSWORD, "options": "lanplus=1", **extra}
    return d.call("Host.fenceNode", action=action, **params)


def error(d: Vdsmd, bmc: Bmc, action: str = "status", **extra: Any) -> ClientError:
    try:
        fence(d, bmc, action, **extra)
    except ClientError as e:
        return e
    raise AssertionError(f"fence {action} {extra} succeeded")


def test_status_off_and_on_through_ipmi(tmp_path: Path, bmc: Bmc) -> None:
    with running_vdsmd(tmp_path / "vdsmd") as d, PasswordWatch(PASSWORD) as watch:
        assert fence(d, bmc, "status") == {"power": "on", "operationStatus": "done",
                                           "message": "Status: ON"}
        off = fence(d, bmc, "off")
        assert (off["power"], off["operationStatus"]) == ("off", "initiated")
        assert bmc.power() == "off"  # libvirt agrees
        assert fence(d, bmc, "status")["power"] == "off"
        on = fence(d, bmc, "on")
        assert (on["power"], on["operationStatus"]) == ("on", "initiated")
        assert bmc.power() == "on"
        assert fence(d, bmc, "status")["power"] == "on"
        # reboot: off, then on again; libvirt runs the node in a new QEMU (a new domain id;
        # a fresh lookup: a virDomain object keeps the id it was made with)
        before = bmc.conn.lookupByName(bmc.name).ID()
        rebooted = fence(d, bmc, "reboot")
        assert (rebooted["power"], rebooted["operationStatus"]) == ("on", "initiated"), rebooted
        assert bmc.power() == "on" and bmc.conn.lookupByName(bmc.name).ID() != before
        log = d.log()
    assert watch.scans > 10 and watch.seen == []
    assert PASSWORD not in log
    assert "fence on of 127.0.0.1" in log  # the outcome is logged, the password is not


def test_every_bad_request_is_a_clear_error(tmp_path: Path, bmc: Bmc) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    marker = tmp_path / "ran"
    (agents / "fence_ipmilan").symlink_to("/usr/sbin/fence_ipmilan")
    for name in ("evil", "wti"):  # unknown / known, but writable by another user
        script = agents / f"fence_{name}"
        script.write_text(f"#!/bin/sh\ntouch {marker}\n")
        script.chmod(0o777 if name == "wti" else 0o755)
    config = (f'[fencing]\nagent_dir = "{agents}"\ntimeout = 3\n'
              f'agents = ["ipmilan", "wti", "ilo"]\n')
    with running_vdsmd(tmp_path / "vdsmd", config=config) as d, PasswordWatch(PASSWORD) as w:
        wrong = error(d, bmc, password="not-the-password")
        assert wrong.code == 501
        assert "Unable to establish IPMI v2 / RMCP+ session" in wrong.message
        assert wrong.data == {"power": "unknown", "operationStatus": "failed",
                              "message": wrong.data["message"]}
        for agent, says in (("evil", "unknown fence agent 'evil'"),
                            ("../../tmp/evil", "no path, no shell characters"),
                            ("ipmilan;touch /tmp/x", "no path, no shell characters"),
                            ("$(touch x)", "no path, no shell characters"),
                            ("/usr/sbin/fence_ipmilan", "no path, no shell characters")):
            refused = error(d, bmc, agent=agent)
            assert (refused.code, refused.data) == (-32602, {"param": "agent"}), agent
            assert says in refused.message
        unusable = error(d, bmc, agent="wti")
        assert unusable.code == 503 and "another user than root" in unusable.message
        missing = error(d, bmc, agent="ilo")
        assert missing.code == 503 and "not installed" in missing.message
        for options, param in (("ipmitool_path=/tmp/evil", "options.ipmitool_path"),
                               ("password_script=touch /tmp/x", "options.password_script"),
                               ("debug_file=/etc/passwd", "options.debug_file"),
                               ("ip=10.0.0.1", "options.ip"),
                               ("power_timeout=1; touch x", "options.power_timeout")):
            refused = error(d, bmc, options=options)
            assert (refused.code, refused.data) == (-32602, {"param": param}), options
        injected = error(d, bmc, username="admin\nipmitool_path=/tmp/evil")
        assert (injected.code, injected.data) == (-32602, {"param": "username"})
        assert error(d, bmc, port="623; id").code == -32602
        assert not marker.exists()  # nothing ran that should not have
        # an unreachable BMC: killed at the deadline ([fencing] timeout), nothing left behind
        dead_port = str(bmc.port + 1 if bmc.port < 65535 else bmc.port - 1)
        started = time.monotonic()
        late = error(d, bmc, port=dead_port)
        assert late.code == 502 and "killed" in late.message
        assert time.monotonic() - started < 30
        wait_gone(f"-p {dead_port} ", 10)
        assert processes_with(f"-p {dead_port} ") == []
        # the BMC is still fine, and the node untouched
        assert fence(d, bmc, "status")["power"] == "on"
        log = d.log()
    assert w.seen == [] and PASSWORD not in log and "not-the-password" not in log


def test_one_fence_per_device_at_a_time(tmp_path: Path, bmc: Bmc) -> None:
    with running_vdsmd(tmp_path / "vdsmd") as d:
        outcome: dict[str, Any] = {}

        def first() -> None:
            outcome["off"] = fence(d, bmc, "off")

        runner = threading.Thread(target=first)
        runner.start()
        try:
            # fence_ipmilan waits for the power to change: the first fence runs for seconds.
            # Only this vdsmd's agent counts (other tests may run fence agents meanwhile).
            assert d.proc is not None
            vdsmd_pid = d.proc.pid
            wait_for(lambda: [pid for pid, _ in processes_with("fence_ipmilan")
                              if descends_from(pid, vdsmd_pid)], 10, 0.01, "the first fence")
            busy = error(d, bmc, "status")
            assert busy.code == 504 and "being fenced already (off" in busy.message
        finally:
            runner.join(60)
        assert outcome["off"]["power"] == "off"
        assert fence(d, bmc, "status")["power"] == "off"


def test_the_policy_skips_a_host_that_still_renews_its_host_id(tmp_path: Path,
                                                               bmc: Bmc) -> None:
    """Two hosts share a pool; host 1 is asked to fence host 2 (whose BMC is the node's)
    with vdsm's policy: skipped while host 2's keeper renews its host id, done once host 2
    is dead (killed: its record stops changing)."""
    cluster = Cluster(tmp_path / "cluster", hosts=2)
    try:
        cluster.start()
        _sp, sd = cluster.pool()
        policy = {"storageDomainHostIdMap": {sd: 2}}
        h1 = cluster.host(1)

        def skipped(action: str) -> dict[str, Any] | None:
            answer: dict[str, Any] = fence(h1, bmc, action, policy=policy)
            return answer if answer["operationStatus"] == "skipped" else None

        # "on" while it is on changes nothing, whatever the policy says meanwhile (host 1
        # needs lease + io_timeout of watching before it calls a host alive)
        wait_for(lambda: skipped("on"), 60, 0.2, "the policy to see host 2 alive")
        answer = skipped("off")
        assert answer is not None and bmc.power() == "on"
        assert f"host id 2 still renews its lease on storage domain {sd}" in answer["message"]
        assert answer["policy"][0]["state"] == "alive"
        cluster.kill(2)
        done = wait_for(lambda: (a := fence(h1, bmc, "off", policy=policy))[
            "operationStatus"] == "initiated" and a, 60, 0.2, "the fence to go through")
        assert done["power"] == "off" and bmc.power() == "off"
        assert "fence of 127.0.0.1" in h1.log() and "goes on: host id 2" in h1.log()
    finally:
        cluster.cleanup()
