"""Live migration between two hosts of the test bed, through the agents' APIs.

Every host is a network namespace with its own libvirtd and vdsmd (tests/testbed); the
agents talk to each other over tcp with CURVE, libvirt migrates peer to peer. The guest is
the tiny TCG test guest; in ``count`` mode it prints a counter with its boot id, so a guest
that keeps counting with the same boot id on the other host migrated live (no reboot).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import pytest

from messaging.client import Subscriber
from tests import guest as g
from tests.harness import wait_for
from tests.integration import mighelp as m
from tests.testbed import Bed, BedAgent
from tests.vm import agent as a

pytestmark = [pytest.mark.libvirt, pytest.mark.root, pytest.mark.slow,
              pytest.mark.xdist_group("two-hosts")]

VENV_BIN = Path(sys.executable).parent
MIB = 1 << 20
BALLAST = 40  # MiB of guest memory that a migration really moves: 40 s at 1 MiB/s


@pytest.fixture(scope="module")
def image() -> g.GuestImage:
    return g.build_guest()


def counting(log: Path, offset: int = 0, *, more_than: int = 0) -> list[tuple[str, int]]:
    """The guest's counts in ``log`` (from ``offset``), once there are more than
    ``more_than`` of them."""
    found: list[tuple[str, int]] = wait_for(
        lambda: (c := g.counts(log, offset)) and len(c) > more_than and c,
        60, interval=0.1, what=f"the guest to count in {log}")
    return found


@pytest.mark.timeout(300)
def test_a_counting_guest_migrates_there_and_back_paused_without_a_reboot(
        bed: Bed, image: g.GuestImage) -> None:
    a_agent, b_agent = bed.start_agents()
    # 24 MiB that must move at 8 MiB/s: 3 s of progress samples on the way, however loaded
    vm_id = m.start_guest(a_agent, image, ballast=24)
    m.wait_booted(a_agent, vm_id)
    log_a, log_b = m.serial_log(a_agent, vm_id), m.serial_log(b_agent, vm_id)
    boot = counting(log_a, more_than=2)[-1][0]
    with a_agent.subscriber("|virt|VM_migration_status|", "|jobs|status|") as source, \
            b_agent.subscriber("|virt|VM_status|") as destination:
        assert a_agent.call("VM.migrate", vmID=vm_id, dst="b", downtime=300,
                            maxBandwidth=8) is True
        done = m.wait_migration(a_agent, vm_id)
        assert done["status"] == "done", done
        assert done["progress"] == 100 and done["dst"] == "b"
        # the downtime the destination measured follows the outcome
        done = wait_for(lambda: "downtime" in (x := m.migration(a_agent, vm_id)) and x, 30,
                        what="the downtime")
        assert isinstance(done["downtime"], int), done
        # up to the last progress event: it follows the downtime's record, and the thread
        # that publishes it may not have run yet
        events = _events(source, lambda t, p: t.startswith("|virt|VM_migration_status|")
                         and p["status"] == "done")
        progress = [p for t, p in events if t.startswith("|virt|VM_migration_status|")]
        assert progress and progress[-1]["status"] == "done", progress
        assert any(0 < p["progress"] < 100 for p in progress), progress  # samples on the way
        fields = {"dataRemaining", "bandwidth", "iteration", "elapsed"}
        assert all(fields <= p.keys() for p in progress[:-1]), progress
        assert progress[-1]["downtime"] == done["downtime"]
        jobs = [p for t, p in events if t == f"|jobs|status|{done['jobID']}"]
        assert [j["taskState"] for j in jobs][-1] == "finished"
        assert jobs[-1]["taskResult"] == "success" and jobs[-1]["job_type"] == "migrate_out"
        seen = [p["status"] for _, p in _events(destination)]
        assert seen[0] == "Migration Destination" and seen[-1] == "Up", seen

    down = m.status(a_agent, vm_id)
    assert down is not None and down["status"] == "Down", down
    assert down["exitReason"] == "migrated" and down["exitCode"] == 0
    assert m.status(b_agent, vm_id)["status"] == "Up"  # type: ignore[index]
    assert m.where(bed, vm_id) == ["b"]
    arrived = m.migration(b_agent, vm_id)
    assert arrived["status"] == "done" and arrived["job_type"] == "migrate_in"
    assert arrived["jobID"] == done["jobID"]
    assert m.jobs(b_agent)[done["jobID"]]["status"] == "done"
    last_a = g.counts(log_a)[-1][1]
    there = counting(log_b, more_than=3)
    assert {b for b, _ in there} == {boot}, "the guest rebooted on b"
    assert last_a < there[0][1] <= last_a + 3, (last_a, there[:3])
    assert g.MARKER_BOOTED not in log_b.read_text()

    # and back, paused: a forgets its Down copy first (as the engine would), then b migrates
    # the paused guest, which arrives paused and goes on counting once continued
    assert a_agent.call("VM.destroy", vmID=vm_id) is True
    assert b_agent.call("VM.pause", vmID=vm_id) is True
    m.wait_status(b_agent, vm_id, "Paused")
    offset = log_a.stat().st_size
    assert b_agent.call("VM.migrate", vmID=vm_id, dst=f"{bed.host('a').address}:54321")
    back = m.wait_migration(b_agent, vm_id)
    assert back["status"] == "done" and back["jobID"] != done["jobID"], back
    assert m.wait_status(a_agent, vm_id, "Paused")["pauseCode"] == "NOERR"
    assert m.wait_migration(a_agent, vm_id)["status"] == "done"  # arrived, paused
    assert m.where(bed, vm_id) == ["a"]
    assert a_agent.call("VM.cont", vmID=vm_id) is True
    m.wait_status(a_agent, vm_id, "Up")
    last_b = g.counts(log_b)[-1][1]
    again = counting(log_a, offset, more_than=3)
    assert {b for b, _ in again} == {boot}, "the guest rebooted on a"
    assert last_b < again[0][1] <= last_b + 3, (last_b, again[:3])


@pytest.mark.timeout(300)
def test_a_migrated_guests_display_arrives_locked(bed: Bed, image: g.GuestImage) -> None:
    """The destination defines the domain from its own XML, its display locked as after a
    create or a restore: the source's ticket does not open it there, a new one does."""
    a_agent, b_agent = bed.start_agents()
    vm_id = m.start_guest(a_agent, image, display="vnc")
    m.wait_booted(a_agent, vm_id)
    assert a_agent.call("VM.setTicket", vmID=vm_id, password="on-a", ttl=3600) is True
    assert _display(bed, "a", vm_id)[0] == "on-a"
    assert a_agent.call("VM.migrate", vmID=vm_id, dst="b") is True
    assert m.wait_migration(a_agent, vm_id)["status"] == "done"
    m.wait_status(b_agent, vm_id, "Up")
    assert m.where(bed, vm_id) == ["b"]
    password, valid_to = _display(bed, "b", vm_id)
    assert password and password != "on-a", "the display arrived open with the old ticket"
    assert valid_to and valid_to < time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), valid_to
    assert b_agent.call("VM.setTicket", vmID=vm_id, password="on-b", ttl=60) is True
    assert _display(bed, "b", vm_id)[0] == "on-b"
    assert b_agent.call("VM.destroy", vmID=vm_id) is True


def _display(bed: Bed, host: str, vm_id: str) -> tuple[str | None, str | None]:
    """The password of the VM's VNC display on ``host`` and until when it is valid."""
    conn = bed.host(host).connect()
    try:
        xml = conn.lookupByUUIDString(vm_id).XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
    finally:
        conn.close()
    graphics = ET.fromstring(xml).find("devices/graphics")
    assert graphics is not None and graphics.get("type") == "vnc"
    return graphics.get("passwd"), graphics.get("passwdValidTo")


def _restarts(agent: Any, vm_id: str) -> int:
    found = [x for x in agent.call("Actors.list") if x["path"] == f"/vms/{vm_id}"]
    return int(found[0]["restarts"]) if found and found[0]["state"] == "running" else -1


def _events(sub: Subscriber, last: Any = None,
            timeout: float = 30.0) -> list[tuple[str, dict[str, Any]]]:
    """The events received so far: up to one for which ``last(topic, payload)`` holds
    (within ``timeout``), then until none came for 0.5 s (at most 1000)."""
    found: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while last is not None and not (found and last(*found[-1])):
        left = deadline - time.monotonic()
        event = sub.receive(left) if left > 0 else None
        if event is None:
            raise TimeoutError(f"no such event within {timeout} s; got {found}")
        found.append(event)
    while (event := sub.receive(0.5)) is not None and len(found) < 1000:
        found.append(event)
    return found


def vdsm_client(agent: BedAgent, out: Path, *args: str) -> subprocess.Popen[str]:
    """vdsm-client on ``agent``'s host (its network, over CURVE), started; stdout in
    ``out``.out, stderr in ``out``.err."""
    command = agent.host.enter_command(
        str(VENV_BIN / "vdsm-client"), "--api", agent.api,
        "--curve-secret", str(agent.curve.secret_file),
        "--curve-server-key", str(agent.curve.server_public_file), *args)
    with out.with_suffix(".out").open("w") as stdout, out.with_suffix(".err").open("w") as err:
        return subprocess.Popen(command, stdout=stdout, stderr=err, text=True)


def printed(proc: subprocess.Popen[str], out: Path, text: str) -> None:
    """Until the vdsm-client started with ``out`` printed ``text`` on stderr (it must not
    end before)."""
    err = out.with_suffix(".err")

    def found() -> bool:
        assert proc.poll() is None, f"vdsm-client ended ({proc.returncode}): {err.read_text()}"
        return text in err.read_text()

    wait_for(found, 60, interval=0.1, what=f"vdsm-client to print {text!r} in {err}")


@pytest.mark.timeout(240)
def test_cancel_mid_way_leaves_the_vm_running_on_the_source(
        bed: Bed, image: g.GuestImage, tmp_path: Path) -> None:
    a_agent, b_agent = bed.start_agents()
    vm_id = m.start_guest(a_agent, image, ballast=BALLAST)
    m.wait_booted(a_agent, vm_id)
    # 1 MiB/s: the migration is still moving memory when it is cancelled. It is started
    # by vdsm-client --wait (which names the job), and followed by Job wait too.
    migrating = vdsm_client(a_agent, tmp_path / "migrate", "VM", "migrate", f"vmID={vm_id}",
                            "dst=b", "maxBandwidth=1", "--wait")
    following: subprocess.Popen[str] | None = None
    try:
        printed(migrating, tmp_path / "migrate", "job ")  # the verb answered: a job is recorded
        moving = m.wait_moving(a_agent, vm_id)
        following = vdsm_client(a_agent, tmp_path / "follow", "Job", "wait", moving["jobID"])
        for proc, name in ((migrating, "migrate"), (following, "follow")):
            printed(proc, tmp_path / name, " MiB to go")  # the memory still to move
        _cancel_mid_way(bed, a_agent, b_agent, vm_id, moving)
        prefix = f"job {moving['jobID']} migrate_out of VM {vm_id}: "
        for proc, out in ((migrating, tmp_path / "migrate"), (following, tmp_path / "follow")):
            assert proc.wait(60) == 5, out.with_suffix(".err").read_text()
            job = json.loads(out.with_suffix(".out").read_text())
            assert (job["id"], job["status"]) == (moving["jobID"], "aborted"), job
            lines = out.with_suffix(".err").read_text().splitlines()
            assert all(line.startswith(prefix) for line in lines), lines
            assert lines[-1] == f"{prefix}aborted (code 12): {job['error']['message']}"
            assert any(" MiB to go" in line for line in lines[:-1]), lines
    finally:
        for proc in (migrating, following):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _cancel_mid_way(bed: Bed, a_agent: BedAgent, b_agent: BedAgent, vm_id: str,
                    moving: dict[str, Any]) -> None:
    assert 0 <= moving["progress"] < 100 and moving["dataRemaining"] > 0
    assert m.status(a_agent, vm_id)["status"] == "Migration Source"  # type: ignore[index]
    assert m.status(b_agent, vm_id)["status"] == "Migration Destination"  # type: ignore[index]
    # a careless client meanwhile: a second migration, a pause: refused, nothing changes
    assert a.error(lambda: a_agent.call("VM.migrate", vmID=vm_id, dst="b")).code == 5
    assert a.error(lambda: a_agent.call("VM.pause", vmID=vm_id)).code == 5
    assert a.error(lambda: b_agent.call("VM.pause", vmID=vm_id)).code == 5
    assert m.migration(a_agent, vm_id)["jobID"] == moving["jobID"]
    assert a_agent.call("VM.migrateCancel", vmID=vm_id) is True
    ended = m.wait_migration(a_agent, vm_id)
    assert ended["status"] == "aborted", ended
    assert ended["error"]["code"] == 12 and "cancelled" in ended["error"]["message"]
    m.wait_status(a_agent, vm_id, "Up")
    assert m.where(bed, vm_id) == ["a"]
    log = m.serial_log(a_agent, vm_id)
    last = g.counts(log)[-1][1]
    counting(log, more_than=len(g.counts(log)))  # it goes on counting here
    assert g.counts(log)[-1][1] > last
    # the destination kept nothing; its job says why
    wait_for(lambda: m.status(b_agent, vm_id) is None, 30, what="b to drop its copy")
    m.nothing_of(bed, "b", vm_id)
    assert m.migration(b_agent, vm_id)["status"] in ("failed", "aborted")
    # a second cancel has nothing to cancel
    e = a.error(lambda: a_agent.call("VM.migrateCancel", vmID=vm_id))
    assert e.code == 82, e


@pytest.mark.timeout(240)
def test_the_limits_and_auto_converge_reach_qemu_and_change_in_flight(
        bed: Bed, image: g.GuestImage) -> None:
    """What VM.migrate and VM.migrateChangeParams ask is what the source's libvirt and QEMU
    migrate with: read back from them (not from the agent) while the guest moves."""
    a_agent, b_agent = bed.start_agents()
    vm_id = m.start_guest(a_agent, image, ballast=BALLAST)
    m.wait_booted(a_agent, vm_id)
    assert a_agent.call("VM.migrate", vmID=vm_id, dst="b", maxBandwidth=1, downtime=250,
                        autoConverge=True) is True
    moving = m.wait_moving(a_agent, vm_id)
    conn = bed.host("a").connect()
    try:
        dom = conn.lookupByUUIDString(vm_id)
        assert _auto_converge(dom) is True
        wait_for(lambda: (dom.migrateGetMaxSpeed(0), dom.migrateGetMaxDowntime(0)) == (1, 250),
                 30, interval=0.2, what="the first limits in force")
        # the progress says how fast it moves, and in which pass over the memory
        sample = wait_for(lambda: (x := m.migration(a_agent, vm_id))["bandwidth"] > 0 and x,
                          30, interval=0.2, what="a bandwidth in the migration's progress")
        assert sample["iteration"] >= 1 and sample["dataRemaining"] > 0, sample
        assert 0 <= sample["progress"] < 100 and sample["elapsed"] > 0, sample
        # in flight: both limits change; then only the downtime
        assert a_agent.call("VM.migrateChangeParams", vmID=vm_id,
                            params={"maxBandwidth": 2, "downtime": 700}) is True
        wait_for(lambda: (dom.migrateGetMaxSpeed(0), dom.migrateGetMaxDowntime(0)) == (2, 700),
                 30, interval=0.2, what="the changed limits in force")
        assert a_agent.call("VM.migrateChangeParams", vmID=vm_id,
                            params={"downtime": 450}) is True
        wait_for(lambda: dom.migrateGetMaxDowntime(0) == 450, 30, interval=0.2,
                 what="the changed downtime in force")
        assert dom.migrateGetMaxSpeed(0) == 2
        # nonsense is refused and changes nothing
        for params in ({}, {"downtime": 0}, {"maxBandwidth": -1}, {"downtime": "fast"}):
            e = a.error(lambda p=params: a_agent.call("VM.migrateChangeParams", vmID=vm_id,
                                                      params=p))
            assert e.code == -32602, (params, e)
        assert (dom.migrateGetMaxSpeed(0), dom.migrateGetMaxDowntime(0)) == (2, 450)
        assert m.migration(a_agent, vm_id)["jobID"] == moving["jobID"]
        assert a_agent.call("VM.migrateCancel", vmID=vm_id) is True
        assert m.wait_migration(a_agent, vm_id)["status"] == "aborted"
    finally:
        conn.close()
    m.wait_status(a_agent, vm_id, "Up")
    wait_for(lambda: m.status(b_agent, vm_id) is None, 30, what="b to drop its copy")
    assert m.where(bed, vm_id) == ["a"]
    # a migration without autoConverge leaves QEMU's capability off
    assert a_agent.call("VM.migrate", vmID=vm_id, dst="b", maxBandwidth=1) is True
    m.wait_moving(a_agent, vm_id)
    conn = bed.host("a").connect()
    try:
        assert _auto_converge(conn.lookupByUUIDString(vm_id)) is False
    finally:
        conn.close()
    assert a_agent.call("VM.migrateCancel", vmID=vm_id) is True
    assert m.wait_migration(a_agent, vm_id)["status"] == "aborted"


def _auto_converge(dom: Any) -> bool:
    """Whether the domain's QEMU has its auto-converge migration capability on (asked
    through libvirt's QEMU monitor passthrough)."""
    answer = json.loads(libvirt_qemu.qemuMonitorCommand(
        dom, '{"execute": "query-migrate-capabilities"}', 0))
    found = [c["state"] for c in answer["return"] if c["capability"] == "auto-converge"]
    assert len(found) == 1, answer
    return bool(found[0])


@pytest.mark.timeout(240)
def test_a_destination_down_or_refusing_is_a_clear_error_at_once(
        bed: Bed, image: g.GuestImage) -> None:
    fast = {"migration": {"connect_timeout": 3.0}}
    a_agent, b_agent = bed.start_agents(a=fast)
    vm_id = m.start_guest(a_agent, image, "idle")
    m.wait_booted(a_agent, vm_id)

    b_agent.close()  # down: nothing listens
    started = time.monotonic()
    e = a.error(lambda: a_agent.call("VM.migrate", vmID=vm_id, dst="b"))
    assert e.code == 10 and "connection refused" in e.message, e
    assert m.elapsed(started) < 10
    assert m.status(a_agent, vm_id)["status"] == "Up"  # type: ignore[index]
    assert m.jobs(a_agent) == {}

    # refusing: b does not authorise a's key any more
    (bed.authorized_dir(bed.host("b")) / "a.key").unlink()
    b_agent = bed.new_agent(bed.host("b"))
    b_agent.start()
    started = time.monotonic()
    e = a.error(lambda: a_agent.call("VM.migrate", vmID=vm_id, dst="b"))
    assert e.code == 10 and "does not authorise this host's key" in e.message, e
    assert m.elapsed(started) < 10
    assert m.status(a_agent, vm_id)["status"] == "Up"  # type: ignore[index]

    # a destination that is not a peer, or a dst of another form, is refused as a param
    for dst in ("c", "tcp://10.77.0.9:54321", "qemu+tcp://10.77.0.2/system"):
        e = a.error(lambda d=dst: a_agent.call("VM.migrate", vmID=vm_id, dst=d))
        assert e.code == -32602 and e.data == {"param": "dst"}, (dst, e)
    assert m.where(bed, vm_id) == ["a"] and m.jobs(a_agent) == {}


@pytest.mark.timeout(300)
def test_a_destination_that_cannot_prepare_keeps_nothing_and_the_source_keeps_the_vm(
        bed: Bed, image: g.GuestImage) -> None:
    disk = bed.shared / "disk.img"
    with disk.open("wb") as f:
        f.truncate(16 * MIB)
    host_b = bed.host("b")
    own = {"vm": {"image_dirs": [str(g.default_cache_dir().absolute()),
                                 str(host_b.workdir)]}}  # not the shared directory
    a_agent, b_agent = bed.start_agents(b=own)
    vm_id = a.new_id()
    params = a.guest_params(image, "count", drives=[{"path": str(disk), "iface": "virtio"}])
    a_agent.call("VM.create", vmID=vm_id, vmParams=params)
    m.wait_booted(a_agent, vm_id)

    def refused(why: str) -> None:
        a_agent.call("VM.migrate", vmID=vm_id, dst="b")
        ended = m.wait_migration(a_agent, vm_id)
        assert ended["status"] == "failed" and ended["error"]["code"] == 12, ended
        assert why in ended["error"]["message"], ended
        m.wait_status(a_agent, vm_id, "Up")
        assert m.where(bed, vm_id) == ["a"]
        m.nothing_of(bed, "b", vm_id)

    # 1. its storage: the disk is not in b's image_dirs (refused before anything is made)
    refused("not in [vm] image_dirs")
    assert a.error(lambda: m.migration(b_agent, vm_id)).code == 1
    # 2. its hook fails after the VM was prepared there (record, log): all of it goes
    b_agent = bed.new_agent(host_b)
    b_agent.start().wait_ready()
    marker = host_b.workdir / "hook-ran"
    a.hook(host_b.workdir / "hooks", "before_vm_migrate_destination", "10-refuse",
           f"touch {marker}\necho 'no room here' >&2\nexit 1\n")
    refused("no room here")
    assert marker.exists()
    assert m.migration(b_agent, vm_id)["status"] == "failed"
    # 3. without the hook it migrates, disk and all
    (host_b.workdir / "hooks" / "before_vm_migrate_destination" / "10-refuse").unlink()
    a_agent.call("VM.migrate", vmID=vm_id, dst="b")
    assert m.wait_migration(a_agent, vm_id)["status"] == "done"
    assert m.where(bed, vm_id) == ["b"]


STORAGE = {"storage": {"monitor_interval": 1, "monitor_timeout": 2},
           "spm": {"lease_time": 3, "renew_interval": 0.5, "io_timeout": 0.5,
                   "agent_timeout": 2, "heartbeat_interval": 0.2}}


def _connect_pool(agent: BedAgent, path: Path, sp: str, sd: str, host_id: int) -> None:
    """The host connects the shared domain directory and the pool (as a manager does)."""
    found = agent.call("StoragePool.connectStorageServer", storagepoolID=sp,
                       domainType="localfs",
                       connectionParams=[{"id": a.new_id(), "connection": str(path)}])
    assert found[0]["status"] == 0, found
    assert agent.call("StoragePool.connect", storagepoolID=sp, hostID=host_id,
                      masterSdUUID=sd, masterVersion=1) is True


def _task(agent: BedAgent, task_id: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: (t := agent.call("Task.getStatus", taskID=task_id))["taskState"] == "finished"
        and t, 60, interval=0.1, what=f"task {task_id}")
    return found


def _disks(host: Any, vm_id: str) -> list[str]:
    """The source files of the domain's disks on ``host``'s libvirtd."""
    conn = host.connect()
    try:
        xml = conn.lookupByUUIDString(vm_id).XMLDesc(0)
    finally:
        conn.close()
    return [s.get("file") for s in ET.fromstring(xml).findall("./devices/disk/source")]


@pytest.mark.timeout(300)
def test_a_vm_on_a_pool_volume_migrates_once_the_destination_can_prepare_it(
        bed: Bed, image: g.GuestImage) -> None:
    """The destination prepares the VM's storage-domain volume itself before the guest
    comes; a destination that cannot (not connected to the pool) fails the migration with
    nothing left there, and the VM goes on running on the source."""
    a_agent, b_agent = bed.start_agents(a=STORAGE, b=STORAGE)
    domain_dir = bed.shared / "sd"
    domain_dir.mkdir()
    sp, sd, img, vol = (a.new_id() for _ in range(4))
    result = a_agent.call("StoragePool.connectStorageServer", storagepoolID=sp,
                          domainType="localfs",
                          connectionParams=[{"id": a.new_id(), "connection": str(domain_dir)}])
    assert result[0]["status"] == 0, result
    assert a_agent.call("StorageDomain.create", storagedomainID=sd, domainType="localfs",
                        typeArgs=str(domain_dir), name="shared", domainClass="data") is True
    assert a_agent.call("StoragePool.create", storagepoolID=sp, name="pool", masterSdUUID=sd,
                        masterVersion=1, domainList=[sd]) is True
    assert a_agent.call("StoragePool.connect", storagepoolID=sp, hostID=1, masterSdUUID=sd,
                        masterVersion=1) is True
    assert _task(a_agent, a_agent.call("StoragePool.spmStart",
                                       storagepoolID=sp))["taskResult"] == "success"
    created = a_agent.call("Volume.create", storagepoolID=sp, storagedomainID=sd,
                           imageID=img, volumeID=vol, size=64 * MIB, volFormat="cow",
                           preallocate="sparse")
    assert _task(a_agent, created)["taskResult"] == "success"
    vm_id = a.new_id()
    drive = {"poolID": sp, "domainID": sd, "imageID": img, "volumeID": vol, "format": "cow",
             "iface": "virtio"}
    a_agent.call("VM.create", vmID=vm_id, vmParams=a.guest_params(image, "count",
                                                                    drives=[drive]))
    m.wait_booted(a_agent, vm_id)
    boot = counting(m.serial_log(a_agent, vm_id))[-1][0]
    on_a = _disks(bed.host("a"), vm_id)
    assert len(on_a) == 1 and vol in on_a[0], on_a

    assert _holders(a_agent, sd, img, vol) == [f"vm-{vm_id}"]

    def refused(why: str) -> None:
        a_agent.call("VM.migrate", vmID=vm_id, dst="b")
        ended = m.wait_migration(a_agent, vm_id)
        assert ended["status"] == "failed" and ended["error"]["code"] == 12, ended
        assert why in ended["error"]["message"], ended
        m.wait_status(a_agent, vm_id, "Up")
        assert m.where(bed, vm_id) == ["a"]
        m.nothing_of(bed, "b", vm_id)
        assert m.migration(b_agent, vm_id)["status"] == "failed"
        assert _holders(b_agent, sd, img, vol) == []  # b holds no volume for it
        assert _holders(a_agent, sd, img, vol) == [f"vm-{vm_id}"]

    # 1. b is not connected to the pool: it cannot prepare the volume
    refused(sp)
    # 2. connected, b prepares the volume, then its hook fails: b tears the volume down
    _connect_pool(b_agent, domain_dir, sp, sd, 2)
    host_b = bed.host("b")
    marker = host_b.workdir / "hook-ran"
    a.hook(host_b.workdir / "hooks", "before_vm_migrate_destination", "10-refuse",
           f"touch {marker}\necho 'no room here' >&2\nexit 1\n")
    refused("no room here")
    assert marker.exists()
    # 3. without the hook the guest moves with its disk: b's own path to the shared volume
    (host_b.workdir / "hooks" / "before_vm_migrate_destination" / "10-refuse").unlink()
    a_agent.call("VM.migrate", vmID=vm_id, dst="b")
    assert m.wait_migration(a_agent, vm_id)["status"] == "done"
    assert m.where(bed, vm_id) == ["b"]
    on_b = _disks(host_b, vm_id)
    assert len(on_b) == 1 and str(b_agent.workdir) in on_b[0], on_b
    assert Path(on_b[0]).resolve() == Path(on_a[0]).resolve()  # the same shared volume
    assert {b for b, _ in counting(m.serial_log(b_agent, vm_id), more_than=2)} == {boot}
    assert _holders(b_agent, sd, img, vol) == [f"vm-{vm_id}"]
    # the source's VM is Down (migrated) and keeps its volume until it is destroyed, as
    # any Down VM does (vdsm likewise: the engine destroys the source's copy)
    assert m.wait_status(a_agent, vm_id, "Down")["exitReason"] == "migrated"
    assert a_agent.call("VM.destroy", vmID=vm_id) is True
    wait_for(lambda: _holders(a_agent, sd, img, vol) == [], 30, what="a to tear down")
    assert _holders(b_agent, sd, img, vol) == [f"vm-{vm_id}"]


def _holders(agent: BedAgent, sd: str, img: str, vol: str) -> list[str]:
    """Who holds the volume prepared on the agent's host (its run dir's records)."""
    records = agent.workdir / "run" / "storage" / "prepared" / sd / img / vol
    return sorted(p.name for p in records.iterdir()) if records.is_dir() else []


@pytest.mark.timeout(300)
def test_the_source_agent_killed_mid_migration_recovers_where_the_vm_is(
        bed: Bed, image: g.GuestImage) -> None:
    a_agent, b_agent = bed.start_agents()
    vm_id = m.start_guest(a_agent, image, ballast=BALLAST)
    m.wait_booted(a_agent, vm_id)
    boot = counting(m.serial_log(a_agent, vm_id))[-1][0]
    a_agent.call("VM.migrate", vmID=vm_id, dst="b", maxBandwidth=1)
    job = m.wait_moving(a_agent, vm_id)["jobID"]
    a_agent.kill()  # SIGKILL: libvirtd goes on migrating, at 1 MiB/s

    a_agent = bed.new_agent(bed.host("a"))
    a_agent.start().wait_ready()
    # the restarted agent found the migration and watches it again
    again = m.wait_moving(a_agent, vm_id)
    assert again["jobID"] == job and again["status"] == "running", again
    assert m.status(a_agent, vm_id)["status"] == "Migration Source"  # type: ignore[index]
    # the VM's actor fails and is restarted: it takes the running migration over
    restarts = _restarts(a_agent, vm_id)
    a_agent.call("Actors.crash", path=f"/vms/{vm_id}", reason="drill")
    wait_for(lambda: _restarts(a_agent, vm_id) > restarts, 30, what="the actor's restart")
    assert m.wait_moving(a_agent, vm_id)["jobID"] == job
    # it still controls it: no limit any more, and it completes
    assert a_agent.call("VM.migrateChangeParams", vmID=vm_id,
                        params={"maxBandwidth": 0}) is True
    done = m.wait_migration(a_agent, vm_id)
    assert done["status"] == "done" and done["jobID"] == job, done
    # exactly one copy runs, and both agents say where
    assert m.where(bed, vm_id) == ["b"]
    m.wait_status(b_agent, vm_id, "Up")
    down = m.wait_status(a_agent, vm_id, "Down")
    assert down["exitReason"] == "migrated", down
    assert m.migration(b_agent, vm_id)["status"] == "done"
    assert {b for b, _ in counting(m.serial_log(b_agent, vm_id), more_than=2)} == {boot}


@pytest.mark.timeout(300)
def test_the_destination_agent_killed_mid_migration_settles_after_its_restart(
        bed: Bed, image: g.GuestImage) -> None:
    a_agent, b_agent = bed.start_agents()
    vm_id = m.start_guest(a_agent, image, ballast=BALLAST)
    m.wait_booted(a_agent, vm_id)
    boot = counting(m.serial_log(a_agent, vm_id))[-1][0]
    a_agent.call("VM.migrate", vmID=vm_id, dst="b", maxBandwidth=1)
    job = m.wait_moving(a_agent, vm_id)["jobID"]
    assert m.status(b_agent, vm_id)["status"] == "Migration Destination"  # type: ignore[index]
    b_agent.kill()  # SIGKILL: the libvirtds go on migrating, at 1 MiB/s

    b_agent = bed.new_agent(bed.host("b"))
    b_agent.start().wait_ready()
    # the restarted destination found its incoming migration: the guest is arriving
    arriving = m.migration(b_agent, vm_id)
    assert (arriving["jobID"], arriving["job_type"]) == (job, "migrate_in"), arriving
    assert arriving["status"] not in m.ENDED, arriving
    assert m.status(b_agent, vm_id)["status"] == "Migration Destination"  # type: ignore[index]
    assert m.migration(a_agent, vm_id)["status"] == "running"
    # the source lifts the limit; the guest arrives, and both agents say it runs on b
    assert a_agent.call("VM.migrateChangeParams", vmID=vm_id,
                        params={"maxBandwidth": 0}) is True
    assert m.wait_migration(a_agent, vm_id)["status"] == "done"
    assert m.wait_migration(b_agent, vm_id)["status"] == "done"
    m.wait_status(b_agent, vm_id, "Up")
    assert m.wait_status(a_agent, vm_id, "Down")["exitReason"] == "migrated"
    assert m.where(bed, vm_id) == ["b"]
    assert {b for b, _ in counting(m.serial_log(b_agent, vm_id), more_than=2)} == {boot}


@pytest.mark.timeout(300)
def test_a_guest_that_arrives_while_the_destination_agent_is_down(
        bed: Bed, image: g.GuestImage) -> None:
    """libvirt completes the migration while the destination's agent is dead: the source
    says the guest runs there (libvirt's peer-to-peer call returns only once it does), and
    the destination's agent, restarted, finds the guest arrived and settles its job."""
    a_agent, b_agent = bed.start_agents()
    vm_id = m.start_guest(a_agent, image, ballast=BALLAST)
    m.wait_booted(a_agent, vm_id)
    boot = counting(m.serial_log(a_agent, vm_id))[-1][0]
    a_agent.call("VM.migrate", vmID=vm_id, dst="b", maxBandwidth=1)
    job = m.wait_moving(a_agent, vm_id)["jobID"]
    b_agent.kill()
    assert a_agent.call("VM.migrateChangeParams", vmID=vm_id,
                        params={"maxBandwidth": 0}) is True
    ended = m.wait_migration(a_agent, vm_id)
    assert (ended["jobID"], ended["status"]) == (job, "done"), ended
    assert (ended["progress"], ended["dataRemaining"]) == (100, 0), ended  # not the last sample's
    assert m.wait_status(a_agent, vm_id, "Down")["exitReason"] == "migrated"
    assert m.where(bed, vm_id) == ["b"]

    b_agent = bed.new_agent(bed.host("b"))
    b_agent.start().wait_ready()
    m.wait_status(b_agent, vm_id, "Up")
    arrived = m.wait_migration(b_agent, vm_id)
    assert (arrived["jobID"], arrived["status"]) == (job, "done"), arrived
    assert m.where(bed, vm_id) == ["b"]
    assert {b for b, _ in counting(m.serial_log(b_agent, vm_id), more_than=2)} == {boot}


@pytest.mark.timeout(300)
def test_the_limits_queue_a_third_migration(bed: Bed, image: g.GuestImage) -> None:
    a_agent, b_agent = bed.start_agents(a={"migration": {"max_outgoing": 2}},
                                        b={"migration": {"max_incoming": 1}})
    vms = [m.start_guest(a_agent, image, ballast=BALLAST) for _ in range(3)]
    for vm_id in vms:
        m.wait_booted(a_agent, vm_id)
    first, second, third = vms
    for vm_id in vms:  # slowly: they stay in flight
        assert a_agent.call("VM.migrate", vmID=vm_id, dst="b", maxBandwidth=1) is True
    # the first two have a's two slots, but b takes one incoming migration at a time:
    # whichever of them reached b first moves, the other waits for b

    def one_moving() -> str | None:
        for vm_id in (first, second):
            found = m.migration(a_agent, vm_id)
            assert found["status"] not in m.ENDED, found
            if found.get("dataRemaining", 0) > 0:
                return vm_id
        return None

    moving: str = wait_for(one_moving, 60, interval=0.2, what="one of the first two to move")
    waiting = second if moving == first else first
    wait_for(lambda: "incoming migrations as it allows" in
             m.migration(a_agent, waiting)["description"], 60, what="the other to wait for b")
    # the third waits for a free slot on a: it did not even ask b yet
    queued = m.migration(a_agent, third)
    assert queued["status"] == "pending", queued
    assert "waiting for a free outgoing migration slot" in queued["description"]
    assert m.status(a_agent, third)["status"] == "Up"  # type: ignore[index]
    assert m.jobs(b_agent, job_type="migrate_in").keys() == {m.migration(a_agent, moving)["jobID"]}

    for vm_id in (moving, waiting, third):  # each goes once the one before made room
        wait_for(lambda v=vm_id: m.migration(a_agent, v).get("dataRemaining", 0) > 0
                 or m.migration(a_agent, v)["status"] in m.ENDED, 120,
                 what=f"{vm_id} to move")
        a_agent.call("VM.migrateChangeParams", vmID=vm_id, params={"maxBandwidth": 0})
        assert m.wait_migration(a_agent, vm_id)["status"] == "done"
    assert all(m.where(bed, vm_id) == ["b"] for vm_id in vms)


@pytest.mark.timeout(300)
def test_the_timeout_aborts_or_with_post_copy_switches(bed: Bed, image: g.GuestImage) -> None:
    a_agent, b_agent = bed.start_agents()
    vm_id = m.start_guest(a_agent, image, ballast=BALLAST)
    m.wait_booted(a_agent, vm_id)
    # 1 MiB/s cannot be done in 2 s: aborted, the VM stays
    m.call(a_agent, "VM.migrate", vmID=vm_id, dst="b", maxBandwidth=1, timeout=2)
    ended = m.wait_migration(a_agent, vm_id)
    assert ended["status"] == "failed" and "timeout of 2 s" in ended["error"]["message"], ended
    m.wait_status(a_agent, vm_id, "Up")
    wait_for(lambda: m.status(b_agent, vm_id) is None, 30, what="b to drop its copy")
    assert m.where(bed, vm_id) == ["a"]
    # with postCopy the guest runs on b at the timeout and fetches the rest from there. b's
    # libvirtd prepares its QEMU 8 s long (a hook): libvirt's job exists at the timeout, but
    # QEMU does not migrate yet and refuses the switch, which is tried again until it takes
    boot = g.counts(m.serial_log(a_agent, vm_id))[-1][0]
    hook = bed.host("b").libvirt_hook
    hook.write_text('#!/bin/sh\n[ "$2" = prepare ] && sleep 8\nexit 0\n')
    hook.chmod(0o755)
    try:
        m.call(a_agent, "VM.migrate", vmID=vm_id, dst="b", maxBandwidth=1, timeout=2,
               postCopy=True)
        done = m.wait_migration(a_agent, vm_id)
    finally:
        hook.unlink()
    assert done["status"] == "done" and done.get("postCopyActive") is True, \
        (done["status"], done.get("error"), done.get("postCopyActive"))
    assert m.where(bed, vm_id) == ["b"]
    m.wait_status(b_agent, vm_id, "Up")
    assert {b for b, _ in counting(m.serial_log(b_agent, vm_id), more_than=2)} == {boot}
