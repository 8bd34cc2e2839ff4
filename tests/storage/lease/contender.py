"""A contender for the SPM lease, as its own process (for test_contention.py and bench/lease.py).

    python -m tests.storage.lease.contender DIR HOST_ID MODE [options]

It takes host id HOST_ID in DIR/ids (renewed on a thread, as a keeper does), watches the ids
area and contends for resource "SPM" in DIR/leases. It prints one JSON object per line:

- ``rounds``: contend again and again until it won ``--wins`` times or ``--seconds`` passed;
  each win prints ``{"ev": "won", "lver", "t0", "t1", "deadline"}`` where ``t0`` is when
  acquire returned, ``t1`` when it began releasing and ``deadline`` its host lease's deadline
  then (CLOCK_MONOTONIC, shared by the processes of this machine).
- ``once``: acquire once (waiting up to ``--wait`` seconds), print ``won`` or ``refused``,
  (or ``expired`` when its host lease ran out meanwhile), then hold (renewing) until stdin
  closes; with ``--stop-at STAGE`` it stops itself with
  SIGSTOP at that hook point ("checked", "phase1", "committed") first.

Only the lease layer and the standard library are imported, as in the keeper.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

from actors.storage.lease.delta import DeltaLease
from actors.storage.lease.errors import LeaseContended, LeaseExpired, LeaseHeld
from actors.storage.lease.observer import IdsObserver
from actors.storage.lease.paxos import PaxosLease
from actors.storage.lease.timing import LeaseTiming
from messaging.errors import StorageError

EMIT = threading.Lock()


def emit(**fields: object) -> None:
    with EMIT:  # the renewal thread reports too: one whole line at a time
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def renew_forever(delta: DeltaLease, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        try:
            delta.renew()
        except LeaseExpired as e:
            emit(ev="lost", reason=str(e))
            return
        except StorageError:
            continue  # the deadline stands; the next renewal may land


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("dir", type=Path)
    p.add_argument("host_id", type=int)
    p.add_argument("mode", choices=["rounds", "once"])
    p.add_argument("--lease", type=float, default=6.0)
    p.add_argument("--renew", type=float, default=1.0)
    p.add_argument("--io-timeout", type=float, default=2.0)
    p.add_argument("--sector-size", type=int, default=512)
    p.add_argument("--hosts", type=int, default=8)
    p.add_argument("--wins", type=int, default=10)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--wait", type=float, default=0.0)
    p.add_argument("--poll", type=float, default=0.0)
    p.add_argument("--stop-at", default="")
    args = p.parse_args()
    timing = LeaseTiming(lease=args.lease, renew_interval=args.renew,
                         io_timeout=args.io_timeout)

    def hook(stage: str) -> None:
        if stage == args.stop_at:
            emit(ev="stopping", stage=stage)
            os.kill(os.getpid(), signal.SIGSTOP)

    delta = DeltaLease(args.dir / "ids", args.host_id, f"host-{args.host_id}", timing,
                       sector_size=args.sector_size)
    delta.acquire()
    stop = threading.Event()
    renewer = threading.Thread(target=renew_forever, args=(delta, stop, args.renew), daemon=True)
    renewer.start()
    observer = IdsObserver(args.dir / "ids", timing, sector_size=args.sector_size,
                           hosts=args.hosts)
    observer.poll()
    spm = PaxosLease(args.dir / "leases", "SPM", args.host_id, delta.generation, timing,
                     sector_size=args.sector_size, hosts=args.hosts, hook=hook,
                     host_deadline=lambda: delta.deadline)
    emit(ev="ready", generation=delta.generation, t=time.monotonic())
    if args.mode == "once":
        try:
            lver = spm.acquire(observer, wait=args.wait, poll_interval=args.poll or None)
        except LeaseHeld as e:
            emit(ev="refused", owner=list(e.owner), lver=e.lver)
            return 0
        except LeaseExpired:
            emit(ev="expired", lver=spm.lver)
            return 0
        emit(ev="won", lver=lver, t0=time.monotonic(), host_lease_valid=delta.held)
        sys.stdin.read()  # hold until the parent closes our stdin
        return 0
    wins = 0
    give_up = time.monotonic() + args.seconds
    while wins < args.wins and time.monotonic() < give_up:
        try:
            observer.poll()
            lver = spm.acquire(observer)
        except (LeaseHeld, LeaseContended, StorageError):
            time.sleep(random.uniform(0, 0.005))
            continue
        t0 = time.monotonic()
        if not delta.held:
            emit(ev="error", reason="acquired with an expired host lease", lver=lver)
            return 1
        time.sleep(random.uniform(0, 0.005))
        t1 = time.monotonic()
        emit(ev="won", lver=lver, t0=t0, t1=t1, deadline=delta.deadline)
        spm.release()
        wins += 1
    stop.set()
    renewer.join(2 * args.io_timeout + args.renew)
    delta.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
