"""The test bed itself: hosts that reach each other, and nothing left after a bed, also when
its test failed or its test process died."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests import guest as g
from tests.harness import wait_for
from tests.testbed import Bed, netns
from tests.vm import agent as a

pytestmark = [pytest.mark.root, pytest.mark.libvirt, pytest.mark.timeout(180)]


def root_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


class Failed(Exception):
    pass


@pytest.mark.slow
def test_everything_goes_after_the_bed_also_when_the_test_fails(tmp_path: Path) -> None:
    links = root_links()
    bed = Bed(tmp_path / "bed")
    pids: list[int] = []
    with pytest.raises(Failed), bed:
        a_agent, b_agent = bed.start_agents()
        # the hosts are hosts: distinct libvirtds that reach each other over the bed's net
        assert bed.host("a").host_uuid != bed.host("b").host_uuid
        caps = bed.host("a").run("virsh", "-c", bed.host("b").remote_libvirt_uri,
                                 "capabilities", check=False)
        assert caps.returncode == 0, caps.stderr
        assert f"<uuid>{bed.host('b').host_uuid}</uuid>" in caps.stdout
        assert a_agent.call("Host.ping") is True and b_agent.call("Host.getVMList") == []
        vm_id = a.new_id()
        a_agent.call("VM.create", vmID=vm_id,
                     vmParams=a.guest_params(g.build_guest()))
        wait_for(lambda: bed.host("a").qemu_pids(), 60, what="qemu")
        for host in bed.hosts:
            pids += [host.anchor.pid, host.libvirtd.pid, host.virtlogd.pid,  # type: ignore[union-attr]
                     host.agent.pid, *host.qemu_pids()]  # type: ignore[union-attr]
        assert all(alive(p) for p in pids)
        raise Failed("the test fails here")
    wait_for(lambda: not any(alive(p) for p in pids), 30, what="every process of the bed")
    assert not any(netns.exists(h.netns) for h in bed.hosts) and not netns.exists(bed.switch)
    assert root_links() == links  # nothing of the bed ever was in the machine's namespace
    assert not bed.short.exists()  # libvirt's short directory went too (its logs were kept)
    assert (bed.hosts[0].workdir / "libvirt-log").is_dir()


def test_a_bed_whose_test_process_died_is_swept_by_the_next(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait(10)
    name = f"{netns.PREFIX}-{dead.pid}-1dead-a"
    netns.add(name)
    sleeper = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "600"])
    try:
        wait_for(lambda: sleeper.pid in netns.pids(name), 10, what="the sleeper")
        with Bed(tmp_path / "bed", names=("x",)):
            assert not netns.exists(name)
        assert sleeper.wait(10) == -9
    finally:
        sleeper.kill()
        if netns.exists(name):
            netns.delete(name)


def test_a_bed_that_fails_to_start_leaves_nothing(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bed = Bed(tmp_path / "bed")

    def broken(self: object) -> None:
        raise RuntimeError("no libvirtd today")

    monkeypatch.setattr(type(bed.hosts[1]), "start_libvirt", broken)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="no libvirtd today"):
        bed.start()
    assert time.monotonic() - started < 60
    assert not any(netns.exists(h.netns) for h in bed.hosts) and not netns.exists(bed.switch)
    assert bed.hosts[0].anchor is not None and not alive(bed.hosts[0].anchor.pid)
