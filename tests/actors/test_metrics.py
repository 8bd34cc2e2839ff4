"""The metrics collector in-process: real boards and a real actor directory, scraped as
Prometheus would (``generate_latest``), including while an actor is stuck."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actors.base import ActorContext, Runtime, SupervisedActor
from actors.clock import Clock
from actors.directory import RUNNING, ActorDirectory, ActorInfo
from actors.host.stats import LastSample
from actors.metrics.collector import BoardCollector, Sources
from actors.metrics.requests import RequestMetrics
from actors.storage.board import DomainHealth, MonitorBoard
from actors.vm.board import VmBoard, VmView
from actors.vm.status import VmStatus

pytestmark = pytest.mark.timeout(60)

VM_ID = "6f1b9e4a-4a4e-4c53-9c0c-2f5c1e0e7b11"
SD = "0a1b9e4a-4a4e-4c53-9c0c-2f5c1e0e7b22"


class Sink:
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        pass


class Stuck(SupervisedActor):
    """Blocks on its first message until released (a stuck actor)."""

    def __init__(self, ctx: ActorContext, release: threading.Event) -> None:
        super().__init__(ctx)
        self.release = release

    def on_receive(self, message: Any) -> Any:
        if message == "block":
            self.release.wait(30)
            return None
        return super().on_receive(message)


@pytest.fixture
def runtime(stop_all_actors: None) -> Iterator[Runtime]:
    clock = Clock()
    clock.start()
    try:
        yield Runtime(events=Sink(), clock=clock, directory=ActorDirectory())
    finally:
        clock.stop()


def scrape(registry: CollectorRegistry) -> dict[str, list[Any]]:
    """Every sample of a scrape, by sample name, parsed as Prometheus parses the text."""
    samples: dict[str, list[Any]] = {}
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    found = [s.value for s in samples.get(name, [])
             if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return float(found[0])


def test_a_scrape_reads_the_boards_and_asks_no_actor(runtime: Runtime) -> None:
    host = LastSample()
    host.set({"_at": time.monotonic(), "cpuUser": 12.5, "cpuSys": 2.5, "cpuIdle": 85.0,
              "cpuLoad": 0.5, "memTotal": 1024, "memFree": 256, "memUsed": 768,
              "network": {"eth0": {"rxBytes": 10, "txBytes": 20, "state": "up"}}})
    vms = VmBoard()
    vms.put(VmView(VM_ID, "web1", VmStatus.UP, started=time.time() - 5, mem_mib=128))
    vms.set_stats({VM_ID: {"cpuUser": 3.0, "cpuSys": 1.0, "cpuUsage": 2_000_000_000,
                           "memUsage": 40, "memRss": 1024, "monitorResponse": 0,
                           "elapsedTime": 5.0,
                           "disks": {"vda": {"readBytes": 7, "writeBytes": 8, "readOps": 1,
                                             "writeOps": 2}},
                           "network": {"vnet0": {"rx": 3, "tx": 4, "rxPackets": 1,
                                                 "txPackets": 1}}}}, time.monotonic())
    storage = MonitorBoard()
    now = time.monotonic()
    storage.watch(DomainHealth(SD, valid=True, code=0, delay=0.004, checked_at=now,
                               since=now))
    release = threading.Event()
    directory = runtime.directory
    ctx = ActorContext(path="/stuck", runtime=runtime)
    ref = Stuck.start(ctx, release)
    directory.put(ActorInfo(path="/stuck", cls="Stuck", state=RUNNING, ref=ref,
                            supervisor=None, restarts=2))
    registry = CollectorRegistry()
    registry.register(BoardCollector(Sources(host_stats=host.get, vm_stats=vms.full_stats,
                                             storage=storage.snapshot, directory=directory,
                                             in_flight=lambda: 3)))
    requests = RequestMetrics(registry)
    requests.observe("Host.ping", 0, 0.0004)
    requests.observe("VM.create", 4, 1.5)
    try:
        ref.tell("block")
        for _ in range(3):
            ref.tell("queued")
        found: dict[str, list[Any]] = {}
        scraper = threading.Thread(target=lambda: found.update(scrape(registry)))
        scraper.start()
        scraper.join(10)  # the actor is stuck: a scrape that asked it would never end
        assert not scraper.is_alive()
    finally:
        release.set()
    assert value(found, "vdsm_host_cpu_percent", mode="user") == 12.5
    assert value(found, "vdsm_host_memory_bytes", kind="used") == 768 << 20
    assert value(found, "vdsm_host_nic_received_bytes_total", nic="eth0") == 10
    vm = {"vm_id": VM_ID, "vm_name": "web1"}
    assert value(found, "vdsm_vm_status", status="Up", **vm) == 1
    assert value(found, "vdsm_vm_cpu_percent", mode="user", **vm) == 3.0
    assert value(found, "vdsm_vm_cpu_seconds_total", **vm) == 2.0
    assert value(found, "vdsm_vm_memory_size_bytes", **vm) == 128 << 20
    assert value(found, "vdsm_vm_disk_written_bytes_total", disk="vda", **vm) == 8
    assert value(found, "vdsm_vm_nic_transmitted_bytes_total", nic="vnet0", **vm) == 4
    assert value(found, "vdsm_storage_domain_valid", sd_uuid=SD) == 1
    assert value(found, "vdsm_storage_domain_check_delay_seconds", sd_uuid=SD) == 0.004
    stuck = {"path": "/stuck", "class": "Stuck"}
    assert value(found, "vdsm_actor_mailbox_depth", **stuck) >= 3
    assert value(found, "vdsm_actor_restarts_total", **stuck) == 2
    assert value(found, "vdsm_actor_running", **stuck) == 1
    assert value(found, "vdsm_api_requests_in_flight") == 3
    assert value(found, "vdsm_api_requests_total", verb="VM.create", code="4") == 1
    assert value(found, "vdsm_api_request_duration_seconds_count", verb="Host.ping") == 1


def test_a_failing_source_leaves_the_others(runtime: Runtime) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("board gone")

    registry = CollectorRegistry()
    registry.register(BoardCollector(Sources(host_stats=broken, vm_stats=list,
                                             storage=broken, directory=runtime.directory,
                                             in_flight=lambda: 0)))
    found = scrape(registry)
    assert "vdsm_host_cpu_percent" not in found
    assert value(found, "vdsm_api_requests_in_flight") == 0
