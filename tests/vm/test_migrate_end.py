"""How an outgoing migration ends: its job's end shows only once the VM's actor applied it.

The migration's own steps (libvirt, the destination) are exercised by the two-host tests in
tests/integration/test_migration.py; here ``_run`` is replaced by its outcome, and the VM's
actor by a function that applies it when the test says so.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

import pytest

from actors.config import MigrationConfig
from actors.jobs.record import ENDED, FAILED, MIGRATE_OUT
from actors.jobs.slots import Gates, Slots
from actors.jobs.store import JobStore
from actors.vm import migrate
from actors.vm.migenv import MigrationEnv
from actors.vm.migrate import MigrationEnded, OutgoingMigration
from actors.vm.migspec import MigrationSpec
from actors.vm.params import VmParams
from actors.vm.peers import Peers
from messaging.errors import MigrationError
from tests.harness import wait_for
from tests.vm.helpers import raw_params, validated


class Sink:
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        pass


class Ended(OutgoingMigration):
    """A migration that failed at once, the guest still here."""

    def _run(self) -> MigrationEnded:
        return MigrationEnded(self.job_id, FAILED, "here",
                              MigrationError(vmID=self.vm_id, reason="refused there"))


def migration(tmp_path: Path, notify: Any) -> tuple[Ended, MigrationEnv]:
    jobs = JobStore(tmp_path / "jobs", Sink())
    env = MigrationEnv(jobs=jobs, outgoing=Slots("outgoing", 1), incoming=Slots("incoming", 1),
                       gates=Gates("destination"),
                       peers=Peers({}, own_secret=None, connect_timeout=1.0),
                       config=MigrationConfig(), publish=Sink().publish)
    params = VmParams.from_dict(str(uuid.uuid4()), validated(raw_params()))
    job = jobs.add(MIGRATE_OUT, params.vm_id)
    spec = MigrationSpec(job_id=job.job_id, peer="b", endpoint="tcp://127.0.0.1:1",
                         host="127.0.0.1", downtime=500, bandwidth=0, timeout=60.0)
    # ops and libvirt are used by the steps _run would take, not by the end
    return Ended(params, spec, env=env, ops=cast(Any, None), libvirt=cast(Any, None),
                 notify=notify), env


@pytest.mark.timeout(20)
def test_the_job_ends_only_after_the_actor_applied_the_outcome(tmp_path: Path) -> None:
    # The job's end was recorded before the actor was told: a client that read "failed"
    # and at once asked VM.migrate again was refused (the VM still Migration Source, its
    # migration still running for the actor).
    told: list[MigrationEnded] = []
    states_when_told: list[str] = []
    jobs_ref: list[JobStore] = []

    def notify(message: Any) -> None:
        if isinstance(message, MigrationEnded):
            job = jobs_ref[0].get(message.job_id)
            assert job is not None
            states_when_told.append(job.status)
            told.append(message)

    moving, env = migration(tmp_path, notify)
    jobs = env.jobs
    jobs_ref.append(jobs)
    moving.begin()
    wait_for(lambda: told, 10, what="the actor to be told")
    assert states_when_told[0] not in ENDED
    job = jobs.get(moving.job_id)
    assert job is not None and job.status not in ENDED  # the actor has not applied it yet
    told[0].applied.set()  # the actor applied it
    wait_for(lambda: (j := jobs.get(moving.job_id)) is not None and j.status == FAILED, 10,
             what="the job's end")
    assert len(told) == 1  # told once: it answered in time


@pytest.mark.timeout(20)
def test_an_actor_that_never_applies_the_outcome_does_not_keep_the_job_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(migrate, "APPLY_WAIT", 0.05)
    told: list[MigrationEnded] = []
    moving, env = migration(tmp_path, lambda m: told.append(m)
                            if isinstance(m, MigrationEnded) else None)
    jobs = env.jobs
    moving.begin()
    wait_for(lambda: (j := jobs.get(moving.job_id)) is not None and j.status == FAILED, 10,
             what="the job's end")
    assert len(told) == migrate.APPLY_ATTEMPTS  # told again each time (a restarted actor)
    assert moving.job_id not in [j.job_id for j in jobs.unfinished(moving.vm_id)]


@pytest.mark.timeout(20)
def test_the_migration_stays_live_until_its_job_ended(tmp_path: Path) -> None:
    # A VM actor restarted meanwhile finds the job unfinished and takes the migration over
    # from ``live`` (then it is told the end): it must still be there.
    seen: list[Any] = []
    envs: list[MigrationEnv] = []

    def notify(message: Any) -> None:
        if isinstance(message, MigrationEnded):
            seen.append(envs[0].live.get(message.job_id))
            message.applied.set()

    moving, env = migration(tmp_path, notify)
    envs.append(env)
    moving.begin()
    wait_for(lambda: (j := env.jobs.get(moving.job_id)) is not None and j.status == FAILED,
             10, what="the job's end")
    assert seen == [moving]
    wait_for(lambda: env.live.get(moving.job_id) is None, 10, what="live emptied")
