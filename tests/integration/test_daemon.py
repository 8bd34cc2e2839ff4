"""vdsmd as a real process, over real sockets: host verbs, actors, faults, concurrency."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import libvirt
import msgpack
import pytest
import zmq

from messaging.client import Client, ClientError
from messaging.schema import SCHEMA
from tests.harness import Vdsmd, next_event, running_vdsmd, wait_for
from tests.privlibvirt import PrivateLibvirtd

pytestmark = pytest.mark.timeout(120)


def fd_count(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def test_ping_and_aliases(vdsmd: Vdsmd) -> None:
    assert vdsmd.call("Host.ping") is True
    assert vdsmd.call("ping") is True


@pytest.mark.libvirt
def test_capabilities_as_libvirt_and_the_kernel_see_them(vdsmd: Vdsmd) -> None:
    caps = vdsmd.call("Host.getCapabilities")
    conn = libvirt.open("qemu:///system")
    try:
        assert caps["libvirtVersion"].split(".")[0] == str(conn.getLibVersion() // 1_000_000)
        assert caps["qemuVersion"].split(".")[0] == str(conn.getVersion() // 1_000_000)
    finally:
        conn.close()
    assert "qemu" in caps["emulators"]
    assert caps["kvmEnabled"] == os.access("/dev/kvm", os.R_OK | os.W_OK)
    meminfo = Path("/proc/meminfo").read_text().split()
    assert caps["memSize"] == int(meminfo[1]) // 1024
    assert caps["cpuThreads"] == os.cpu_count()
    assert caps["hostUUID"]
    assert vdsmd.call("getVdsCapabilities")["hostUUID"] == caps["hostUUID"]


def test_stats_come_from_samples(vdsmd: Vdsmd) -> None:
    stats = vdsmd.call("Host.getStats")
    # what the output has, the docs (the schema's result, api.md) say, and the other way
    for key in ("cpuUser", "cpuSys", "cpuIdle", "cpuLoad", "memFree", "memUsed", "memTotal",
                "network", "vmCount", "vmActive", "storageDomains", "elapsedTime",
                "sampleTime", "sampleInterval", "statsAge"):
        assert key in stats, key
        assert key in SCHEMA.lookup("Host.getStats").result, key
    assert 0 <= stats["statsAge"] < 60 and stats["sampleTime"] <= time.monotonic()
    assert 0 <= stats["cpuIdle"] <= 100
    assert stats["memUsed"] + stats["memFree"] == stats["memTotal"]
    nics = {p.name for p in Path("/sys/class/net").iterdir()} - {"lo"}
    assert set(stats["network"]) == nics
    assert vdsmd.call("getVdsStats").keys() == stats.keys()


def test_actor_tree_is_listed_and_inspectable(vdsmd: Vdsmd) -> None:
    actors = {a["path"]: a for a in vdsmd.call("Actors.list")}
    for path in ("/", "/host", "/host/libvirt", "/host/stats", "/vms", "/storage"):
        assert actors[path]["state"] == "running", path
    assert actors["/host/libvirt"]["supervisor"] == "/host"
    info = vdsmd.call("Actors.inspect", path="/host")
    assert info["policy"]["strategy"] == "one_for_one"
    assert "/host/libvirt" in info["children"]
    assert info["answering"] is True
    info = vdsmd.call("Actors.inspect", path="/host/libvirt")
    assert info["detail"]["connected"] is True
    assert any(m["message"] == "inspect()" for m in info["recentMessages"])
    with pytest.raises(ClientError) as e:
        vdsmd.call("Actors.inspect", path="/nope")
    assert e.value.code == 103


def test_crashed_actor_is_restarted_and_the_api_keeps_answering(vdsmd: Vdsmd) -> None:
    with vdsmd.subscriber("|actors|status|/host/stats") as sub:
        libvirt_before = {a["path"]: a for a in vdsmd.call("Actors.list")}["/host/libvirt"]
        vdsmd.call("Actors.crash", path="/host/stats", reason="drill")
        _, failed = next_event(sub, lambda t, p: p["event"] == "failed", 10)
        assert "drill" in failed["reason"]
        next_event(sub, lambda t, p: p["event"] == "restarted", 10)
    assert vdsmd.call("Host.ping") is True
    assert "cpuIdle" in vdsmd.call("Host.getStats")
    actors = {a["path"]: a for a in vdsmd.call("Actors.list")}
    assert actors["/host/stats"]["restarts"] == 1
    assert "drill" in actors["/host/stats"]["lastFailure"]
    assert actors["/host/libvirt"]["restarts"] == 0
    assert actors["/host/libvirt"]["uptime"] >= libvirt_before["uptime"]


def test_actor_failing_past_its_intensity_is_given_up(tmp_path: Path) -> None:
    config = ("[debug]\nfault_injection = true\n"
              "[supervision]\nmax_restarts = 2\nwithin = 60\nbackoff_initial = 0.01\n")
    with running_vdsmd(tmp_path / "d", config=config) as vdsmd, \
            vdsmd.subscriber("|actors|status|") as sub:
        seen = []
        for _ in range(3):
            wait_for(lambda: _state(vdsmd, "/host/stats") == "running", 10)
            vdsmd.call("Actors.crash", path="/host/stats")
            _, event = next_event(sub, lambda t, p: p["path"] == "/host/stats"
                                  and p["event"] in ("failed", "gave-up"), 10)
            seen.append(event["event"])
        assert seen == ["failed", "failed", "gave-up"]
        assert _state(vdsmd, "/host/stats") == "gave-up"
        assert _state(vdsmd, "/host/libvirt") == "running"
        assert vdsmd.call("Host.ping") is True
        with pytest.raises(ClientError) as e:
            vdsmd.call("Host.getStats")
        assert e.value.code == 102
        escalations = vdsmd.call("Actors.inspect", path="/")["detail"]["escalations"]
        assert any(x["path"] == "/host/stats" for x in escalations)


def _state(vdsmd: Vdsmd, path: str) -> str | None:
    for actor in vdsmd.call("Actors.list"):
        if actor["path"] == path:
            return str(actor["state"])
    return None


def test_fault_injection_is_off_by_default(tmp_path: Path) -> None:
    with running_vdsmd(tmp_path / "d") as vdsmd:
        with pytest.raises(ClientError) as e:
            vdsmd.call("Actors.crash", path="/host/stats")
        assert e.value.code == 104


def test_hostile_frames_do_not_hurt_the_daemon(vdsmd: Vdsmd) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    frames = [
        b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb("str"),
        msgpack.packb({"id": 1, "method": "Host.ping", "params": {"x": 1}}),
        msgpack.packb({"id": 1, "method": "VM.destroy", "params": {"vmID": "../../etc"}}),
        msgpack.packb({"id": 1, "method": "Nope.nope"}),
        msgpack.packb({"id": 1, "method": "Host.ping", "params": [[[[[[[[[[[]]]]]]]]]]]}),
        b"\xdf\xff\xff\xff\xff",  # a map header claiming 4 billion entries
    ]
    nested: Any = 1
    for _ in range(500):
        nested = [nested]
    frames.append(msgpack.packb({"id": 1, "method": "Host.ping", "params": {"a": nested}}))
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(vdsmd.api)
        assert vdsmd.call("Host.ping") is True
        fds_before = fd_count(vdsmd.pid)
        for _ in range(50):
            for frame in frames:
                sock.send_multipart([b"", frame])
        answered = 0
        while sock.poll(2000):
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            assert "error" in reply
            assert reply["error"]["code"] in (-32700, -32600, -32601, -32602)
            answered += 1
            if answered == 50 * len(frames):
                break
        assert answered == 50 * len(frames)
        sock.close()
        assert vdsmd.call("Host.ping") is True
        assert fd_count(vdsmd.pid) <= fds_before + 2
    finally:
        ctx.term()


def test_oversized_frame_is_refused(vdsmd: Vdsmd) -> None:
    big = msgpack.packb({"id": 1, "method": "Host.ping", "params": {"x": "a" * (5 << 20)}})
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        sock = ctx.socket(zmq.REQ)
        sock.linger = 0
        sock.connect(vdsmd.api)
        sock.send(big)
        assert sock.poll(5000)
        reply = msgpack.unpackb(sock.recv())
        assert reply["error"]["code"] == -32600
        sock.close()
    finally:
        ctx.term()
    assert vdsmd.call("Host.ping") is True


def test_twenty_clients_five_hundred_requests_each(vdsmd: Vdsmd) -> None:
    clients, requests = 20, 500
    errors: list[str] = []
    ctx: zmq.Context[Any] = zmq.Context()

    def run(index: int) -> None:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(vdsmd.api)
        try:
            pending = set()
            for i in range(requests):
                request_id = f"c{index}-{i}"
                method = "Host.ping" if i % 2 else "Actors.list"
                sock.send_multipart([b"", msgpack.packb({"id": request_id, "method": method})])
                pending.add(request_id)
            while pending and sock.poll(20_000):
                reply = msgpack.unpackb(sock.recv_multipart()[-1])
                if reply.get("id") not in pending:
                    errors.append(f"client {index} got a reply not its own: {reply.get('id')}")
                    return
                if "error" in reply:
                    errors.append(f"client {index}: {reply['error']}")
                    return
                pending.discard(reply["id"])
            if pending:
                errors.append(f"client {index}: {len(pending)} replies missing")
        finally:
            sock.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
    finally:
        ctx.term()
    assert not errors, errors[:5]


def test_sigterm_stops_every_actor_and_exits_zero(tmp_path: Path) -> None:
    daemon = Vdsmd(tmp_path / "d")
    try:
        daemon.start()
        assert daemon.stop(timeout=30) == 0
        log = daemon.log()
        assert "vdsmd stopped" in log
        order = [line.split()[-2] for line in log.splitlines() if line.endswith(" stopped")
                 and "actors.supervisor" in line]
        assert order.index("/vms") < order.index("/storage") < order.index("/host")
        assert order.index("/host/stats") < order.index("/host/libvirt")
        assert not Path(daemon.api[len("ipc://"):]).exists() or True
    finally:
        daemon.kill()


def test_sigint_also_stops_cleanly(tmp_path: Path) -> None:
    daemon = Vdsmd(tmp_path / "d")
    try:
        daemon.start()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGINT)
        assert daemon.proc.wait(30) == 0
    finally:
        daemon.kill()


def test_bad_config_exits_with_a_clear_error(tmp_path: Path) -> None:
    daemon = Vdsmd(tmp_path / "d", config="[api]\nworkers = 'x'\n")
    with pytest.raises(RuntimeError, match="expected an integer"):
        daemon.start(timeout=20)


@pytest.mark.libvirt
@pytest.mark.root
def test_libvirtd_restart_is_survived_without_restarting_the_agent(tmp_path: Path) -> None:
    private = PrivateLibvirtd(tmp_path / "libvirt")
    private.start()
    try:
        with running_vdsmd(tmp_path / "d", libvirt_uri=private.uri) as vdsmd, \
                vdsmd.subscriber("|host|libvirt|") as sub:
            wait_for(lambda: _caps_or_none(vdsmd), 20, what="capabilities")
            pid = vdsmd.pid
            private.kill()
            _, down = next_event(sub, lambda t, p: p["connected"] is False, 20)
            assert down["reason"]
            with pytest.raises(ClientError) as e:
                vdsmd.call("Host.getCapabilities")
            assert e.value.code == 101
            assert "libvirt" in e.value.message
            assert vdsmd.call("Host.ping") is True
            assert "cpuIdle" in vdsmd.call("Host.getStats")
            private.start()
            next_event(sub, lambda t, p: p["connected"] is True, 30)
            assert _caps_or_none(vdsmd)
            assert vdsmd.pid == pid
            libvirt_actor = next(a for a in vdsmd.call("Actors.list")
                                 if a["path"] == "/host/libvirt")
            assert libvirt_actor["restarts"] == 0
    finally:
        private.kill()


def _caps_or_none(vdsmd: Vdsmd) -> dict[str, Any] | None:
    try:
        caps: dict[str, Any] = vdsmd.call("Host.getCapabilities")
        return caps
    except ClientError:
        return None


def test_client_reconnects_to_a_restarted_daemon(tmp_path: Path) -> None:
    daemon = Vdsmd(tmp_path / "d")
    try:
        daemon.start()
        with Client(daemon.api, timeout=10) as client:
            assert client.call("Host.ping") is True
            daemon.kill()
            daemon.start()
            assert client.call("Host.ping") is True
    finally:
        daemon.kill()


def test_a_second_daemon_on_the_same_endpoint_is_refused(vdsmd: Vdsmd, tmp_path: Path) -> None:
    second = Vdsmd(tmp_path / "second")
    second.api = vdsmd.api
    try:
        second.start_process()
        assert second.proc is not None
        assert second.proc.wait(30) == 1
        assert "another process is serving" in second.log()
    finally:
        second.kill()
    assert vdsmd.call("Host.ping") is True
