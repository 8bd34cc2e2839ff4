"""The metrics endpoint scraped by a real Prometheus (Debian's ``prometheus``), started by the
test with a config that scrapes a real vdsmd every second; what Prometheus stored is read
back through its HTTP query API. The agent runs a VM (no OS: SeaBIOS idles) and monitors a
local storage domain, so that per-VM and per-domain series exist."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.harness import Vdsmd, wait_for
from tests.vm.agent import bare_params, started, wait_status

pytestmark = [
    pytest.mark.timeout(180), pytest.mark.libvirt,
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="Debian's prometheus is not installed (tools/setup-host does)"),
]

NULL_POOL = "00000000-0000-0000-0000-000000000000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - loopback http only
        return json.loads(reply.read())


class Prometheus:
    """A Prometheus server on loopback, scraping ``target`` every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.workdir = workdir
        workdir.mkdir()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: vdsm\n    static_configs:\n"
            f"      - targets: ['{target}']\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with (workdir / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self) -> bool:
        assert self.proc.poll() is None, (self.workdir / "prometheus.log").read_text()
        url = f"{self.url}/-/ready"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310
            return bool(reply.status == 200)
        return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` (PromQL), through the HTTP API."""
        answer = get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Vdsmd]:
    daemon = Vdsmd(tmp_path / "vdsmd", config=(
        '[metrics]\nlisten = "127.0.0.1:0"\n'
        "[storage]\nmonitor_interval = 1\n"
        f'[vm]\nserial_log_dir = "{tmp_path}/vm-logs"\nstats_interval = 1.0\n'))
    conn = libvirt.open("qemu:///system")
    try:
        with started(conn, daemon):
            yield daemon
    finally:
        conn.close()


def test_prometheus_scrapes_the_agent(agent: Vdsmd, tmp_path: Path) -> None:
    found = re.search(r"metrics served on http://127\.0\.0\.1:(\d+)/metrics", agent.log())
    assert found, agent.log()
    # a VM and a monitored storage domain
    vm_id, params = str(uuid.uuid4()), bare_params()
    agent.call("VM.create", vmID=vm_id, vmParams=params)
    data = tmp_path / "data"
    data.mkdir()
    agent.call("StoragePool.connectStorageServer", storagepoolID=NULL_POOL,
               domainType="localfs", connectionParams=[{"id": "1", "connection": str(data)}])
    sd, sp = str(uuid.uuid4()), str(uuid.uuid4())
    agent.call("StorageDomain.create", storagedomainID=sd, domainType="localfs",
               typeArgs=str(data), name="metrics", domainClass="data")
    agent.call("StoragePool.create", storagepoolID=sp, name="metrics", masterSdUUID=sd,
               masterVersion=1, domainList=[sd])
    agent.call("StoragePool.connect", storagepoolID=sp, hostID=1, masterSdUUID=sd,
               masterVersion=1)
    wait_status(agent, vm_id, "Up")

    prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{found.group(1)}")
    try:
        wait_for(prometheus.ready, 60, 0.2, "prometheus to be ready")
        vm = f'vm_id="{vm_id}",vm_name="{params["vmName"]}"'
        expected = {
            'up{job="vdsm"}': 1.0,
            f'vdsm_vm_status{{{vm},status="Up"}}': 1.0,
            f"vdsm_vm_memory_size_bytes{{{vm}}}": 96.0 * (1 << 20),
            f'vdsm_storage_domain_valid{{sd_uuid="{sd}"}}': 1.0,
            'vdsm_actor_running{path="/host/stats",class="HostStatsActor"}': 1.0,
            'vdsm_api_requests_total{verb="StorageDomain.create",code="0"}': 1.0,
        }

        def stored() -> bool:
            for expr, value in expected.items():
                result = prometheus.query(expr)
                if len(result) != 1 or float(result[0]["value"][1]) != value:
                    return False
            return True

        wait_for(stored, 60, 0.5, "Prometheus to store the agent's metrics")
        # series that move: CPU time of the VM, requests and their latency by verb
        assert prometheus.query(f"vdsm_vm_cpu_seconds_total{{{vm}}} > 0")
        assert prometheus.query('vdsm_api_request_duration_seconds_count{verb="VM.create"}')
        assert prometheus.query('vdsm_host_cpu_percent{mode="idle"}')
        assert prometheus.query('vdsm_actor_mailbox_depth{path="/vms/sampler"}')
    finally:
        prometheus.close()
    agent.call("VM.destroy", vmID=vm_id)
    agent.call("StoragePool.disconnect", storagepoolID=sp, hostID=1)
