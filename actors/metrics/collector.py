"""The metrics read from the agent's boards at each scrape.

Every source is something the agent already keeps for its inline verbs, readable from any
thread without asking an actor: the host stats' last sample, the VM board (last status and
stats of each VM), the storage monitors' board and the actor directory. A source that fails
is left out of that scrape (and logged, rate-limited); the others are still served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.directory import RUNNING, ActorDirectory
from messaging.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

MIB = 1 << 20
VM = ["vm_id", "vm_name"]


@dataclass(frozen=True)
class Sources:
    host_stats: Callable[[], dict[str, Any]]  # Host.getStats' last sample
    vm_stats: Callable[[], list[dict[str, Any]]]  # VM.getStats maps of every VM
    storage: Callable[[], dict[str, Any]]  # Host.getStorageRepoStats
    directory: ActorDirectory
    in_flight: Callable[[], int]  # API requests being served


class BoardCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self._failures = RateLimitedLog(log, "metrics source failures", burst=5, window=60.0)

    def collect(self) -> Iterator[Metric]:
        for name, part in (("host", self._host), ("vms", self._vms),
                           ("storage", self._storage), ("actors", self._actors),
                           ("api", self._api)):
            try:
                metrics = list(part())
            except Exception as e:  # noqa: BLE001 - one broken source must not end the scrape
                self._failures("metrics: reading %s failed: %r", name, e)
                continue
            yield from metrics

    # --- host ------------------------------------------------------------------------------

    def _host(self) -> Iterable[Metric]:
        stats = self.sources.host_stats()
        if not stats:
            return []
        cpu = GaugeMetricFamily("vdsm_host_cpu_percent", "Host CPU use over the last "
                                "sample interval, by mode", labels=["mode"])
        for mode, key in (("user", "cpuUser"), ("sys", "cpuSys"), ("idle", "cpuIdle")):
            cpu.add_metric([mode], float(stats.get(key, 0)))
        memory = GaugeMetricFamily("vdsm_host_memory_bytes", "Host memory", labels=["kind"])
        for kind, key in (("total", "memTotal"), ("free", "memFree"), ("used", "memUsed")):
            memory.add_metric([kind], float(stats.get(key, 0)) * MIB)
        load = GaugeMetricFamily("vdsm_host_load1", "1-minute load average",
                                 value=float(stats.get("cpuLoad", 0)))
        rx = CounterMetricFamily("vdsm_host_nic_received_bytes", "Bytes received by a NIC",
                                 labels=["nic"])
        tx = CounterMetricFamily("vdsm_host_nic_transmitted_bytes", "Bytes sent by a NIC",
                                 labels=["nic"])
        up = GaugeMetricFamily("vdsm_host_nic_up", "1 when the NIC's state is up",
                               labels=["nic"])
        for nic, counters in sorted(stats.get("network", {}).items()):
            rx.add_metric([nic], float(counters.get("rxBytes", 0)))
            tx.add_metric([nic], float(counters.get("txBytes", 0)))
            up.add_metric([nic], 1.0 if counters.get("state") == "up" else 0.0)
        return [cpu, memory, load, rx, tx, up]

    # --- VMs -------------------------------------------------------------------------------

    def _vms(self) -> Iterable[Metric]:
        status = GaugeMetricFamily("vdsm_vm_status", "1 for the VM's current status",
                                   labels=[*VM, "status"])
        cpu = GaugeMetricFamily("vdsm_vm_cpu_percent", "VM CPU use over the last sample "
                                "interval (percent of its vCPUs), by mode",
                                labels=[*VM, "mode"])
        cpu_time = CounterMetricFamily("vdsm_vm_cpu_seconds", "CPU time the VM used",
                                       labels=VM)
        mem_use = GaugeMetricFamily("vdsm_vm_memory_usage_percent", "Guest memory in use (from "
                                    "the balloon driver; 0 without one)", labels=VM)
        mem_size = GaugeMetricFamily("vdsm_vm_memory_size_bytes", "Memory the VM was given",
                                     labels=VM)
        mem_rss = GaugeMetricFamily("vdsm_vm_memory_rss_bytes", "Resident size of the VM's "
                                    "qemu on the host", labels=VM)
        responding = GaugeMetricFamily("vdsm_vm_monitor_responding", "0 when qemu's monitor "
                                       "did not answer the last sample", labels=VM)
        uptime = GaugeMetricFamily("vdsm_vm_uptime_seconds", "Seconds since the VM's qemu "
                                   "started", labels=VM)
        disk = {key: CounterMetricFamily(f"vdsm_vm_disk_{name}", doc, labels=[*VM, "disk"])
                for key, name, doc in (
                    ("readBytes", "read_bytes", "Bytes the VM read from a disk"),
                    ("writeBytes", "written_bytes", "Bytes the VM wrote to a disk"),
                    ("readOps", "read_ops", "Read requests of the VM to a disk"),
                    ("writeOps", "write_ops", "Write requests of the VM to a disk"))}
        nic = {key: CounterMetricFamily(f"vdsm_vm_nic_{name}", doc, labels=[*VM, "nic"])
               for key, name, doc in (
                   ("rx", "received_bytes", "Bytes a VM's NIC received"),
                   ("tx", "transmitted_bytes", "Bytes a VM's NIC sent"),
                   ("rxPackets", "received_packets", "Packets a VM's NIC received"),
                   ("txPackets", "transmitted_packets", "Packets a VM's NIC sent"))}
        for stats in self.sources.vm_stats():
            ids = [str(stats.get("vmID", "")), str(stats.get("vmName", ""))]
            status.add_metric([*ids, str(stats.get("status", ""))], 1.0)
            if "memSize" in stats:
                mem_size.add_metric(ids, float(stats["memSize"]) * MIB)
            if stats.get("status") == "Down":
                continue
            cpu.add_metric([*ids, "user"], float(stats.get("cpuUser", 0)))
            cpu.add_metric([*ids, "sys"], float(stats.get("cpuSys", 0)))
            cpu_time.add_metric(ids, float(stats.get("cpuUsage", 0)) / 1e9)
            mem_use.add_metric(ids, float(stats.get("memUsage", 0)))
            if "memRss" in stats:
                mem_rss.add_metric(ids, float(stats["memRss"]) * 1024)
            responding.add_metric(ids, 1.0 if stats.get("monitorResponse", 0) == 0 else 0.0)
            if "elapsedTime" in stats:
                uptime.add_metric(ids, float(stats["elapsedTime"]))
            for name, counters in sorted(stats.get("disks", {}).items()):
                for key, family in disk.items():
                    family.add_metric([*ids, name], float(counters.get(key, 0)))
            for name, counters in sorted(stats.get("network", {}).items()):
                for key, family in nic.items():
                    family.add_metric([*ids, name], float(counters.get(key, 0)))
        return [status, cpu, cpu_time, mem_use, mem_size, mem_rss, responding, uptime,
                *disk.values(), *nic.values()]

    # --- storage ---------------------------------------------------------------------------

    def _storage(self) -> Iterable[Metric]:
        valid = GaugeMetricFamily("vdsm_storage_domain_valid", "1 when the domain's last check "
                                  "passed", labels=["sd_uuid"])
        delay = GaugeMetricFamily("vdsm_storage_domain_check_delay_seconds", "How long the "
                                  "domain's last check took (a stuck one: so far)",
                                  labels=["sd_uuid"])
        age = GaugeMetricFamily("vdsm_storage_domain_last_check_seconds", "Seconds since the "
                                "domain's last check ended", labels=["sd_uuid"])
        code = GaugeMetricFamily("vdsm_storage_domain_error_code", "0, or the storage error "
                                 "code of the domain's last check", labels=["sd_uuid"])
        for sd_uuid, entry in sorted(self.sources.storage().items()):
            valid.add_metric([sd_uuid], 1.0 if entry.get("valid") else 0.0)
            delay.add_metric([sd_uuid], float(entry.get("delay", 0)))
            age.add_metric([sd_uuid], float(entry.get("lastCheck", 0)))
            code.add_metric([sd_uuid], float(entry.get("code", 0)))
        return [valid, delay, age, code]

    # --- actors and the API ----------------------------------------------------------------

    def _actors(self) -> Iterable[Metric]:
        labels = ["path", "class"]
        restarts = CounterMetricFamily("vdsm_actor_restarts", "Times the supervisor restarted "
                                       "the actor", labels=labels)
        mailbox = GaugeMetricFamily("vdsm_actor_mailbox_depth", "Messages waiting in the "
                                    "actor's mailbox", labels=labels)
        handled = CounterMetricFamily("vdsm_actor_messages", "Messages the actor handled",
                                      labels=labels)
        running = GaugeMetricFamily("vdsm_actor_running", "1 while the actor runs (0: "
                                    "starting, restarting, given up, stopping)", labels=labels)
        for info in self.sources.directory:
            key = [info.path, info.cls]
            restarts.add_metric(key, float(info.restarts))
            mailbox.add_metric(key, float(info.mailbox()))
            handled.add_metric(key, float(info.counter.value if info.counter else 0))
            running.add_metric(key, 1.0 if info.state == RUNNING else 0.0)
        return [restarts, mailbox, handled, running]

    def _api(self) -> Iterable[Metric]:
        return [GaugeMetricFamily("vdsm_api_requests_in_flight", "Requests being served",
                                  value=float(self.sources.in_flight()))]
