"""Thin provisioning under a real guest's writes: does a running VM keep running, at what cost?

    .venv/bin/python bench/thinp.py [--mib 1024] [--initial 64] [--chunk 64] [--max 2048]
                                    [--repeat 1]

Two real vdsmd hosts share a loop-domain pool (`tests/storage/spm/cluster.py`); host 1 is the
SPM. The project's tiny TCG guest writes ``--mib`` MiB of 0xff bytes with O_DIRECT (4 MiB per
request, as fast as it can) to a cow volume of the pool:

- *prealloc*: a preallocated cow volume (a fully allocated qcow2: never extended);
- *thin*: a sparse cow volume of ``--initial`` MiB that vdsmd extends as the guest writes.

each on host 1 (the SPM: its writer extends) and on host 2 (through the mailbox), once with a
fixed ``--chunk`` MiB chunk and once with the adaptive chunk (``--chunk`` .. ``--max`` MiB).
Guest throughput is timed from the guest's first progress line on its serial console to its
last; with ``--repeat`` each pair runs in alternating order and medians are printed. It
prints, side by side: thin/prealloc throughput, the number of ENOSPC pauses, and the
extension latency (threshold event -> this host's device refreshed, from the
``|storage|volume_extended|`` events) p50/p95/max. The data written is checked afterwards.

vdsm's anchor (its latest): extension 0.77/1.15/1.39 s min/avg/max, no pauses up to about
350 MiB/s with 2.5 GiB chunks. Goals: at the guest's full rate 0 pauses and a ratio of at
least 0.9 with a local SPM; latency p50 at most 50 ms locally, 250 ms through the mailbox.
Run as root; everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import guest as g
from tests.storage.rig import Rig
from tests.storage.spm.cluster import CONFIG, Cluster, new_id
from tests.vm import agent as a
from tests.vm.thin import (
    EXTENDED,
    VM_STATUS,
    Events,
    MiB,
    check_written,
    ids,
    thin_settings,
    writer_params,
)

PROGRESS = re.compile(rf"^{re.escape(g.MARKER_WRITE_PROGRESS)} (\d+)", re.M)


@dataclass
class Run:
    label: str
    seconds: float = 0.0
    mib: int = 0
    pauses: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.mib / self.seconds if self.seconds else 0.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


class Timer:
    """Polls a serial log: when the first progress line and the done line appeared."""

    def __init__(self, log: Path, mib: int) -> None:
        self.log, self.mib = log, mib
        self.first: tuple[float, int] | None = None
        self.done: float | None = None
        self.failed = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        deadline = time.monotonic() + 3600
        while not self._stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            try:
                text = self.log.read_text(errors="replace")
            except FileNotFoundError:
                text = ""
            if self.first is None and (m := PROGRESS.search(text)):
                self.first = (now, int(m.group(1)))
            if f"{g.MARKER_WRITE_DONE} {self.mib}" in text:
                self.done = now
                return
            if g.MARKER_WRITE_FAILED in text or g.MARKER_KERNEL_PANIC in text:
                self.failed = text[-500:]
                return
            time.sleep(0.01)

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._stop.set()
        if self.failed:
            raise RuntimeError(f"the guest failed: {self.failed}")
        if self.done is None or self.first is None:
            raise TimeoutError(f"the guest did not finish within {timeout:g} s")


def volume(cluster: Cluster, *, thin: bool, capacity: int, initial: int) -> dict[str, str]:
    img, vol = new_id(), new_id()
    extra: dict[str, Any] = {"preallocate": "sparse", "initialSize": initial} if thin else \
        {"preallocate": "preallocated"}
    task = cluster.call(1, "Volume.create", storagepoolID=cluster.sp, storagedomainID=cluster.sd,
                        imageID=img, volumeID=vol, size=capacity, volFormat="cow", **extra)
    assert cluster.task(1, task, timeout=600)["taskResult"] == "success"
    return ids(cluster.sp, cluster.sd, img, vol)


def write(cluster: Cluster, tmp: Path, host_id: int, *, vol: dict[str, str], mib: int,
          label: str, image: g.GuestImage) -> Run:
    host = cluster.host(host_id)
    rig = Rig(tmp)
    rig.daemon = host
    vm_id = new_id()
    run = Run(label)
    with rig.subscriber(EXTENDED, VM_STATUS) as sub:
        events = Events(sub)
        timer = Timer(a.serial_log(host, vm_id), mib)
        host.call("VM.create", vmID=vm_id, vmParams=writer_params(image, vol, mib))
        timer.wait(1800)
        a.wait_status(host, vm_id, "Down", timeout=120)
        events.drain(lambda: any(p["status"] == "Down" for p in events.statuses(vm_id)), 30)
    assert timer.first is not None and timer.done is not None
    run.seconds = timer.done - timer.first[0]
    run.mib = mib - timer.first[1]
    run.pauses = events.enospc_pauses(vm_id)
    run.latencies = [e["latency"] for e in events.extensions(vol["volumeID"])]
    host.call("VM.destroy", vmID=vm_id)
    check_written(host.call, vol, mib)
    try:  # free the space for the next run
        cluster.task(1, cluster.call(1, "Volume.delete", **vol))
    except Exception as e:  # noqa: BLE001 - a leftover volume only costs space
        print(f"  (could not delete {vol['volumeID']}: {e})", file=sys.stderr)
    return run


def measure(tmp: Path, args: argparse.Namespace, policy: str, image: g.GuestImage) -> list[Run]:
    """Every run of one chunk policy: per host, ``--repeat`` pairs, alternating which of
    prealloc and thin goes first (the machine's load drifts)."""
    thin = thin_settings(chunk_mib=args.chunk, chunk_max_mib=max(args.chunk, args.max),
                         adaptive=policy == "adaptive")
    hooks = tmp / "hooks"
    hooks.mkdir(parents=True)
    cluster = Cluster(tmp, hosts=2, config=CONFIG + a.config(hooks) + thin)
    conn = libvirt.open("qemu:///system")
    runs = []
    try:
        cluster.start()
        cluster.pool("loop")
        assert cluster.spm_start(1)["taskResult"] == "success"
        capacity = (args.mib + 64) * MiB
        for host_id, where in ((1, "local SPM"), (2, "mailbox")):
            for r in range(args.repeat):
                for thin_vol in (False, True) if r % 2 == 0 else (True, False):
                    label = f"{policy}|{where}|{'thin' if thin_vol else 'prealloc'}"
                    vol = volume(cluster, thin=thin_vol, capacity=capacity,
                                 initial=args.initial * MiB)
                    run = write(cluster, tmp, host_id, vol=vol, mib=args.mib, label=label,
                                image=image)
                    print(f"  {label}: {run.rate:.1f} MiB/s, {run.pauses} pauses, "
                          f"{len(run.latencies)} extensions", flush=True)
                    runs.append(run)
    finally:
        try:
            for host in cluster.hosts:
                a.destroy_owned(conn, a.owner(host))
        finally:
            conn.close()
            cluster.cleanup()
    return runs


def report(runs: list[Run]) -> None:
    """One line per chunk policy and SPM place: median throughputs, their ratio, pauses and
    extensions over all runs, latency percentiles over every extension."""
    groups: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        policy, where, kind = run.label.split("|")
        groups.setdefault(f"{policy}|{where}", {}).setdefault(kind, []).append(run)
    print()
    print(f"{'chunk':>8} {'SPM':<9} {'runs':>4} {'prealloc':>9} {'thin':>9} {'ratio':>6} "
          f"{'pauses':>6} {'ext':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for key, kinds in groups.items():
        policy, where = key.split("|")
        pre = statistics.median(r.rate for r in kinds["prealloc"])
        thin = statistics.median(r.rate for r in kinds["thin"])
        lat = [x for r in kinds["thin"] for x in r.latencies]
        p50, p95, top = ((percentile(lat, 0.5) * 1000, percentile(lat, 0.95) * 1000,
                          max(lat) * 1000) if lat else (0.0, 0.0, 0.0))
        print(f"{policy:>8} {where:<9} {len(kinds['thin']):>4} {pre:>7.1f}/s {thin:>7.1f}/s "
              f"{thin / pre:>6.2f} {sum(r.pauses for r in kinds['thin']):>6} {len(lat):>4} "
              f"{p50:>8.1f} {p95:>8.1f} {top:>8.1f}")
    print("(median guest throughput in MiB/s; latency: threshold event -> device refreshed "
          "on the VM's host)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="MiB the guest writes")
    parser.add_argument("--initial", type=int, default=64, help="a thin volume's first MiB")
    parser.add_argument("--chunk", type=int, default=64, help="the fixed (least) chunk, MiB")
    parser.add_argument("--max", type=int, default=2048, help="the adaptive chunk's most, MiB")
    parser.add_argument("--repeat", type=int, default=1,
                        help="prealloc/thin pairs per policy and host (medians reported)")
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions
    image = g.build_guest()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-thinp-") as top:
        for policy in ("fixed", "adaptive"):
            print(f"{policy} chunk:", flush=True)
            runs += measure(Path(top) / policy, args, policy, image)
    report(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
