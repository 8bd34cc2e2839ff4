"""Sizing of volumes on block domains (loop and LVM): what a volume is allocated.

A block volume has a fixed allocation, as an LV has extents: a raw volume its whole
capacity, a sparse cow volume ``initialSize`` (else ``chunk_size``) but at least what an
empty qcow2 of that capacity needs, a preallocated cow volume what a fully allocated qcow2
needs. A cow volume is never allocated (nor extended) past the fully allocated size.
"""

from __future__ import annotations

import functools

from actors.storage import qemuimg
from actors.storage.sd.records import Allocation, VolumeCreateRequest, VolumeFormat
from messaging.errors import InvalidParams

DEFAULT_CHUNK = 1 << 30
"""A thin volume's allocation when the request gives no initialSize (vdsm's 1 GiB chunk)."""


def round_up(size: int, align: int) -> int:
    return (size + align - 1) // align * align


@functools.lru_cache(maxsize=256)
def measure_new_qcow2(capacity: int) -> qemuimg.Measure:
    """qemu-img's needs for an empty qcow2 of ``capacity`` (cached: it only depends on it)."""
    return qemuimg.measure(out_format="qcow2", size=capacity)


def check_block_request(req: VolumeCreateRequest) -> None:
    """Refuse what a block domain cannot hold (as vdsm does): raw sparse, a stray initialSize."""
    if req.format is VolumeFormat.RAW and req.allocation is not Allocation.PREALLOCATED:
        raise InvalidParams("preallocate", "a raw volume on a block domain is preallocated")
    if req.initial_size is not None and (
            req.format is not VolumeFormat.COW or req.allocation is not Allocation.SPARSE):
        raise InvalidParams("initialSize", "only a sparse cow volume has an initial size")


def full_size(capacity: int, align: int) -> int:
    """The allocation of a fully allocated qcow2 of ``capacity``, rounded up to ``align``."""
    return round_up(measure_new_qcow2(capacity).fully_allocated, align)


def allocation(req: VolumeCreateRequest, *, chunk_size: int, align: int) -> int:
    """Bytes allocated to the volume at creation, a multiple of ``align``."""
    if req.format is VolumeFormat.RAW:
        return round_up(req.capacity, align)
    full = full_size(req.capacity, align)
    if req.allocation is Allocation.PREALLOCATED:
        return full
    wanted = max(req.initial_size or chunk_size, measure_new_qcow2(req.capacity).required)
    return min(round_up(wanted, align), full)


def extension(format: VolumeFormat, capacity: int, size: int, align: int) -> int:
    """The allocation an extension to ``size`` bytes gets (capped at a full qcow2)."""
    if format is not VolumeFormat.COW:
        raise ValueError("only cow volumes are extended")
    return min(round_up(size, align), full_size(capacity, align))
