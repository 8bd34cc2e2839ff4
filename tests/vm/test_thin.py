"""Thin provisioning's plain logic (actors/vm/thin.py): the rate a drive fills at, the chunk
that rate earns, the size asked for and the next threshold; the live XML parse of
actors/vm/thinwork.py; and the storage monitors' board telling listeners of validity changes.
"""

from __future__ import annotations

import pytest

from actors.config import ConfigError, ThinConfig, from_mapping
from actors.storage.board import NEVER, DomainHealth, MonitorBoard
from actors.vm.thin import ChunkPolicy, RateMeter, needs_room, next_size, threshold_for
from actors.vm.thinwork import live_disks

MiB = 1 << 20


def test_the_rate_is_the_decaying_peak_of_the_samples() -> None:
    meter = RateMeter()
    meter.sample(0.0, 0)
    assert meter.rate == 0.0
    meter.sample(1.0, 100 * MiB)
    assert meter.rate == 100 * MiB
    meter.sample(21.0, 100 * MiB)  # nothing written for one half life: half of it is left
    assert meter.rate == 50 * MiB
    meter.sample(22.0, 300 * MiB)  # faster than ever: the new peak
    assert meter.rate == 200 * MiB


def test_samples_too_close_or_out_of_order_say_nothing_of_the_rate() -> None:
    meter = RateMeter()
    meter.sample(10.0, 0)
    meter.sample(10.01, 50 * MiB)  # 10 ms: would read as 5 GiB/s
    assert meter.rate == 0.0
    meter.sample(9.0, 60 * MiB)  # an older sample (a late event): ignored
    assert meter.rate == 0.0
    meter.sample(11.0, 50 * MiB)  # one second after the first, holding the larger offset
    assert meter.rate == 50 * MiB


def test_an_adaptive_chunk_holds_headroom_seconds_of_writes_within_bounds() -> None:
    policy = ChunkPolicy(ThinConfig(chunk_mib=64, chunk_max_mib=1024, headroom=4.0))
    assert policy.chunk(0.0) == 64 * MiB  # idle: the least
    assert policy.chunk(10 * MiB) == 64 * MiB  # 40 MiB of headroom: still the least
    assert policy.chunk(100 * MiB) == 400 * MiB
    assert policy.chunk(100 * MiB + 1) == 401 * MiB  # whole MiB, rounded up
    assert policy.chunk(10_000 * MiB) == 1024 * MiB  # the most config allows
    fixed = ChunkPolicy(ThinConfig(chunk_mib=64, chunk_max_mib=1024, adaptive=False))
    assert fixed.chunk(10_000 * MiB) == 64 * MiB


def test_the_watermark_is_half_a_chunk_or_the_drives_threshold() -> None:
    assert ChunkPolicy.watermark(64 * MiB, None) == 32 * MiB
    assert ChunkPolicy.watermark(64 * MiB, 10) == 32 * MiB
    assert ChunkPolicy.watermark(64 * MiB, 40) == 40 * MiB


def test_sizes_and_thresholds_never_pass_the_limit() -> None:
    limit = 300 * MiB
    assert next_size(100 * MiB, 64 * MiB, limit) == 164 * MiB
    assert next_size(280 * MiB, 64 * MiB, limit) == limit
    assert threshold_for(100 * MiB, 32 * MiB, limit) == 68 * MiB
    assert threshold_for(16 * MiB, 32 * MiB, limit) == 1  # a watermark past the start
    assert threshold_for(limit, 32 * MiB, limit) == 0  # full: nothing to watch
    assert needs_room(68 * MiB, 100 * MiB, 32 * MiB)
    assert not needs_room(68 * MiB - 1, 100 * MiB, 32 * MiB)


LIVE_XML = """<domain type='qemu'><devices>
  <disk type='block' device='disk'>
    <source dev='/run/vdsm/storage/sd/img/vol' index='2'/>
    <backingStore type='block' index='1'><source dev='/base'/></backingStore>
    <target dev='vda' bus='virtio'/><alias name='virtio-disk0'/>
  </disk>
  <disk type='file' device='disk'>
    <source file='/images/b.qcow2' index='3'/><target dev='vdb' bus='virtio'/>
  </disk>
  <disk type='block' device='disk'>
    <source dev='/dev/loop7'/><target dev='vdc' bus='virtio'/><readonly/>
  </disk>
  <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
</devices></domain>"""


def test_live_disks_name_the_top_layer_by_index() -> None:
    disks = live_disks(LIVE_XML)
    assert set(disks) == {"vda", "vdb"}  # the read-only disk and the cdrom are not written
    vda = disks["vda"]
    assert (vda.node, vda.source, vda.alias, vda.block) == (
        "vda[2]", "/run/vdsm/storage/sd/img/vol", "virtio-disk0", True)
    assert (disks["vdb"].node, disks["vdb"].block) == ("vdb[3]", False)


def health(sd: str, valid: bool, checked: float = 1.0) -> DomainHealth:
    return DomainHealth(sd, valid, 0 if valid else 208, 0.0, checked, 0.0)


def test_the_board_tells_listeners_of_validity_changes_only() -> None:
    board = MonitorBoard()
    heard: list[tuple[str, bool]] = []
    board.listen(lambda sd, valid: heard.append((sd, valid)))

    def broken(_sd: str, _valid: bool) -> None:
        raise RuntimeError("a broken listener")

    board.listen(broken)  # logged: the others still hear, the monitor goes on
    board.put(health("sd1", True))  # not watched: ignored
    board.watch(health("sd1", False, NEVER))
    board.put(health("sd1", True))  # the first check
    board.put(health("sd1", True, 2.0))  # no change
    board.put(health("sd1", False, 3.0))
    board.put(health("sd1", True, 4.0))
    assert heard == [("sd1", True), ("sd1", False), ("sd1", True)]


@pytest.mark.parametrize(("table", "error"), [
    ({"chunk_mib": 0}, "chunk_mib must be at least 1"),
    ({"chunk_mib": 64, "chunk_max_mib": 32}, "chunk_max_mib must be at least chunk_mib"),
    ({"headroom": 0}, "headroom must be positive"),
    ({"check_interval": -1.0}, "check_interval must be positive"),
    ({"extend_timeout": 0}, "extend_timeout must be positive"),
    ({"retry_max": 0}, "retry_max must be positive"),
    ({"chunk_mib": "1G"}, "chunk_mib"),
])
def test_bad_thin_settings_are_refused(table: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        from_mapping({"thin": table})
