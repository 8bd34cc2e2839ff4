"""Thin provisioning, the blocking part: finding a VM's thin drives, extending one, re-arming.

Each function runs on a thread of the VM's :class:`~actors.vm.extender.Extender` (a
:class:`~actors.vm.guestcall.GuestCaller` with deadlines), never on the actor's: libvirt calls
go into qemu, and an extension waits for the SPM (its writer, or the mailbox while another
host is SPM, for as long as none is). The libvirt connection is leased only around the
libvirt calls, not while storage is waited for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import libvirt

from actors.host.libvirthandle import LibvirtHandle
from actors.storage.handle import VolumeHandle
from actors.vm.ops import VolumeProvider
from actors.vm.thin import needs_room, next_size, threshold_for
from messaging.errors import LibvirtUnavailable, VMError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveDisk:
    target: str
    node: str
    source: str
    alias: str
    block: bool


def live_disks(domain_xml: str) -> dict[str, LiveDisk]:
    """The writable disks of a live domain XML by target, with the indexed name of their top
    layer (``vda[1]``: a threshold set on it stays with the image across block jobs)."""
    disks = {}
    for disk in ET.fromstring(domain_xml).iterfind("devices/disk[@device='disk']"):
        target, source = disk.find("target"), disk.find("source")
        if target is None or source is None or disk.find("readonly") is not None:
            continue
        dev = target.get("dev", "")
        index = source.get("index")
        alias = disk.find("alias")
        disks[dev] = LiveDisk(dev, f"{dev}[{index}]" if index else dev,
                              source.get("dev") or source.get("file") or "",
                              alias.get("name", "") if alias is not None else "",
                              disk.get("type") == "block")
    return disks


@dataclass(frozen=True)
class Wanted:
    """A drive of the VM's params that names a volume: maybe thin."""

    target: str
    volume: VolumeHandle
    watermark_mib: int | None


@dataclass(frozen=True)
class Found:
    disk: LiveDisk
    volume: VolumeHandle
    watermark_mib: int | None
    capacity: int
    limit: int
    allocation: int
    physical: int


@dataclass(frozen=True)
class Scan:
    found: tuple[Found, ...]
    no_space: frozenset[str]  # targets whose I/O stopped on ENOSPC (dom.diskErrors())


@dataclass(frozen=True)
class Job:
    target: str
    node: str
    source: str  # the device qemu writes to (its size is read here, not through qemu)
    volume: VolumeHandle
    known: tuple[int, int] | None  # (allocation, physical) when known: no need to ask qemu
    force: bool  # extend even if the allocation seems far from the end (ENOSPC)
    chunk: int
    watermark: int
    limit: int
    since: float  # when the need was seen (the latency starts there)
    timeout: float  # the wait for the SPM


@dataclass(frozen=True)
class Outcome:
    sampled_at: float
    allocation: int
    physical: int
    threshold: int
    asked: int = 0  # the size asked of the SPM (0: no extension was needed)
    latency: float | None = None  # since ``Job.since``, up to the device showing the size


def device_size(path: str) -> int:
    """The size of the block device at ``path`` as the kernel shows it now (what qemu
    writes to: qemu keeps no size of its own for a block device it writes into)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class ThinWork:
    """The blocking steps for VM ``vm_id``; stateless (safe from any thread)."""

    def __init__(self, vm_id: str, *, libvirt_handle: LibvirtHandle,
                 storage: VolumeProvider) -> None:
        self.vm_id = vm_id
        self.libvirt = libvirt_handle
        self.storage = storage

    def scan(self, wanted: Sequence[Wanted]) -> Scan:
        """Which of ``wanted`` are thin (a cow volume of fixed size, opened as a block
        device), with their sizes; and which disks stopped on ENOSPC."""
        with self._dom("reading the VM's disks") as dom:
            disks = live_disks(dom.XMLDesc(0))
            errors = dom.diskErrors()
        found = []
        for want in wanted:
            disk = disks.get(want.target)
            if disk is None or not disk.block:
                continue  # not running with it, or a file: it grows by itself
            size = self.storage.volume_size(want.volume)
            if size.limit is None:
                continue
            with self._dom(f"reading the size of {want.target}") as dom:
                _capacity, allocation, physical = dom.blockInfo(want.target)
            found.append(Found(disk, want.volume, want.watermark_mib, size.capacity,
                               size.limit, allocation, physical))
        no_space = frozenset(target for target, code in errors.items()
                             if code == libvirt.VIR_DOMAIN_DISK_ERROR_NO_SPACE)
        return Scan(tuple(found), no_space)

    def ensure(self, job: Job) -> Outcome:
        """Give the drive room if it needs some (or ``job.force``): one chunk more, asked of
        the SPM; check that the device shows it; then set the next threshold.

        A job that knows the allocation (a threshold event says it) does not ask qemu for it:
        qemu's monitor may be busy with a stats call, and the guest is writing."""
        if job.known is None:
            with self._dom(f"reading the size of {job.target}") as dom:
                _capacity, allocation, physical = dom.blockInfo(job.target)
            sampled_at = time.monotonic()
        else:
            (allocation, physical), sampled_at = job.known, job.since
        asked, latency = 0, None
        if (job.force or needs_room(allocation, physical, job.watermark)) \
                and physical < job.limit:
            asked = next_size(physical, job.chunk, job.limit)
            log.debug("VM %s: asking for %d bytes of %s (%.3f s after the need)", self.vm_id,
                      asked, job.target, time.monotonic() - job.since)
            self.storage.extend_volume(job.volume, asked, since=job.since,
                                       timeout=job.timeout)
            physical = device_size(job.source)
            latency = time.monotonic() - job.since
            if physical < asked:
                raise VMError(reason=f"volume {job.volume.vol} was extended to {asked} bytes "
                                     f"but {job.source} shows {physical}")
        threshold = threshold_for(physical, job.watermark, job.limit)
        with self._dom(f"setting the threshold of {job.node}") as dom:
            dom.setBlockThreshold(job.node, threshold)
        return Outcome(sampled_at, allocation, physical, threshold, asked, latency)

    @contextlib.contextmanager
    def _dom(self, what: str) -> Iterator[libvirt.virDomain]:
        with self.libvirt.lease() as conn:
            try:
                yield conn.lookupByUUIDString(self.vm_id)
            except libvirt.libvirtError as e:
                if conn.isAlive() != 1:
                    raise LibvirtUnavailable(reason=str(e)) from e
                raise VMError(reason=f"{what} failed: {e.get_error_message()}") from e
