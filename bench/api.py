"""API latency and throughput, side by side with raw pyzmq, in one run.

    .venv/bin/python bench/api.py [--n 5000] [--clients 8] [--seconds 5]

(a) raw pyzmq REQ/REP echo round trip over ipc, (b) Host.ping through vdsmd over ipc with the
same REQ socket pattern; prints both and the ratio. Then throughput: N client processes,
each a DEALER keeping a window of requests in flight, first against a raw ROUTER echo
server, then against vdsmd's Host.ping. Goal: ping within 3x the raw round trip and at least
8,000 pings/s with 8 clients on a 2-core machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Vdsmd

PING = msgpack.packb({"id": 1, "method": "Host.ping"})


def echo_rep(endpoint: str, stop: threading.Event, ready: threading.Event) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REP)
    sock.bind(endpoint)
    ready.set()
    while not stop.is_set():
        if sock.poll(100):
            sock.send(sock.recv())
    sock.close(0)


def echo_router(endpoint: str, stop: threading.Event, ready: threading.Event) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    ready.set()
    while not stop.is_set():
        if sock.poll(100):
            for _ in range(1000):
                try:
                    sock.send_multipart(sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
    sock.close(0)


def round_trips(endpoint: str, n: int) -> list[float]:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.connect(endpoint)
    for _ in range(200):  # warm up
        sock.send(PING)
        sock.recv()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        sock.send(PING)
        sock.recv()
        times.append(time.perf_counter() - start)
    sock.close(0)
    return times


def _dealer_worker(endpoint: str, seconds: float, window: int, out: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    for _ in range(window):
        sock.send_multipart([b"", PING])
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(1000):
            sock.recv_multipart()
            done += 1
            sock.send_multipart([b"", PING])
    out.put(done)
    sock.close(0)
    ctx.term()


def throughput(endpoint: str, clients: int, seconds: float, window: int = 16) -> float:
    out: Any = mp.Queue()
    procs = [mp.Process(target=_dealer_worker, args=(endpoint, seconds, window, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + 30) for _ in procs)
    for p in procs:
        p.join(30)
    return total / seconds


def describe(times: list[float]) -> str:
    us = sorted(t * 1e6 for t in times)
    return (f"median {statistics.median(us):7.1f} us  p90 {us[int(len(us) * 0.9)]:7.1f} us  "
            f"p99 {us[int(len(us) * 0.99)]:7.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stop = threading.Event()
        ready = threading.Event()
        raw_ep = f"ipc://{tmp}/raw.sock"
        threading.Thread(target=echo_rep, args=(raw_ep, stop, ready), daemon=True).start()
        ready.wait(5)
        ready.clear()
        router_ep = f"ipc://{tmp}/router.sock"
        threading.Thread(target=echo_router, args=(router_ep, stop, ready), daemon=True).start()
        ready.wait(5)
        daemon = Vdsmd(Path(tmp) / "vdsmd")
        daemon.start()
        try:
            raw = round_trips(raw_ep, args.n)
            ping = round_trips(daemon.api, args.n)
            raw_median = statistics.median(raw)
            ping_median = statistics.median(ping)
            print(f"(a) raw pyzmq REQ/REP echo   {describe(raw)}")
            print(f"(b) Host.ping through vdsmd  {describe(ping)}")
            print(f"    latency ratio (b)/(a): {ping_median / raw_median:.2f}x  (goal <= 3x)")
            raw_rate = throughput(router_ep, args.clients, args.seconds)
            ping_rate = throughput(daemon.api, args.clients, args.seconds)
            print(f"raw ROUTER echo, {args.clients} pipelined DEALERs: {raw_rate:10.0f} msg/s")
            print(f"Host.ping,       {args.clients} pipelined DEALERs: {ping_rate:10.0f} pings/s"
                  f"  (goal >= 8000)")
            print(f"    throughput ratio raw/vdsmd: {raw_rate / ping_rate:.2f}x")
        finally:
            daemon.stop()
            stop.set()


if __name__ == "__main__":
    main()
