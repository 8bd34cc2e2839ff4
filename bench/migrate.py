"""Live migration round trips through VM.migrate, beside virsh doing the same, in one run.

    .venv/bin/python bench/migrate.py [--trips 5] [--memory 128] [--ballast 0]

Builds the two-host test bed (tests/testbed: each host a network namespace with its own
libvirtd and vdsmd, the agents talking over tcp with CURVE) and starts two identical tiny
TCG guests on host a: one through the agent (VM.create), one straight through libvirt (the
same domain XML, owned by nobody, so the agents leave it alone). Then, ``--trips`` times,
each guest goes a -> b -> a:

- the agent's: ``VM.migrate`` (downtime 300 ms, QEMU's default, as virsh leaves it), timed
  from the call until the job's ``|jobs|status|`` event says it finished; the source's Down
  copy is destroyed afterwards (not timed), as an engine does;
- the floor: ``virsh migrate --live --p2p <uuid> qemu+tcp://<dst>/system --migrateuri
  tcp://<dst>`` run on the source host, timed around the command.

The two alternate move by move, so both see the same machine. Downtime is what libvirt
measured on the destination (``jobStats(COMPLETED)``); for the agent, the job's downtime.
Prints total time and downtime p50/max for both, and whether the agent is within 10 % of
virsh's total with the same downtime. Everything is torn down at the end. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.vm import domxml
from actors.vm.params import VmParams
from tests import guest as g
from tests.harness import wait_for
from tests.testbed import Bed, BedAgent, BedHost
from tests.vm import agent as a

DOWNTIME_MS = 300  # QEMU's own default: what virsh migrates with
GOAL = 1.10  # the agent's total within 10 % of virsh's


@dataclass
class Moves:
    name: str
    seconds: list[float] = field(default_factory=list)
    downtimes: list[int] = field(default_factory=list)

    def line(self) -> str:
        total = sum(self.seconds)
        p50 = statistics.median(self.downtimes) if self.downtimes else float("nan")
        top = max(self.downtimes) if self.downtimes else float("nan")
        return (f"{self.name:<12}{len(self.seconds):>6}{total:>10.2f}"
                f"{total / max(1, len(self.seconds)):>10.2f}{p50:>17.0f}{top:>10.0f}")


def guest_params(image: g.GuestImage, memory: int, ballast: int) -> dict[str, Any]:
    params = a.guest_params(image, "count", memSize=memory)
    if ballast:
        params["kernelArgs"] = g.kernel_cmdline("count", ballast=ballast)
    return params


def start_floor_guest(host: BedHost, params: dict[str, Any]) -> str:
    """The virsh guest: the agent's own domain XML, owned by nobody."""
    vm_id = str(uuid.uuid4())
    vm = VmParams.from_dict(vm_id, {**params, "vmName": f"floor-{vm_id[:8]}"})
    xml = domxml.build_domain_xml(vm, serial_log=str(host.workdir / f"floor-{vm_id}.log"),
                                  owner="bench-floor")
    conn = host.connect()
    try:
        conn.createXML(xml, 0)
    finally:
        conn.close()
    return vm_id


def downtime_on(host: BedHost, vm_id: str) -> int:
    conn = host.connect()
    try:
        stats = conn.lookupByUUIDString(vm_id).jobStats(
            libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    finally:
        conn.close()
    return int(stats.get("downtime", -1))


def move_with_virsh(src: BedHost, dst: BedHost, vm_id: str, moves: Moves) -> None:
    started = time.monotonic()
    done = src.run("virsh", "-c", "qemu:///system", "migrate", "--live", "--p2p", vm_id,
                   dst.remote_libvirt_uri, "--migrateuri", f"tcp://{dst.address}",
                   timeout=600, check=False)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"virsh migrate failed: {done.stderr.strip()}")
    moves.seconds.append(took)
    moves.downtimes.append(downtime_on(dst, vm_id))


def move_with_agent(src: BedAgent, dst: BedAgent, vm_id: str, moves: Moves) -> None:
    job_id = str(uuid.uuid4())
    with src.subscriber(f"|jobs|status|{job_id}") as sub:
        time.sleep(0.2)  # the subscription reaches the publisher (not timed)
        started = time.monotonic()
        src.call("VM.migrate", vmID=vm_id, dst=dst.host.name, downtime=DOWNTIME_MS,
                 jobID=job_id)
        while True:
            event = sub.receive(600)
            if event is None:
                raise TimeoutError("the migration did not end within 600 s")
            if event[1]["taskState"] == "finished":
                took = time.monotonic() - started
                break
    if event[1]["status"] != "done":
        raise RuntimeError(f"the migration failed: {event[1]['message']}")
    moves.seconds.append(took)
    status = wait_for(lambda: "downtime" in (s := src.call("VM.getMigrationStatus",
                                                           vmID=vm_id)) and s, 30)
    moves.downtimes.append(int(status["downtime"]))
    src.call("VM.destroy", vmID=vm_id)  # the Down copy on the source (not timed)


def run(args: argparse.Namespace) -> int:
    image = g.build_guest()
    workdir = Path(tempfile.mkdtemp(prefix="bench-migrate-"))
    with Bed(workdir) as bed:
        host_a = bed.host("a")
        agent_a, agent_b = bed.start_agents(a={"daemon": {"log_level": "INFO"}},
                                            b={"daemon": {"log_level": "INFO"}})
        params = guest_params(image, args.memory, args.ballast)
        ours = a.new_id()
        agent_a.call("VM.create", vmID=ours, vmParams=params)
        floor = start_floor_guest(host_a, params)
        g.wait_for_marker(host_a.workdir / "vm-logs" / f"{ours}.log", g.MARKER_READY, 300)
        g.wait_for_marker(host_a.workdir / f"floor-{floor}.log", g.MARKER_READY, 300)
        time.sleep(args.settle)
        print(f"{args.trips} round trips of a {args.memory} MiB guest "
              f"({args.ballast} MiB of it non-zero), a <-> b", flush=True)
        agent_moves, virsh_moves = Moves("VM.migrate"), Moves("virsh")
        for trip in range(args.trips + 1):  # the first warms caches up: not counted
            for src, dst in ((agent_a, agent_b), (agent_b, agent_a)):
                moves = (Moves("warm-up"), Moves("warm-up")) if trip == 0 else \
                    (agent_moves, virsh_moves)
                # who goes first alternates: neither always finds the caches warm
                if trip % 2:
                    move_with_agent(src, dst, ours, moves[0])
                    move_with_virsh(src.host, dst.host, floor, moves[1])
                else:
                    move_with_virsh(src.host, dst.host, floor, moves[1])
                    move_with_agent(src, dst, ours, moves[0])
            if trip:
                print(f"  trip {trip}: agent {sum(agent_moves.seconds[-2:]):.2f} s, "
                      f"virsh {sum(virsh_moves.seconds[-2:]):.2f} s", flush=True)
        print()
        print(f"{'':<12}{'moves':>6}{'total s':>10}{'mean s':>10}{'downtime p50 ms':>17}"
              f"{'max ms':>10}")
        print(agent_moves.line())
        print(virsh_moves.line())
        ratio = sum(agent_moves.seconds) / sum(virsh_moves.seconds)
        print(f"\nVM.migrate total / virsh total: {ratio:.3f} (goal <= {GOAL:.2f})")
        same = max(agent_moves.downtimes) <= max(DOWNTIME_MS, *virsh_moves.downtimes)
        print("downtime within the same limit as virsh's:", "yes" if same else "NO")
        return 0 if ratio <= GOAL and same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trips", type=int, default=5)
    parser.add_argument("--memory", type=int, default=128, help="MiB of guest memory")
    parser.add_argument("--ballast", type=int, default=0,
                        help="MiB of the guest's memory filled with non-zero bytes")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait after the boots before measuring")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
