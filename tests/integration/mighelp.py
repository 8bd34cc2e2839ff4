"""Helpers of the migration tests: guests on a bed host, jobs, where a VM runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from messaging.client import ClientError
from tests import guest as g
from tests.harness import wait_for
from tests.testbed import Bed, BedAgent
from tests.vm import agent as a

BOOT_TIMEOUT = 120.0
JOB_TIMEOUT = 120.0
ENDED = ("done", "failed", "aborted")


def call(agent: BedAgent, method: str, **params: Any) -> Any:
    """A verb with any params (``Vdsmd.call`` takes ``timeout`` for itself)."""
    with agent.client() as client:
        return client.call(method, params)


def serial_log(agent: BedAgent, vm_id: str) -> Path:
    return Path(agent.host.workdir) / "vm-logs" / f"{vm_id}.log"


def start_guest(agent: BedAgent, image: g.GuestImage, mode: str = "count",
                ballast: int = 0, **overrides: Any) -> str:
    """A new test guest on ``agent``'s host (not waiting for it to boot); a ``count``
    guest holds ``ballast`` MiB of memory that a migration must move (see tests/guest.py)."""
    vm_id = a.new_id()
    params = a.guest_params(image, mode, **overrides)
    if ballast:
        params["kernelArgs"] = g.kernel_cmdline(mode, ballast=ballast)
    agent.call("VM.create", vmID=vm_id, vmParams=params)
    return vm_id


def wait_booted(agent: BedAgent, vm_id: str) -> None:
    g.wait_for_marker(serial_log(agent, vm_id), g.MARKER_READY, BOOT_TIMEOUT)


def status(agent: BedAgent, vm_id: str) -> dict[str, Any] | None:
    """The VM's stats map on ``agent``, None if it has no such VM."""
    try:
        found: dict[str, Any] = agent.call("VM.getStats", vmID=vm_id)[0]
    except ClientError as e:
        if e.code == 1:
            return None
        raise
    return found


def wait_status(agent: BedAgent, vm_id: str, wanted: str,
                timeout: float = 60.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = status(agent, vm_id)
        return found if found is not None and found["status"] == wanted else None

    result: dict[str, Any] = wait_for(check, timeout, interval=0.1,
                                      what=f"VM {vm_id} to be {wanted} on {agent.host.name}")
    return result


def migration(agent: BedAgent, vm_id: str) -> dict[str, Any]:
    result: dict[str, Any] = agent.call("VM.getMigrationStatus", vmID=vm_id)
    return result


def wait_migration(agent: BedAgent, vm_id: str, wanted: tuple[str, ...] = ENDED,
                   timeout: float = JOB_TIMEOUT, **matching: Any) -> dict[str, Any]:
    """The VM's migration once its status is one of ``wanted`` (and its fields match)."""
    def check() -> dict[str, Any] | None:
        found = migration(agent, vm_id)
        if found["status"] in wanted and all(found.get(k) == v for k, v in matching.items()):
            return found
        return None

    result: dict[str, Any] = wait_for(check, timeout, interval=0.2,
                                      what=f"migration of {vm_id} on {agent.host.name} "
                                           f"to be {wanted} {matching or ''}")
    return result


def wait_moving(agent: BedAgent, vm_id: str, timeout: float = 60.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = migration(agent, vm_id)
        assert found["status"] not in ENDED, found
        return found if found.get("dataRemaining", 0) > 0 else None

    result: dict[str, Any] = wait_for(check, timeout, interval=0.2,
                                      what=f"migration of {vm_id} to move memory")
    return result


def where(bed: Bed, vm_id: str) -> list[str]:
    """The hosts whose libvirtd runs the VM's domain."""
    return [h.name for h in bed.hosts if vm_id in h.domains()]


def nothing_of(bed: Bed, host: str, vm_id: str) -> None:
    """Host ``host`` has nothing of the VM: no VM, actor, record, log, domain."""
    agent = bed.host(host).agent
    assert agent is not None
    assert status(agent, vm_id) is None
    assert not [x for x in agent.call("Actors.list") if x["path"] == f"/vms/{vm_id}"]
    assert not (agent.state_dir / "vms" / f"{vm_id}.vm.json").exists()
    log = serial_log(agent, vm_id)
    assert not log.exists() or log.stat().st_size == 0
    assert vm_id not in bed.host(host).domains()


def jobs(agent: BedAgent, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = agent.call("Host.getJobs", **params)
    return result


def elapsed(since: float) -> float:
    return time.monotonic() - since
