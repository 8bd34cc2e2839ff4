"""A guest writing its serial console without end: the log is capped and rotated (by
virtlogd) and lives outside the state directory, which the agent keeps writing."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import guest as g
from tests.harness import running_vdsmd, wait_for
from tests.vm import agent as a

pytestmark = [pytest.mark.libvirt, pytest.mark.root]

MAX_SIZE = 512 << 10  # virtlogd.conf max_size of the test's virtlogd
BACKUPS = 2  # its max_backups
CAP = (BACKUPS + 1) * MAX_SIZE  # 1.5 MiB: more than the 1 MiB state filesystem holds
LINE = "0123456789" * 7
# The guest's /init is replaced by a shell that prints numbered lines as fast as it can.
FLOOD = (f'{g.BASE_CMDLINE} rdinit=/bin/busybox -- sh -c '
         f'"i=0; while :; do i=$((i+1)); echo $i-{LINE}; done"')
COUNTED = re.compile(rf"(\d+)-{LINE}\r?\n")  # the tty makes \n \r\n


@pytest.fixture
def capped_libvirtd(tmp_path: Path) -> Iterator[a.GuestLibvirtd]:
    conf = tmp_path / "virtlogd.conf"
    conf.write_text(f"max_size = {MAX_SIZE}\nmax_backups = {BACKUPS}\n")
    libvirtd = a.GuestLibvirtd(tmp_path / "libvirt", virtlogd_conf=conf)
    try:
        libvirtd.start()
        yield libvirtd
    finally:
        libvirtd.close()


def written(log: Path) -> int:
    """At least how many bytes the guest has written (from the last numbered line)."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 4096))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return 0
    numbers = [int(n) for n in COUNTED.findall(tail)]
    return max(numbers, default=0) * (len(LINE) + 2)


def full(path: Path) -> bool:
    return shutil.disk_usage(path).free < 64 * 1024


@pytest.mark.timeout(300)
def test_a_flooding_guest_cannot_grow_its_log_past_the_cap_nor_fill_the_state(
    small_state: Path, tmp_path: Path, capped_libvirtd: a.GuestLibvirtd,
    guest_image: g.GuestImage,
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    with running_vdsmd(tmp_path / "vdsmd", libvirt_uri=capped_libvirtd.uri,
                       config=a.config(hooks)) as vdsmd:
        assert vdsmd.state_dir == small_state
        a.wait_ready(vdsmd)
        vm_id = a.new_id()
        vdsmd.call("VM.create", vmID=vm_id, vmParams=a.guest_params(guest_image,
                                                                    kernelArgs=FLOOD))
        log = a.serial_log(vdsmd, vm_id)
        assert not log.is_relative_to(small_state)
        wait_for(lambda: written(log) > CAP + MAX_SIZE or full(small_state), 240,
                 interval=0.5, what="the guest to write more than the cap")
        assert not full(small_state)
        logs = sorted(log.parent.glob(f"{vm_id}.log*"))
        assert [p.name for p in logs][:2] == [f"{vm_id}.log", f"{vm_id}.log.0"]  # rotated
        assert len(logs) <= BACKUPS + 1
        assert sum(p.stat().st_size for p in logs) <= CAP
        assert shutil.disk_usage(small_state).used < MAX_SIZE  # nothing of it in the state
        assert not list(small_state.rglob("*.log*"))
        # The agent still writes its state: another VM starts (its index entry is written).
        other = a.new_id()
        assert vdsmd.call("VM.create", vmID=other, vmParams=a.bare_params())["vmID"] == other
        for done in (vm_id, other):
            assert vdsmd.call("VM.destroy", vmID=done) is True
        assert log.exists()  # kept after the VM is gone, for a post-mortem
