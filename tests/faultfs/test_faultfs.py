"""faultfs for real: a FUSE mount served by its own process, used by other processes.

Every I/O below that matters runs in a separate ``dio`` process (``tests/faultfs/dio.py``)
doing O_DIRECT reads and writes, as vdsmd's probe or a lease keeper would. Each test is
bounded; the fixture unmounts and stops the server even when a test fails.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.faultfs.control import ControlError
from tests.faultfs.dio import TOP, Client
from tests.faultfs.mounting import (
    FaultFSMount,
    faultfs_mount,
    is_faultfs_mounted,
    mount_entry,
    unmount,
)
from tests.faultfs.plugin import fuse_missing

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.root, pytest.mark.timeout(60),
              pytest.mark.skipif(bool(fuse_missing()), reason=fuse_missing() or "ok")]


def block(value: int, size: int) -> str:
    return (bytes([value]) * size).hex()


def test_o_direct_512_and_4k_from_other_processes(faultfs: FaultFSMount) -> None:
    mnt, _control, src = faultfs
    path = mnt / "disk"
    with Client() as writer, Client() as reader:
        assert writer.call("write", path, 0, 4096, 0xAB)["written"] == 4096
        assert writer.call("write", path, 4096, 512, 0xCD)["written"] == 512
        assert writer.call("write", path, 8192 + 512, 512, 0xEF)["written"] == 512
        assert reader.call("read", path, 0, 4096)["data"] == block(0xAB, 4096)
        assert reader.call("read", path, 4096, 512)["data"] == block(0xCD, 512)
        assert reader.call("read", path, 8192, 1024)["data"] == (
            block(0, 512) + block(0xEF, 512))
    backing = (src / "disk").read_bytes()
    assert backing[:4096] == b"\xab" * 4096
    assert backing[4096:4608] == b"\xcd" * 512
    assert backing[8704:9216] == b"\xef" * 512
    assert len(backing) == 9216


def test_o_direct_cost(faultfs: FaultFSMount) -> None:
    """4 KiB O_DIRECT through the mount: measured (logged), not asserted (the host is shared)."""
    mnt, _control, _src = faultfs
    with Client() as client:
        result = client.call("bench", mnt / "bench", 4096, 500)
        plain = client.call("bench", faultfs.source / "plain", 4096, 500)
    log.warning("faultfs 4 KiB O_DIRECT median: write %.0f µs, read %.0f µs "
                "(the backing ext4 directly: write %.0f µs, read %.0f µs)",
                result["write"] * 1e6, result["read"] * 1e6, plain["write"] * 1e6,
                plain["read"] * 1e6)
    assert result["ok"] and (faultfs.source / "bench").stat().st_size == 4096


def test_eio_on_one_file_leaves_the_others_alone(faultfs: FaultFSMount) -> None:
    mnt, control, _src = faultfs
    with Client() as client:
        for name in ("a", "b"):
            client.call("write", mnt / name, 0, 4096, 1)
        rule = control.eio("a", "read")
        assert client.call("read", mnt / "a", 0, 4096) == {"ok": False, "errno": "EIO"}
        assert client.call("read", mnt / "b", 0, 4096)["data"] == block(1, 4096)
        assert client.call("write", mnt / "a", 0, 4096, 2)["ok"]  # only reads fail
        control.add("b", "write", errno="ENOSPC")
        assert client.call("write", mnt / "b", 0, 4096, 2) == {"ok": False, "errno": "ENOSPC"}
        assert control.remove(rule) is True
        assert client.call("read", mnt / "a", 0, 4096)["data"] == block(2, 4096)
    assert [r["glob"] for r in control.rules()] == ["b"]


def test_every_rule_change_is_in_force_for_the_next_operation(faultfs: FaultFSMount) -> None:
    mnt, control, _src = faultfs
    path = mnt / "f"
    with Client() as client:
        client.call("write", path, 0, 4096, 7)
        for round_ in range(20):
            op = ("read", "write", "open")[round_ % 3]
            rule = control.eio("f", op)
            failed = (client.call("read", path, 0, 4096) if op != "write"
                      else client.call("write", path, 0, 4096, 7))
            assert failed == {"ok": False, "errno": "EIO"}, (round_, op)
            control.remove(rule) if round_ % 2 else control.clear()
            assert client.call("read", path, 0, 4096)["data"] == block(7, 4096), round_
    stats = control.stats()
    assert stats["blocked"] == 0 and stats["ops"]["open"] >= 40


def test_count_applies_to_the_next_n_operations_only(faultfs: FaultFSMount) -> None:
    mnt, control, _src = faultfs
    with Client() as client:
        client.call("write", mnt / "f", 0, 512, 1)
        control.eio("f", "read", count=2)
        results = [client.call("read", mnt / "f", 0, 512)["ok"] for _ in range(4)]
    assert results == [False, False, True, True]
    assert control.rules() == []


def test_delay_seen_from_another_process_is_at_least_the_delay(faultfs: FaultFSMount) -> None:
    mnt, control, _src = faultfs
    with Client() as client:
        client.call("write", mnt / "slow", 0, 4096, 3)
        control.delay("slow", 0.5, "write", count=1)
        control.delay("slow", 0.3, "read", count=1)
        assert client.call("write", mnt / "slow", 0, 4096, 4)["seconds"] >= 0.5
        answer = client.call("read", mnt / "slow", 0, 4096)
        assert answer["seconds"] >= 0.3
        assert answer["data"] == block(4, 4096)
    assert control.rules() == []


def test_hang_blocks_until_clear_and_then_completes(faultfs: FaultFSMount) -> None:
    mnt, control, _src = faultfs
    with Client() as hung, Client() as other:
        hung.call("write", mnt / "h", 0, 4096, 5)
        other.call("write", mnt / "free", 0, 4096, 6)
        control.hang("h", "read")
        hung.send("read", mnt / "h", 0, 4096)
        control.wait_blocked(1)
        # held: other files, other operations on it and stat all answer meanwhile
        assert other.call("read", mnt / "free", 0, 4096, timeout=10)["data"] == block(6, 4096)
        assert other.call("write", mnt / "h", 4096, 4096, 8, timeout=10)["ok"]
        assert (mnt / "h").stat().st_size == 8192
        assert not hung.answered()
        assert control.stats()["blocked"] == 1
        assert control.clear() == 1
        answer = hung.answer(timeout=10)
    assert answer["data"] == block(5, 4096)
    assert control.stats()["blocked"] == 0


def test_many_held_callers_do_not_starve_the_others(faultfs: FaultFSMount) -> None:
    """More callers held than libfuse's default of 10 worker threads: the rest still run."""
    mnt, control, _src = faultfs
    (mnt / "held").write_bytes(b"h" * 4096)
    (mnt / "free").write_bytes(b"f" * 4096)
    control.hang("held", "read")
    held = [subprocess.Popen(["dd", f"if={mnt / 'held'}", "of=/dev/null", "bs=4096",
                              "count=1", "iflag=direct", "status=none"])
            for _ in range(16)]
    try:
        control.wait_blocked(16, timeout=30)
        with Client() as client:
            assert client.call("read", mnt / "free", 0, 4096, timeout=10)["data"] == (
                b"f" * 4096).hex()
        assert (mnt / "held").stat().st_size == 4096
        assert all(p.poll() is None for p in held)
        control.clear()
        assert [p.wait(20) for p in held] == [0] * 16
    finally:
        for p in held:
            p.kill()
            p.wait(10)


def test_removing_a_hang_rule_releases_only_its_callers(faultfs: FaultFSMount) -> None:
    mnt, control, _src = faultfs
    with Client() as first, Client() as second, Client() as writer:
        for name in ("x", "y"):
            writer.call("write", mnt / name, 0, 512, 9)
        rule_x = control.hang("x", "read")
        control.hang("y", "read")
        first.send("read", mnt / "x", 0, 512)
        second.send("read", mnt / "y", 0, 512)
        control.wait_blocked(2)
        control.remove(rule_x)
        assert first.answer(10)["ok"]
        assert not second.answered()
        control.clear()
        assert second.answer(10)["ok"]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_held_caller_dies_of_sigkill_only_once_released_unless_killable(
        faultfs: FaultFSMount) -> None:
    mnt, control, _src = faultfs
    (mnt / "f").write_bytes(b"k" * 4096)
    with Client() as stuck, Client() as killable:
        stuck.call("pid")
        killable.call("pid")
        control.hang("f", "read", pid=stuck.pid)
        control.hang("f", "read", pid=killable.pid, killable=True)
        stuck.send("read", mnt / "f", 0, 4096)
        killable.send("read", mnt / "f", 0, 4096)
        control.wait_blocked(2)
        stuck.proc.kill()
        killable.proc.kill()
        assert killable.proc.wait(10) == -9
        assert control.stats()["blocked"] == 1
        # the other one sleeps in the kernel, SIGKILL pending, until the read is released
        deadline = time.monotonic() + 10
        while _state(stuck.pid) != "D" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(stuck.pid) == "D"
        assert stuck.proc.poll() is None
        control.clear()
        assert stuck.proc.wait(10) == -9
    assert control.stats()["blocked"] == 0


def test_pid_rule_hits_only_that_process(faultfs: FaultFSMount) -> None:
    mnt, control, _src = faultfs
    with Client() as victim, Client() as bystander:
        victim.call("write", mnt / "shared", 0, 4096, 1)
        control.eio("shared", "read", pid=victim.pid)
        assert victim.call("read", mnt / "shared", 0, 4096)["errno"] == "EIO"
        assert bystander.call("read", mnt / "shared", 0, 4096)["ok"]


def test_concurrent_readers_see_their_data(faultfs: FaultFSMount) -> None:
    mnt, control, _src = faultfs
    files = 4
    with Client() as writer:
        for i in range(files):
            for block_no in range(8):
                writer.call("write", mnt / f"c{i}", block_no * 4096, 4096, i * 16 + block_no)
    control.hang("held", "read")
    (mnt / "held").write_bytes(b"h" * 512)
    clients = [Client() for _ in range(6)]
    try:
        clients[0].send("read", mnt / "held", 0, 512)  # one reader held all along
        control.wait_blocked(1)
        for round_ in range(8):
            for n, client in enumerate(clients[1:]):
                client.send("read", mnt / f"c{(n + round_) % files}", round_ * 4096, 4096)
            for n, client in enumerate(clients[1:]):
                expected = ((n + round_) % files) * 16 + round_
                assert client.answer(20)["data"] == block(expected, 4096), (round_, n)
        assert not clients[0].answered()
        control.clear()
        assert clients[0].answer(10)["data"] == (b"h" * 512).hex()
    finally:
        for client in clients:
            client.close()


def test_namespace_operations_pass_through(faultfs: FaultFSMount) -> None:
    mnt, control, src = faultfs
    (mnt / "d" / "e").mkdir(parents=True)
    (mnt / "d" / "e" / "f").write_bytes(b"hello")
    (mnt / "d" / "e" / "f").rename(mnt / "d" / "g")
    assert (src / "d" / "g").read_bytes() == b"hello"
    assert sorted(p.name for p in (mnt / "d").iterdir()) == ["e", "g"]
    (mnt / "d" / "link").symlink_to("g")
    assert (mnt / "d" / "link").readlink() == Path("g")
    assert (mnt / "d" / "link").read_bytes() == b"hello"
    os.link(mnt / "d" / "g", mnt / "d" / "hard")
    assert (mnt / "d" / "hard").stat().st_nlink == 2
    os.chmod(mnt / "d" / "g", 0o600)
    assert stat.S_IMODE((src / "d" / "g").stat().st_mode) == 0o600
    os.truncate(mnt / "d" / "g", 1 << 20)
    assert (src / "d" / "g").stat().st_size == 1 << 20
    fd = os.open(mnt / "d" / "g", os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 2 << 20)
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert (src / "d" / "g").stat().st_blocks * 512 >= 2 << 20
    dfd = os.open(mnt / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    assert os.statvfs(mnt).f_blocks == os.statvfs(src).f_blocks
    assert os.access(mnt / "d" / "g", os.R_OK | os.W_OK)
    # a file unlinked while open stays usable through its descriptor
    fd = os.open(mnt / "d" / "hard", os.O_RDWR)
    try:
        (mnt / "d" / "hard").unlink()
        os.pwrite(fd, b"still", 0)
        assert os.pread(fd, 5, 0) == b"still"
    finally:
        os.close(fd)
    # hard_remove: no .fuse_hidden files left behind
    assert sorted(p.name for p in (src / "d").iterdir()) == ["e", "g", "link"]
    rule = control.eio("d/*", "namespace")
    with pytest.raises(OSError, match="Input/output error"):
        (mnt / "d" / "g").rename(mnt / "d" / "moved")
    with pytest.raises(OSError, match="Input/output error"):
        (mnt / "d" / "new").mkdir()
    control.remove(rule)
    for p in (mnt / "d" / "link", mnt / "d" / "g"):
        p.unlink()
    (mnt / "d" / "e").rmdir()
    (mnt / "d").rmdir()
    assert list(src.iterdir()) == []


def test_control_refuses_bad_rules_and_keeps_serving(faultfs: FaultFSMount) -> None:
    _mnt, control, _src = faultfs
    for bad in ({"op": "mmap"}, {"effect": "explode"}, {"count": 0}, {"errno": "EWHAT"},
                {"probability": 1.5}):
        with pytest.raises(ControlError):
            control.add("f", **bad)  # type: ignore[arg-type]
    with pytest.raises(ControlError):
        control.add("/absolute")
    with pytest.raises(ControlError, match="unknown op"):
        control._request({"op": "format-disk"})
    assert control.rules() == []
    assert control.ping() == faultfs.pid


def test_loop_device_over_a_file_on_the_mount(faultfs: FaultFSMount) -> None:
    mnt, control, src = faultfs
    image = mnt / "disk.img"
    with image.open("wb") as f:
        f.truncate(8 << 20)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                            text=True, check=True, timeout=30).stdout.strip()
    try:
        with Client() as client:
            assert client.call("write", device, 1 << 20, 4096, 0x5A)["ok"]
            assert client.call("read", device, 1 << 20, 4096)["data"] == block(0x5A, 4096)
            with (src / "disk.img").open("rb") as f:
                f.seek(1 << 20)
                assert f.read(4096) == b"\x5a" * 4096
            control.eio("disk.img", "read")
            assert client.call("read", device, 2 << 20, 4096)["errno"] == "EIO"
            control.clear()
            assert client.call("read", device, 1 << 20, 4096)["ok"]
    finally:
        subprocess.run(["losetup", "--detach", device], timeout=30, check=False)
        for _ in range(100):  # detach is asynchronous while the device is busy
            if not Path(f"/sys/block/{Path(device).name}/loop/backing_file").exists():
                break
            time.sleep(0.05)


def test_server_crash_fails_blocked_callers_and_leaves_no_mount(tmp_path: Path) -> None:
    with faultfs_mount(tmp_path) as fs:
        (fs.mountpoint / "f").write_bytes(b"x" * 4096)
        with Client() as client:
            fs.control.hang("f", "read")
            client.send("read", fs.mountpoint / "f", 0, 4096)
            fs.control.wait_blocked(1)
            fs.kill()
            answer = client.answer(10)
            assert answer["ok"] is False
            assert answer["errno"] in ("ECONNABORTED", "ENOTCONN"), answer
            with pytest.raises(OSError) as e:
                (fs.mountpoint / "f").stat()
            assert e.value.strerror == "Transport endpoint is not connected"
            assert is_faultfs_mounted(fs.mountpoint)  # dead, still mounted: cleanup's job
    assert mount_entry(fs.mountpoint) is None
    assert fs.process.poll() is not None
    assert list(fs.mountpoint.iterdir()) == []


def test_cleanup_after_a_failing_test_releases_hangs_and_unmounts(tmp_path: Path) -> None:
    clients: list[Client] = []
    result: dict[str, object] = {}

    def held_reader(client: Client) -> None:
        result.update(client.answer(30))

    with pytest.raises(RuntimeError, match="the test failed"), faultfs_mount(tmp_path) as fs:
        (fs.mountpoint / "f").write_bytes(b"y" * 512)
        clients.append(Client())
        fs.control.hang("*", "any")
        clients[0].send("read", fs.mountpoint / "f", 0, 512)
        fs.control.wait_blocked(1)
        waiter = threading.Thread(target=held_reader, args=(clients[0],))
        waiter.start()
        raise RuntimeError("the test failed")
    try:
        waiter.join(30)
        assert result["ok"] is True  # released by the cleanup's clear(), before the unmount
        assert mount_entry(fs.mountpoint) is None
        assert fs.process.poll() is not None
    finally:
        for client in clients:
            client.close()


def test_a_killed_test_process_leaves_no_mount(tmp_path: Path) -> None:
    """The server outlives a SIGKILLed test runner only long enough to unmount itself."""
    script = ("import sys, time\n"
              "from pathlib import Path\n"
              "from tests.faultfs import faultfs_mount\n"
              "with faultfs_mount(Path(sys.argv[1])) as fs:\n"
              "    fs.control.hang('*', 'read')\n"
              "    print(fs.pid, flush=True)\n"
              "    time.sleep(600)\n")
    runner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, cwd=TOP,
                              env={**os.environ, "PYTHONPATH": str(TOP)})
    mountpoint = tmp_path / "faultfs"
    server = 0
    try:
        assert runner.stdout is not None
        server = int(runner.stdout.readline())
        assert is_faultfs_mounted(mountpoint)
        runner.kill()
        runner.wait(10)
        deadline = time.monotonic() + 20
        while (is_faultfs_mounted(mountpoint) or _alive(server)) and (
                time.monotonic() < deadline):
            time.sleep(0.05)
        assert not is_faultfs_mounted(mountpoint)
        assert not _alive(server)
    finally:
        runner.kill()
        runner.wait(10)
        if server and _alive(server):
            os.kill(server, signal.SIGKILL)
        unmount(mountpoint)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, reaped by init soon, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
