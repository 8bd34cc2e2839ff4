"""One Disk Paxos instance on one disk: deciding who owns lver ``N`` of a resource.

Each host has a ballot block (a :class:`DBlock`) in the resource's area and writes only its
own; everyone reads all of them. A ballot ``b`` is unique to its host (``round x MAX_HOSTS +
host_id``) and higher than any seen. Phase 1 writes ``mbal = b`` (keeping the value this
host accepted earlier in this instance, if any), reads all blocks, and gives up if any block
of this instance has a higher ``mbal``; it then proposes the value of the highest ``bal`` of
this instance, or its own. Phase 2 writes ``bal = mbal = b, inp = value``, reads all blocks,
and gives up likewise; if it does not, the value is chosen for good.

Why no two values are chosen, whatever the timing (a contender may stall anywhere, for any
time): each phase writes before it reads, and sector reads and writes are atomic. If ballot
``b`` finished phase 2 and a higher ballot ``b'`` ran phase 1, either ``b'``'s read came
after ``b``'s phase-2 write landed (then ``b'`` saw ``bal = b`` and, by induction over the
ballots between, proposes the same value), or it came before, so ``b'``'s phase-1 write
landed before ``b``'s phase-2 read, which then saw ``mbal = b' > b`` and gave up. A block of
a newer instance means that instance's leader was seen, so ours is decided: give up too.
"""

from __future__ import annotations

from collections.abc import Callable

from actors.storage.lease.errors import IoFailed
from actors.storage.lease.records import MAX_HOSTS, DBlock, LeaderRecord
from actors.storage.lease.sectorfile import SectorFile

Owner = tuple[int, int]
"""(host id, generation)."""
Hook = Callable[[str], None]


class Overtaken(Exception):  # a control-flow signal inside acquire, never reported
    """A higher ballot or a newer instance was seen: this ballot cannot decide."""


def ballot_number(top: int, host_id: int) -> int:
    """The smallest ballot of ``host_id`` above ``top`` (ballot numbers start at 1)."""
    round_ = (top - 1) // MAX_HOSTS + 1 if top > 0 else 0
    return round_ * MAX_HOSTS + host_id


class Area:
    """The leader and ballot blocks of one resource, read in one I/O."""

    def __init__(self, file: SectorFile, *, offset: int, hosts: int, name: str) -> None:
        self.file = file
        self.offset = offset
        self.hosts = hosts
        self.name = name

    def read(self) -> tuple[LeaderRecord | None, list[DBlock | None]]:
        size = self.file.sector_size
        raw = self.file.read(self.offset, (1 + self.hosts) * size).value
        leader = LeaderRecord.decode(raw[:size], where=self.name, index=0)
        blocks = [DBlock.decode(raw[i * size:(i + 1) * size], where=self.name, index=i)
                  for i in range(1, 1 + self.hosts)]
        return leader, blocks

    def write_leader(self, leader: LeaderRecord) -> None:
        self.file.write(self.offset, leader.encode(self.file.sector_size))

    def write_block(self, host_id: int, block: DBlock) -> list[DBlock | None]:
        """Write our block, then read all of them back."""
        size = self.file.sector_size
        self.file.write(self.offset + host_id * size, block.encode(size))
        blocks = self.read()[1]
        if blocks[host_id - 1] != block:
            raise IoFailed(what=self.name, reason=f"host {host_id}'s ballot block reads back "
                           "as something else than was just written (a duplicate host id?)")
        return blocks


def _check(blocks: list[DBlock | None], instance: int, mbal: int) -> None:
    for block in blocks:
        if block is not None and (block.instance > instance or (
                block.instance == instance and block.mbal > mbal)):
            raise Overtaken(f"ballot {mbal} of instance {instance} overtaken by {block}")


def run(area: Area, *, instance: int, host_id: int, value: Owner,
        blocks: list[DBlock | None], hook: Hook | None = None) -> Owner:
    """Run one ballot of ``instance`` proposing ``value``; ``blocks`` is a recent read of the
    area (to pick the ballot number). Returns the value chosen, or raises Overtaken."""
    _check(blocks, instance, 1 << 63)
    current = [b for b in blocks if b is not None and b.instance == instance]
    mbal = ballot_number(max((b.mbal for b in current), default=0), host_id)
    own = blocks[host_id - 1]
    bal, inp = (own.bal, own.inp) if own is not None and own.instance == instance else (0, (0, 0))
    blocks = area.write_block(host_id, DBlock(instance=instance, mbal=mbal, bal=bal,
                                              inp_id=inp[0], inp_generation=inp[1]))
    _check(blocks, instance, mbal)
    accepted = [b for b in blocks if b is not None and b.instance == instance and b.bal > 0]
    chosen = max(accepted, key=lambda b: b.bal).inp if accepted else value
    if hook is not None:
        hook("phase1")
    blocks = area.write_block(host_id, DBlock(instance=instance, mbal=mbal, bal=mbal,
                                              inp_id=chosen[0], inp_generation=chosen[1]))
    _check(blocks, instance, mbal)
    return chosen
