"""Jobs on one host, through vdsmd's API: hibernation and restore answer at once and end as
jobs; the destination side of a migration (VM.migrationCreate) attacked as a hostile source
would; the migration verbs without a migration. Real guests, real libvirtd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from actors.vm import domxml
from actors.vm.params import VmParams
from tests import guest as g
from tests.harness import Vdsmd, wait_for
from tests.vm import agent as a
from tests.vm.test_api_lifecycle import wait_job

pytestmark = pytest.mark.libvirt

MIGRATION = "[migration]\nmax_incoming = 1\nincoming_grace = 1.0\n"


@pytest.fixture
def destination(tmp_path: Path, hooks_dir: Path,
                conn: libvirt.virConnect) -> Iterator[Vdsmd]:
    """A vdsmd taking one incoming migration at a time, waiting 1 s past a migration's
    timeout for the guest to arrive."""
    daemon = Vdsmd(tmp_path / "vdsmd", config=a.config(hooks_dir) + MIGRATION)
    with a.started(conn, daemon):
        yield daemon


def incoming(image: g.GuestImage, **overrides: Any) -> dict[str, Any]:
    """VM.migrationCreate's params as a source would send them, the XML from our builder."""
    vm_id = overrides.pop("vmID", a.new_id())
    params = a.guest_params(image)
    vm = VmParams.from_dict(vm_id, params)
    xml = domxml.build_domain_xml(vm, serial_log="/nonexistent/source.log", owner="source")
    out = {"vmID": vm_id, "vmParams": params, "xml": xml, "jobID": a.new_id(),
           "timeout": 60, "prepareTimeout": 30}
    out.update(overrides)
    return out


def migration_create(agent: Vdsmd, params: dict[str, Any]) -> Any:
    """VM.migrationCreate (through a client: Vdsmd.call takes ``timeout`` for itself)."""
    with agent.client() as client:
        return client.call("VM.migrationCreate", params)


def nothing_left(agent: Vdsmd, vm_id: str) -> None:
    assert a.error(lambda: agent.call("VM.getStats", vmID=vm_id)).code == 1
    assert a.vm_actors(agent) == []
    assert not (agent.state_dir / "vms" / f"{vm_id}.vm.json").exists()
    assert not a.serial_log(agent, vm_id).exists()


@pytest.mark.timeout(180)
def test_a_failing_hibernation_is_a_failed_job_and_the_vm_runs_on(
        agent: Vdsmd, guest_image: g.GuestImage, hooks_dir: Path) -> None:
    a.hook(hooks_dir, "before_vm_hibernate", "10_no", "echo 'not now' >&2\nexit 1\n")
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id, vmParams=a.guest_params(guest_image))
    a.wait_status(agent, vm_id, "Up")
    state, job_id = a.hibernation_dir(agent) / "x.save", a.new_id()
    assert agent.call("VM.hibernate", vmID=vm_id, hiberVolHandle=str(state),
                      jobID=job_id) is True
    job = wait_job(agent, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == 6, job
    assert "not now" in job["error"]["message"]
    assert a.wait_status(agent, vm_id, "Up")
    assert not state.exists()
    # the id of a job is the job's: taken ids are refused, the VM is not touched
    e = a.error(lambda: agent.call("VM.hibernate", vmID=vm_id, hiberVolHandle=str(state),
                                   jobID=job_id))
    assert e.code == -32602 and e.data == {"param": "jobID"}
    assert a.status(agent, vm_id)["status"] == "Up"
    # Host.getJobs filters by kind and by id; unknown ids are simply not there
    assert agent.call("Host.getJobs", job_type="hibernate").keys() == {job_id}
    assert agent.call("Host.getJobs", job_type="restore") == {}
    assert agent.call("Host.getJobs", job_ids=[a.new_id()]) == {}
    for bad in ({"job_ids": ["../../etc/passwd"]}, {"job_type": "storage"},
                {"job_ids": "all"}):
        e = a.error(lambda b=bad: agent.call("Host.getJobs", **b))
        assert e.code == -32602, (bad, e)


@pytest.mark.timeout(120)
def test_a_restore_that_fails_is_a_failed_job_and_leaves_nothing(agent: Vdsmd) -> None:
    junk = a.hibernation_dir(agent) / "junk.save"
    junk.write_bytes(b"not a libvirt save image" * 100)
    vm_id, job_id = a.new_id(), a.new_id()
    reply = agent.call("VM.create", vmID=vm_id, jobID=job_id,
                       vmParams=a.bare_params(restoreState=str(junk)))
    assert reply == {"vmID": vm_id, "status": "Restoring state"}
    job = wait_job(agent, job_id)
    assert (job["job_type"], job["status"], job["error"]["code"]) == ("restore", "failed", 5)
    wait_for(lambda: not a.vm_actors(agent), 30, what="the actor to go")
    nothing_left(agent, vm_id)
    assert junk.exists()  # only a restore that worked consumes its image


@pytest.mark.timeout(120)
def test_migration_verbs_without_a_migration(agent: Vdsmd) -> None:
    vm_id = a.new_id()
    agent.call("VM.create", vmID=vm_id, vmParams=a.bare_params())
    a.wait_status(agent, vm_id, "Up")
    for verb, params in (("VM.getMigrationStatus", {}), ("VM.migrateCancel", {}),
                         ("VM.migrateChangeParams", {"params": {"downtime": 100}})):
        assert a.error(lambda v=verb, p=params: agent.call(v, vmID=vm_id, **p)).code == 82
        assert a.error(lambda v=verb, p=params: agent.call(v, vmID=a.new_id(), **p)).code == 1
    e = a.error(lambda: agent.call("VM.migrateChangeParams", vmID=vm_id, params={}))
    assert e.code == -32602 and e.data == {"param": "params"}
    # no peers configured: no destination is valid, whatever its form
    for dst in ("b", "10.0.0.2:54321", "tcp://127.0.0.1:54321", "qemu+ssh://h/system"):
        e = a.error(lambda d=dst: agent.call("VM.migrate", vmID=vm_id, dst=d))
        assert e.code == -32602 and e.data == {"param": "dst"}, (dst, e)
    e = a.error(lambda: agent.call("VM.migrate", vmID=vm_id, dst="b;rm -rf /"))
    assert e.code == -32602
    # the options are checked before the destination: only a live migration, sane limits
    for bad in ({"method": "offline"}, {"downtime": 0}, {"maxBandwidth": -1},
                {"timeout": 0}, {"autoConverge": "yes"}, {"postCopy": 1}, {"jobID": "x"}):
        e = a.error(lambda b=bad: _call(agent, "VM.migrate", {"vmID": vm_id, "dst": "b", **b}))
        assert e.code == -32602 and e.data == {"param": next(iter(bad))}, (bad, e)
    assert agent.call("Host.getJobs") == {}
    assert a.status(agent, vm_id)["status"] == "Up"


def _call(agent: Vdsmd, method: str, params: dict[str, Any]) -> Any:
    """A verb with any params (``Vdsmd.call`` takes ``method`` for itself)."""
    with agent.client() as client:
        return client.call(method, params)


@pytest.mark.timeout(180)
def test_migration_create_refuses_what_a_hostile_source_sends(
        destination: Vdsmd, guest_image: g.GuestImage, tmp_path: Path) -> None:
    agent = destination
    cases: list[tuple[dict[str, Any], int, str]] = []
    # XML naming what the agent never defines, or another VM, or not XML at all
    evil = incoming(guest_image)
    evil["xml"] = evil["xml"].replace(
        "</devices>", "<filesystem type='mount'><source dir='/etc'/><target dir='e'/>"
                      "</filesystem></devices>")
    cases.append((evil, 5, "never defines"))
    other = incoming(guest_image)
    other["xml"] = other["xml"].replace(other["vmID"], a.new_id())
    cases.append((other, 5, "another VM"))
    cases.append((incoming(guest_image, xml="<domain"), 5, "cannot run here"))
    entities = incoming(guest_image)
    entities["xml"] = ('<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/shadow">]>'
                       + entities["xml"].replace("<description>", "<description>&x;"))
    cases.append((entities, 5, "no DOCTYPE"))
    # paths of the params, checked as at VM.create
    shadow = incoming(guest_image)
    shadow["vmParams"]["drives"] = [{"path": "/etc/shadow"}]
    cases.append((shadow, -32602, "vmParams.drives[0].path"))
    restoring = incoming(guest_image)
    restoring["vmParams"]["restoreState"] = "/tmp/x"
    cases.append((restoring, -32602, "restoreState"))
    for params, code, why in cases:
        e = a.error(lambda p=params: migration_create(agent, p))
        assert e.code == code and why in e.message, (why, e)
        nothing_left(agent, params["vmID"])
        if code != -32602:  # refused after its job was recorded: the job says why
            job = agent.call("Host.getJobs", job_ids=[params["jobID"]])[params["jobID"]]
            assert (job["job_type"], job["status"]) == ("migrate_in", "failed"), job


@pytest.mark.timeout(180)
def test_an_incoming_vm_that_never_arrives_is_dropped_and_the_limit_holds(
        destination: Vdsmd, guest_image: g.GuestImage) -> None:
    agent = destination
    first = incoming(guest_image, timeout=3)
    reply = migration_create(agent, first)
    assert reply["vmID"] == first["vmID"] and reply["status"] == "Migration Destination"
    dest = reply["xml"]
    assert first["vmID"] in dest and str(a.serial_log(agent, first["vmID"])) in dest
    assert "/nonexistent/source.log" not in dest  # this host's own serial log, not the source's
    assert a.status(agent, first["vmID"])["status"] == "Migration Destination"
    # one incoming migration at a time: the next is refused, retryable
    second = incoming(guest_image)
    e = a.error(lambda: migration_create(agent, second))
    assert e.code == 48, e
    # an incoming VM that exists already: refused without touching it
    again = incoming(guest_image, vmID=first["vmID"])
    assert a.error(lambda: migration_create(agent, again)).code == 4
    # the guest never comes: after its timeout (3 s) and the grace (1 s), nothing is left
    job = wait_job(agent, first["jobID"], timeout=60)
    assert job["status"] == "failed" and "did not arrive" in job["error"]["message"], job
    wait_for(lambda: not a.vm_actors(agent), 30, what="the incoming VM to go")
    nothing_left(agent, first["vmID"])
    # its slot is free again
    assert migration_create(agent, second)["vmID"] == second["vmID"]
    assert agent.call("VM.destroy", vmID=second["vmID"]) is True  # what a failed source does
    assert wait_job(agent, second["jobID"])["status"] == "aborted"
    nothing_left(agent, second["vmID"])
