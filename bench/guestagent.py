"""The guest agent's cost: the guest info refresh, agent call latency, stats size.

    .venv/bin/python bench/guestagent.py [--vms 4] [--interval 2] [--seconds 60]

Starts vdsmd with ``[guest_agent] info_interval = --interval`` (the package query on the
same interval: the worst case), starts N test guests running qemu-ga (TCG), waits until
every agent answered, then for ``--seconds`` reads the CPU time of vdsmd and libvirtd
(/proc/<pid>/stat) and, from ``Actors.inspect``, how long each VM's last refresh took.
Then it times: ``guest-ping`` through libvirt from this process (the agent round trip
libvirt adds a guest-sync to), ``VM.desktopLock`` through vdsmd (guest-exec of a command
and its polling), and ``Host.getAllVmStats`` with the guest info in it (and its size).
Every guest is destroyed at the end, whatever happens. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.vms import cpu_seconds, libvirtd_pid, percentile, timed_call
from tests import guest as g
from tests.harness import Vdsmd, wait_for
from tests.vm import agent as a


def start_guests(agent: Vdsmd, image: g.GuestImage, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        vm_id = a.new_id()
        args = g.kernel_cmdline("idle", agent=1)
        agent.call("VM.create", vmID=vm_id, vmParams=a.guest_params(image, kernelArgs=args))
        ids.append(vm_id)
    return ids


def answering(agent: Vdsmd, ids: list[str]) -> bool:
    stats = {s["vmID"]: s for s in agent.call("Host.getAllVmStats")}
    return all(stats.get(v, {}).get("guestAgent") == "responsive" and "appsList" in stats[v]
               for v in ids)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=4)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    image = g.build_guest()
    conn = libvirt.open("qemu:///system")
    with tempfile.TemporaryDirectory(prefix="bench-ga-") as tmp:
        top = Path(tmp)
        hooks = top / "hooks"
        hooks.mkdir()
        settings = {"info_interval": args.interval, "apps_interval": args.interval,
                    "desktop_lock": ["/bin/true"]}
        agent = Vdsmd(top / "vdsmd", config=a.config(hooks, guest_agent=settings))
        try:
            agent.start()
            a.wait_ready(agent)
            ids = start_guests(agent, image, args.vms)
            wait_for(lambda: answering(agent, ids), 300, interval=0.5, what="agents")
            pid, lpid = agent.pid, libvirtd_pid()
            cpu0, lcpu0, t0 = cpu_seconds(pid), cpu_seconds(lpid) if lpid else 0.0, \
                time.monotonic()
            refresh_ms: list[float] = []
            while time.monotonic() - t0 < args.seconds:
                time.sleep(args.interval)
                for vm_id in ids:
                    detail = agent.call("Actors.inspect", path=f"/vms/{vm_id}")["detail"]
                    refresh_ms.append(detail["guestAgent"]["lastRefreshMs"])
            elapsed = time.monotonic() - t0
            cpu = (cpu_seconds(pid) - cpu0) / elapsed * 100
            lcpu = ((cpu_seconds(lpid) - lcpu0) / elapsed * 100) if lpid else float("nan")

            dom = conn.lookupByUUIDString(ids[0])
            ping = json.dumps({"execute": "guest-ping"})
            pings = []
            for _ in range(100):
                started = time.perf_counter()
                libvirt_qemu.qemuAgentCommand(dom, ping, 5, 0)
                pings.append((time.perf_counter() - started) * 1000)
            with agent.client() as client:
                locks = []
                for _ in range(20):
                    started = time.perf_counter()
                    client.call("VM.desktopLock", {"vmID": ids[0]})
                    locks.append((time.perf_counter() - started) * 1000)
                stats_ms = []
                reply: Any = None
                for _ in range(50):
                    ms, reply = timed_call(client, "Host.getAllVmStats")
                    stats_ms.append(ms)
            size = len(msgpack.packb(reply))
        finally:
            try:
                agent.stop(timeout=30)
            finally:
                agent.kill()
                a.destroy_owned(conn, str(agent.state_dir.resolve()))
    conn.close()
    print(f"{args.vms} VMs with qemu-ga, info (and apps) every {args.interval:g} s, "
          f"{elapsed:.0f} s window")
    print(f"  vdsmd CPU: {cpu:.2f} % of one core; libvirtd: {lcpu:.2f} %")
    print(f"  refresh (guest-info + 6 info commands + the package query): median "
          f"{statistics.median(refresh_ms):.0f} ms, p95 {percentile(refresh_ms, 95):.0f} ms")
    print(f"  guest-ping through libvirt: median {statistics.median(pings):.1f} ms, "
          f"p95 {percentile(pings, 95):.1f} ms")
    print(f"  VM.desktopLock (guest-exec /bin/true + polling): median "
          f"{statistics.median(locks):.0f} ms, p95 {percentile(locks, 95):.0f} ms")
    print(f"  Host.getAllVmStats: median {statistics.median(stats_ms):.1f} ms, "
          f"{size} bytes ({size // args.vms} per VM)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
