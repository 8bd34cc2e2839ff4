"""Chaos campaign: three hosts share one pool on a fault-injecting mount; the SPM is killed,
stopped, frozen and cut off at random, while a load keeps writing metadata through it.

    .venv/bin/python bench/chaos.py [--rounds 50] [--seed 1] [--lease 3] [--io 0.5]

Three real vdsmd processes (`tests/storage/spm/cluster.py`) share a localfs pool whose
directory is served by faultfs (`tests/faultfs`), with `[spm] auto_contend = true` (the hosts
contend by themselves when the pool has no live SPM) and the safety journal on. A load thread
creates and deletes small volumes on whichever host is SPM, so that there are metadata writes
to check. Each round applies one fault to the current SPM host, chosen at random:

- ``kill``: SIGKILL its vdsmd with its process group (its keeper; the writer dies with it);
- ``stop-vdsmd``: SIGSTOP vdsmd alone past the lease (its keeper sees no heartbeat);
- ``stop-keeper``: SIGSTOP the keeper alone past the lease (its writer fences itself);
- ``stop-host``: SIGSTOP vdsmd and its keeper past the lease (the writer fences itself);
- ``freeze``: every I/O of that host's processes on the shared mount hangs past the lease
  (released then; the hang is killable, as an NFS wait is);
- ``eio``: every I/O of that host's processes on the shared mount fails for a lease;
  (``freeze`` and ``eio`` spare the safety journal's own files: the checker must see every
  line);
- ``slow``: its lease I/O takes 0.8 x io_timeout for a while (it may keep the role);
- ``kill-keeper``: SIGKILL its keeper alone (vdsmd starts another);
- ``restart-other``: SIGTERM and restart a host that is not the SPM.

Then it waits until every host runs again and some host is SPM. It prints the safety
checker's verdict over the whole journal (violations must be 0: writes of different lvers
never overlap, lvers grow, no write ends after its lease's deadline), how near the writes
came to that bound (the least time a write began before its cutoff and ended before its
lease's end: the windows docs/spm.md says remain), and the failover time
(from the fault to a new lver's SPM) min/median/max beside the bound
lease + 3 x io_timeout (+ the renewal interval). Run as root.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.storage.spm import journal, procutil
from messaging.client import CallTimeout, ClientError
from tests.faultfs import faultfs_mount
from tests.harness import wait_for
from tests.storage.spm.cluster import Cluster, new_id

ACTIONS = ("kill", "stop-vdsmd", "stop-keeper", "stop-host", "freeze", "eio", "slow",
           "kill-keeper", "restart-other")
REPLACES = {"kill", "stop-vdsmd", "stop-keeper", "stop-host", "freeze", "eio",
            "kill-keeper"}


def config(lease: float, io: float, renew: float) -> str:
    return (f"[spm]\nlease_time = {lease}\nrenew_interval = {renew}\nio_timeout = {io}\n"
            f"agent_timeout = {max(2.0, lease / 2)}\nheartbeat_interval = 0.2\n"
            "journal = true\nauto_contend = true\n"
            "[storage]\nmonitor_interval = 1\nmonitor_timeout = 2\n"
            "[mailbox]\nhosts = 8\n")


class Chaos:
    def __init__(self, cluster: Cluster, control: Any, *, lease: float, io: float,
                 rng: random.Random) -> None:
        self.cluster = cluster
        self.control = control
        self.lease = lease
        self.io = io
        self.rng = rng
        self.kills: list[tuple[int, float]] = []
        self.failovers: list[float] = []
        self.faulted = (0, 0)  # the host and lver the last round's fault hit
        self.stop = threading.Event()
        self.load_ok = 0
        self.load_refused = 0
        self.refusals: dict[str, int] = {}

    # --- who is where ----------------------------------------------------------------------

    def alive(self, host: int) -> bool:
        proc = self.cluster.host(host).proc
        return proc is not None and proc.poll() is None

    def status(self, host: int) -> dict[str, Any] | None:
        try:
            return self.cluster.spm_status(host)
        except (ClientError, CallTimeout, OSError):
            return None

    def current_spm(self) -> tuple[int, int] | None:
        """(host, lver) of a host that says it is the SPM."""
        for host in (1, 2, 3):
            if not self.alive(host):
                continue
            status = self.status(host)
            if status and status["spmStatus"] == "SPM":
                return host, int(status["spmLver"])
        return None

    # --- the load --------------------------------------------------------------------------

    def load(self) -> None:
        """Volumes created and deleted through whichever host is SPM (each is several
        guarded metadata writes), tried on every host in turn."""
        sp, sd = self.cluster.sp, self.cluster.sd
        turn = 0
        while not self.stop.is_set():
            turn = turn % 3 + 1
            status = self.status(turn) if self.alive(turn) else None
            if not status or status["spmStatus"] != "SPM":
                time.sleep(0.02)
                continue
            host = turn
            ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": new_id(),
                   "volumeID": new_id()}
            try:
                task = self.cluster.call(host, "Volume.create", size=1 << 20, volFormat="raw",
                                         preallocate="sparse", timeout=10, **ids)
                status = self.cluster.task(host, task, timeout=30)
                if status["taskResult"] == "success":
                    task = self.cluster.call(host, "Volume.delete", timeout=10, **ids)
                    self.cluster.task(host, task, timeout=30)
                    self.load_ok += 1
            except (ClientError, CallTimeout, TimeoutError, OSError) as e:
                self.load_refused += 1
                self.refusals[str(getattr(e, "code", type(e).__name__))] = \
                    self.refusals.get(str(getattr(e, "code", type(e).__name__)), 0) + 1
                time.sleep(0.05)

    # --- faults ------------------------------------------------------------------------------

    def pids(self, host: int) -> tuple[int, int, int]:
        """vdsmd, keeper and writer pids of ``host``."""
        detail = self.cluster.call(host, "Actors.inspect",
                                   path=f"/storage/pools/{self.cluster.sp}/lease",
                                   timeout=5)["detail"]
        writer = (detail.get("writer") or {}).get("pid", 0)
        return self.cluster.host(host).pid, int(detail["keeperPid"] or 0), int(writer)

    def record_kill(self, pid: int) -> None:
        if not pid:
            return
        wait_for(lambda: procutil.start_time(pid) is None, 30, what=f"pid {pid} to die")
        self.kills.append((pid, time.monotonic()))

    def round(self, action: str) -> float | None:
        spm = self.current_spm()
        if spm is None:
            return None
        host, lver = spm
        self.faulted = (host, lver)
        vdsmd, keeper, writer = self.pids(host)
        hold = self.lease + 2 * self.io + 1.0
        started = time.monotonic()
        if action == "kill":
            os.killpg(vdsmd, signal.SIGKILL)
            self.record_kill(writer)
            self.cluster.host(host).proc.wait(10)  # type: ignore[union-attr]
        elif action == "kill-keeper":
            os.kill(keeper, signal.SIGKILL)
            self.record_kill(writer)
        elif action in ("stop-vdsmd", "stop-keeper", "stop-host"):
            targets = {"stop-vdsmd": [vdsmd], "stop-keeper": [keeper],
                       "stop-host": [vdsmd, keeper]}[action]
            for pid in targets:
                os.kill(pid, signal.SIGSTOP)
            try:
                took = self.hold(hold, lver, started, exclude=host)
            finally:
                for pid in targets:
                    os.kill(pid, signal.SIGCONT)
            self.heal()
            return took
        elif action == "freeze":
            self.exempt_journal()
            self.control.hang("*", "any", pid=vdsmd, killable=True)
            try:
                took = self.hold(hold, lver, started, exclude=host)
            finally:
                self.control.clear()
            self.heal()
            return took
        elif action == "eio":
            self.exempt_journal()
            self.control.eio("*", "any", pid=vdsmd)
            try:
                took = self.hold(hold, lver, started, exclude=host)
            finally:
                self.control.clear()
            self.heal()
            return took
        elif action == "slow":
            self.control.delay("*/dom_md/ids", self.io * 0.8, "any", pid=vdsmd)
            try:
                time.sleep(self.lease)
            finally:
                self.control.clear()
        elif action == "restart-other":
            other = self.rng.choice([h for h in (1, 2, 3) if h != host])
            self.cluster.host(other).stop(timeout=60)
            self.cluster.host(other).start()
        if action in REPLACES:
            return self.recover(lver, started)
        self.heal()
        return None

    def hold(self, seconds: float, lver: int, started: float, *, exclude: int) -> float | None:
        """Keep the fault for ``seconds``, watching the other hosts: the time from the fault
        to one of them holding a newer lver (None if none did meanwhile)."""
        took: float | None = None
        end = started + seconds
        while time.monotonic() < end:
            if took is None:
                for host in (h for h in (1, 2, 3) if h != exclude and self.alive(h)):
                    status = self.status(host)
                    if status and status["spmStatus"] == "SPM" and \
                            int(status["spmLver"]) > lver:
                        took = time.monotonic() - started
                        break
            time.sleep(0.05)
        return took

    def recover(self, lver: int, started: float) -> float | None:
        """Restart what died; the time from the fault to an SPM of a newer lver."""
        took: float | None = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            spm = self.current_spm()
            if spm is not None and spm[1] > lver:
                took = time.monotonic() - started
                break
            self.restart_dead()
            time.sleep(0.05)
        self.heal()
        return took

    def restart_dead(self) -> None:
        for host in (1, 2, 3):
            if not self.alive(host):
                self.cluster.host(host).start()

    def exempt_journal(self) -> None:
        """The safety journal is the campaign's instrument, not the storage under test: its
        lines must land whatever the faults do to the rest (on real shared storage it would
        share the domain's fate; here the checker must see every write and every kill)."""
        self.control.add("*/spmjournal/*", "any", "pass")

    def heal(self) -> None:
        self.restart_dead()
        wait_for(lambda: self.current_spm() is not None, 120, interval=0.1, what="an SPM")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--io", type=float, default=0.5)
    parser.add_argument("--renew", type=float, default=0.5)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    with faultfs_mount(tmp / "fs") as fs:
        cluster = Cluster(tmp, hosts=3, shared=fs.mountpoint,
                          config=config(args.lease, args.io, args.renew))
        try:
            cluster.start()
            cluster.pool()
            chaos = Chaos(cluster, fs.control, lease=args.lease, io=args.io, rng=rng)
            chaos.heal()
            loader = threading.Thread(target=chaos.load, daemon=True)
            loader.start()
            counts: dict[str, int] = {}
            for number in range(1, args.rounds + 1):
                action = rng.choice(ACTIONS)
                counts[action] = counts.get(action, 0) + 1
                took = chaos.round(action)
                if took is not None:
                    chaos.failovers.append(took)
                note = f"failover {took:.2f} s" if took is not None else ""
                host, lver = chaos.faulted
                print(f"round {number:3d} {action:14s} host {host} lver {lver:3d}  {note}",
                      flush=True)
            chaos.stop.set()
            loader.join(60)
            writes = journal.writes(journal.load(cluster.journal_dir()), chaos.kills)
            violations = journal.check(writes)
            report(args, counts, chaos, writes, violations)
            if violations:
                kept = Path(tempfile.mkdtemp(prefix="chaos-journal-"))
                shutil.copytree(cluster.journal_dir(), kept, dirs_exist_ok=True)
                print(f"the journal is kept in {kept}")
            return 1 if violations else 0
        finally:
            fs.control.clear()
            cluster.cleanup()


def report(args: argparse.Namespace, counts: dict[str, int], chaos: Chaos,
           writes: list[journal.Write], violations: list[journal.Violation]) -> None:
    bound = args.lease + 3 * args.io
    f = sorted(chaos.failovers)
    print()
    print(f"rounds: {args.rounds} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    print(f"load: {chaos.load_ok} volumes created and deleted, {chaos.load_refused} refused "
          f"or cut by a fault; journaled writes: {len(writes)} over "
          f"{len({w.lver for w in writes})} lvers")
    print(f"violations: {len(violations)}")
    for v in violations[:10]:
        print(f"  {v.kind}: {v.detail}")
    ended = [w for w in writes if w.end is not None and w.expiry != float("inf")]
    if ended:
        # how near the writes came to the bound: the windows the checker guards
        began = min(w.deadline - w.start for w in ended)
        landed = min(w.expiry - w.end for w in ended if w.end is not None)
        longest = max(w.end - w.start for w in ended if w.end is not None)
        print(f"closest calls over {len(ended)} writes: began {began * 1000:.0f} ms before "
              f"its cutoff, ended {landed * 1000:.0f} ms before its lease's end; longest "
              f"write {longest * 1000:.0f} ms (a killed one: until its kill)")
    if f:
        print(f"failover (fault -> SPM of a newer lver), {len(f)} rounds: "
              f"min {f[0]:.2f} s, median {statistics.median(f):.2f} s, max {f[-1]:.2f} s; "
              f"lease {args.lease:g} s, goal lease + 3 x io_timeout = {bound:g} s "
              f"(+ one renewal interval, {args.renew:g} s); sanlock's anchor: 140 s at its "
              "default io_timeout of 10 s")


if __name__ == "__main__":
    sys.exit(main())
