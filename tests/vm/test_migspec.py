"""A migration request as libvirt gets it, and libvirt's job statistics as clients see them;
the destination named by dst (peers only); a request rebuilt from its job after a restart."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from actors.config import MigrationConfig, PeerConfig
from actors.jobs.record import DONE, MIGRATE_OUT, RUNNING, Job
from actors.vm.migcontrol import spec_from_job
from actors.vm.migspec import (
    MigrationSpec,
    active,
    completed_downtime,
    default_timeout,
    libvirt_flags,
    libvirt_params,
    outgoing,
    sample,
)
from actors.vm.peers import Peers
from messaging.errors import InvalidParams

SPEC = MigrationSpec(job_id="0b5a6f4e-5a35-4b4a-9d36-5f0b9a9f2a11", peer="b",
                     endpoint="tcp://10.0.0.2:54321", host="10.0.0.2", downtime=300,
                     bandwidth=0, timeout=64.0)
PEERS = Peers({"b": PeerConfig("tcp://10.0.0.2:54321", Path("/keys/b.key")),
               "c": PeerConfig("tcp://[fd00::3]:6000", Path("/keys/c.key"))},
              own_secret=Path("/keys/me.key_secret"), connect_timeout=5.0)


def test_flags_say_live_peer_to_peer_and_the_options() -> None:
    base = libvirt_flags(SPEC, unsafe=False)
    assert base & libvirt.VIR_MIGRATE_LIVE and base & libvirt.VIR_MIGRATE_PEER2PEER
    assert not base & (libvirt.VIR_MIGRATE_UNSAFE | libvirt.VIR_MIGRATE_POSTCOPY
                       | libvirt.VIR_MIGRATE_AUTO_CONVERGE)
    spec = MigrationSpec(**{**SPEC.__dict__, "post_copy": True, "auto_converge": True})
    every = libvirt_flags(spec, unsafe=True)
    assert every & libvirt.VIR_MIGRATE_UNSAFE and every & libvirt.VIR_MIGRATE_POSTCOPY
    assert every & libvirt.VIR_MIGRATE_AUTO_CONVERGE


def test_params_carry_the_destination_xml_the_bandwidth_and_the_data_uri() -> None:
    assert libvirt_params(SPEC, dest_xml="<domain/>", migrate_uri="") == {
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>"}
    params = libvirt_params(SPEC.with_limits(bandwidth=7), dest_xml="<d/>",
                            migrate_uri="tcp://{host}")
    assert params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] == 7
    assert params[libvirt.VIR_MIGRATE_PARAM_URI] == "tcp://10.0.0.2"


def test_the_default_timeout_grows_with_memory_from_one_gib() -> None:
    config = MigrationConfig()
    assert default_timeout(config, 128) == 64.0
    assert default_timeout(config, 4096) == 256.0


def test_a_sample_of_libvirts_job_statistics() -> None:
    stats = {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
             "operation": libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT,
             "data_total": 100 << 20, "data_remaining": 25 << 20, "data_processed": 75 << 20,
             "memory_bps": 0, "memory_iteration": 2, "time_elapsed": 3000,
             "memory_dirty_rate": 12}
    before = dict(stats, data_processed=55 << 20, time_elapsed=2000)
    now = sample(stats, 10, before)
    assert now == {"progress": 75, "dataRemaining": 25 << 20, "bandwidth": 20.0,
                   "iteration": 2, "elapsed": 3000, "dirtyRate": 12}
    # never backwards, never 100 before it is done, QEMU's own bandwidth when it has one
    assert sample(dict(stats, data_remaining=90 << 20), 75)["progress"] == 75
    assert sample(dict(stats, data_remaining=0), 0)["progress"] == 99
    assert sample(dict(stats, memory_bps=2 << 20), 0, before)["bandwidth"] == 2.0
    assert sample({"type": 2}, 0) == {"progress": 0, "dataRemaining": 0, "bandwidth": 0.0,
                                      "iteration": 0, "elapsed": 0}
    assert active(stats) and outgoing(stats)
    assert not active({"type": libvirt.VIR_DOMAIN_JOB_NONE})
    assert not outgoing(dict(stats, operation=libvirt.VIR_DOMAIN_JOB_OPERATION_SAVE))
    assert completed_downtime({"downtime": 42}) == 42 and completed_downtime({}) is None


@pytest.mark.parametrize(("dst", "name"), [("b", "b"), ("10.0.0.2:54321", "b"),
                                           ("tcp://10.0.0.2:54321", "b"),
                                           ("[fd00::3]:6000", "c")])
def test_dst_names_a_peer(dst: str, name: str) -> None:
    assert PEERS.resolve(dst)[0] == name


@pytest.mark.parametrize("dst", ["d", "10.0.0.2", "10.0.0.2:54322", "tcp://10.0.0.9:54321",
                                 "qemu+tcp://10.0.0.2/system", "B", ""])
def test_anything_else_is_refused(dst: str) -> None:
    with pytest.raises(InvalidParams) as e:
        PEERS.resolve(dst)
    assert e.value.param == "dst" and "b, c" in e.value.reason


def test_a_request_is_rebuilt_from_its_job() -> None:
    job = Job(SPEC.job_id, MIGRATE_OUT, "6d8c1b63-8a56-4f1c-9d1e-1b7f2e8c2c33",
              status=RUNNING, details=SPEC.details())
    assert spec_from_job(job, PEERS) == SPEC
    assert spec_from_job(Job(SPEC.job_id, MIGRATE_OUT, job.vm_id, status=DONE,
                             details=SPEC.details()), PEERS) is None
    gone = Job(SPEC.job_id, MIGRATE_OUT, job.vm_id, status=RUNNING,
               details={**SPEC.details(), "dst": "x"})
    assert spec_from_job(gone, PEERS) is None  # a peer no longer configured
