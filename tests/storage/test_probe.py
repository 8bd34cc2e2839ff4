"""The domain probe against real storage, including a filesystem frozen with fsfreeze."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import pytest

from actors.storage import probe
from actors.storage.probe import DomainProbe, ProbeResult
from actors.storage.sd.filedomain import FileDomain
from actors.storage.sd.records import ProbeTarget
from tests.storage.helpers import ext4, frozen

log = logging.getLogger(__name__)


def probe_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(probe.THREAD_PREFIX)]


def wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


@pytest.mark.timeout(30)
def test_probe_reads_metadata_and_writes_its_slot(tmp: Path) -> None:
    dom = FileDomain.create(tmp, str(uuid.uuid4()), name="d")
    target = dom.probe_target()
    done: list[ProbeResult] = []
    prober = DomainProbe(target, timeout=5, slot=3, on_done=done.append)
    assert prober.name == dom.sd_uuid
    assert prober.result() is None
    assert prober.start()
    assert prober.join(5)
    result = prober.result()
    assert result is not None
    assert result.ok
    assert result.code == 0
    assert result.delay > 0
    assert done == [result]
    slot = Path(target.write_path or "").read_bytes()[3 * 4096: 4 * 4096]
    assert slot.startswith(b"probe slot=3 ")
    assert probe.probe_once(ProbeTarget(read_path=target.read_path)) > 0


@pytest.mark.timeout(30)
def test_probe_error_is_reported_not_raised(tmp: Path) -> None:
    prober = DomainProbe(ProbeTarget(read_path=str(tmp / "missing")), timeout=5)
    prober.start()
    assert prober.join(5)
    result = prober.result()
    assert result is not None
    assert not result.ok
    assert not result.timed_out
    assert result.code == 208
    assert "No such file" in result.error
    with pytest.raises(ValueError):
        DomainProbe(ProbeTarget(read_path="x"), timeout=0)


@pytest.mark.timeout(120)
def test_frozen_domain_times_out_without_pile_up_and_recovers(tmp: Path) -> None:
    with ext4(tmp) as mnt:
        dom = FileDomain.create(mnt, str(uuid.uuid4()), name="frozen")
        other = FileDomain.create(tmp, str(uuid.uuid4()), name="healthy")
        late: list[ProbeResult] = []
        prober = DomainProbe(dom.probe_target(), timeout=0.5, on_done=late.append)
        healthy = DomainProbe(other.probe_target(), timeout=0.5)
        assert prober.start()
        assert prober.join(5)
        before = len(probe_threads())
        with frozen(mnt):
            # O_DIRECT reads of a frozen filesystem do not block: a read-only probe passes
            reader = DomainProbe(ProbeTarget(read_path=dom.probe_target().read_path),
                                 timeout=5)
            assert reader.start()
            assert reader.join(10)
            assert reader.result().ok  # type: ignore[union-attr]
            assert prober.start()  # returns at once: the caller never waits for the probe
            assert prober.result() is not None
            assert prober.result().ok  # type: ignore[union-attr] # the last finished one
            assert wait_for(lambda: (r := prober.result()) is not None and r.timed_out, 5)
            stuck = prober.result()
            assert stuck is not None
            assert (stuck.ok, stuck.code, stuck.timed_out) == (False, 215, True)
            assert stuck.delay > 0.5
            for _ in range(20):  # the monitor keeps ticking: no second probe is started
                assert not prober.start()
                healthy.start()
                assert healthy.join(2)
                assert healthy.result().ok  # type: ignore[union-attr]
                time.sleep(0.02)
            assert len(probe_threads()) == before + 1
            assert prober.timeouts == 1
            assert prober.outstanding
            assert not prober.join(0.1)
        # thawed: the stuck probe finishes, reports late, and its thread exits
        assert prober.join(10)
        assert wait_for(lambda: len(probe_threads()) == before, 5)
        assert late[-1].ok
        assert late[-1].delay > 0.5
        assert prober.start()
        assert prober.join(5)
        fresh = prober.result()
        assert fresh is not None
        assert fresh.ok


@pytest.mark.timeout(120)
def test_cpu_cost_of_fifty_domains_probed_every_second(tmp: Path) -> None:
    domains = [FileDomain.create(tmp, str(uuid.uuid4()), name=f"d{i}") for i in range(50)]
    probers = [DomainProbe(d.probe_target(), timeout=5) for d in domains]
    rounds = 3
    cpu0, wall0 = time.process_time(), time.monotonic()
    delays = []
    for tick in range(rounds):
        tick_start = time.monotonic()
        for prober in probers:
            assert prober.start()
        for prober in probers:
            assert prober.join(5)
            delays.append(prober.result().delay)  # type: ignore[union-attr]
        time.sleep(max(0.0, tick_start + 1.0 - time.monotonic()))
        assert tick < rounds
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    per_probe_us = cpu / (rounds * len(probers)) * 1e6
    percent = 100 * cpu / wall
    delays.sort()
    log.warning("probe cost: %.0f us CPU per probe, %.2f%% of a core for 50 domains at 1 s; "
                "latency median %.2f ms, p95 %.2f ms", per_probe_us, percent,
                delays[len(delays) // 2] * 1e3, delays[int(len(delays) * 0.95)] * 1e3)
    assert percent < 5


@pytest.mark.timeout(30)
def test_an_unexpected_error_in_a_probe_is_a_reported_failure(
        tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    done: list[ProbeResult] = []
    # a NUL in the path makes os.open raise ValueError, not OSError: a real unexpected error
    prober = DomainProbe(ProbeTarget(read_path=f"{tmp}/bad\0path"), timeout=5,
                         on_done=done.append)
    assert prober.start()
    assert prober.join(5)
    result = prober.result()
    assert result is not None and not result.ok and result.code == 208
    assert "ValueError" in result.error
    assert done == [result]  # the monitor hears of it at once
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)
