"""One deadline model for the VM verbs, against a real vdsmd and real (bare) guests.

A VM verb's wire deadline is derived from its operation's (its timeout plus its hooks'
budget): a verb whose hooks take longer than the schema's timeout still gets its own answer,
not a wire timeout while it runs. And a VM operation in progress holds none of the API
server's shared workers: other verbs are served while every VM is busy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from messaging.schema import SCHEMA
from tests.harness import Vdsmd, wait_for
from tests.vm import agent as a

pytestmark = pytest.mark.libvirt

PAUSE_WIRE_TIMEOUT = SCHEMA.lookup("VM.pause").timeout


@pytest.fixture
def few_workers(tmp_path: Path, hooks_dir: Path, conn: libvirt.virConnect) -> Iterator[Vdsmd]:
    """A vdsmd with two API workers and a 40 s budget per hook."""
    config = a.config(hooks_dir, hook_timeout=40.0) + "[api]\nworkers = 2\n"
    daemon = Vdsmd(tmp_path / "vdsmd", config=config)
    with a.started(conn, daemon):
        yield daemon


def sleeping_hook(hooks_dir: Path, hook: str, seconds: float) -> None:
    a.hook(hooks_dir, hook, "50_slow", f"/bin/sleep {seconds}\n")


@pytest.mark.timeout(180)
def test_a_verb_whose_hooks_outlast_its_wire_timeout_gets_its_own_answer(
    few_workers: Vdsmd, hooks_dir: Path,
) -> None:
    vm_id = a.new_id()
    few_workers.call("VM.create", vmID=vm_id, vmParams=a.bare_params())
    a.wait_status(few_workers, vm_id, "Up")
    sleeping_hook(hooks_dir, "before_vm_pause", PAUSE_WIRE_TIMEOUT + 3)
    # The client waits long enough; the server must not give up on its own first.
    assert few_workers.call("VM.pause", timeout=PAUSE_WIRE_TIMEOUT + 30, vmID=vm_id) is True
    assert a.status(few_workers, vm_id)["status"] == "Paused"


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("verb", "hook"), [("VM.pause", "before_vm_pause"),
                                            ("VM.destroy", "before_vm_destroy")])
def test_vm_operations_in_progress_hold_no_api_worker(
    few_workers: Vdsmd, hooks_dir: Path, verb: str, hook: str,
) -> None:
    ids = [a.new_id() for _ in range(3)]
    for vm_id in ids:
        few_workers.call("VM.create", vmID=vm_id, vmParams=a.bare_params())
    for vm_id in ids:
        a.wait_status(few_workers, vm_id, "Up")
    sleeping_hook(hooks_dir, hook, 8)
    answers: list[Any] = []
    threads = [threading.Thread(
        target=lambda v=vm_id: answers.append(few_workers.call(verb, vmID=v)))
        for vm_id in ids]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: _running(few_workers, verb) == len(ids), 20,
                 what=f"every VM to be in its {hook} hook")
        # More VM operations than workers are running: worker-bound verbs still answer
        # within their own deadline.
        inspect_timeout = SCHEMA.lookup("Actors.inspect").timeout
        with few_workers.client(timeout=inspect_timeout + 2) as client:
            for _ in range(3):
                detail = client.call("Actors.inspect", {"path": "/host/libvirt"})
                assert detail["answering"] is True
    finally:
        for thread in threads:
            thread.join(60)
    assert answers == [True] * len(ids)


def _running(vdsmd: Vdsmd, verb: str) -> int:
    """How many VM actors have ``verb`` in flight (from Actors.inspect)."""
    count = 0
    for actor in vdsmd.call("Actors.list"):
        if not actor["path"].startswith("/vms/") or actor["path"] == "/vms/sampler":
            continue
        detail = vdsmd.call("Actors.inspect", path=actor["path"]).get("detail", {})
        count += any(op["name"] == verb for op in detail.get("operations", []))
    return count
