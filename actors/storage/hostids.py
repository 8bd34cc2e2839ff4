"""Whether another host still renews its host id: what this host's lease keepers observed.

Each connected pool's keeper renews this host's id on the pool's master domain and, with
every renewal, reads every host's record there (:mod:`actors.storage.lease.observer`); its
state, on the :class:`~actors.storage.spm.board.LeaseBoard`, lists the host ids whose records
are alive (``liveHosts``) as of its latest observation. :meth:`HostIds.liveness` answers from
that, without I/O and without asking an actor: Host.fenceNode's policy asks it (through the
daemon; the host layer does not import storage).

A domain names its pool: the master domain of a pool connected here, or an active domain
of one (its monitor runs under the pool's sub-tree). The answer is ``unknown`` unless this
host can tell: its keeper reported lately, holds this host's own id (its reads of the ids
area work), observed recently, and has watched the others for long enough to call a silent
host dead (``lease_time + io_timeout``, :attr:`LeaseTiming.dead_after_seen`): just after
the keeper starts, a host that died shortly before still shows a record that looks alive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from actors.config import SpmConfig
from actors.directory import ActorDirectory
from actors.storage.calls import POOLS
from actors.storage.spm.board import UNKNOWN, LeaseBoard
from actors.storage.state import PoolRecord, PoolRecords

ALIVE, DEAD, NOT_KNOWN = "alive", "dead", "unknown"


@dataclass(frozen=True)
class HostIdLiveness:
    state: str  # alive | dead | unknown
    reason: str
    sp_uuid: str = ""


class HostIds:
    def __init__(self, *, records: PoolRecords, lease_board: LeaseBoard,
                 directory: ActorDirectory, spm: SpmConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.records = records
        self.lease_board = lease_board
        self.directory = directory
        self.spm = spm
        self.clock = clock

    def _pool_of(self, sd_uuid: str) -> PoolRecord | None:
        for record in self.records.load():
            if record.master_sd == sd_uuid:
                return record
            if self.directory.get(f"{POOLS}/{record.sp_uuid}/{sd_uuid}") is not None:
                return record
        return None

    def liveness(self, sd_uuid: str, host_id: int) -> HostIdLiveness:
        """Whether host id ``host_id`` renews its lease in the pool of domain ``sd_uuid``."""
        record = self._pool_of(sd_uuid)
        if record is None:
            return HostIdLiveness(NOT_KNOWN, f"storage domain {sd_uuid} is in no pool this "
                                  "host is connected to")
        sp = record.sp_uuid
        state = self.lease_board.get(sp)
        detail = state.detail
        now = self.clock()
        if state.status == UNKNOWN or not detail:
            return HostIdLiveness(NOT_KNOWN, f"no report yet from the lease keeper of pool {sp}",
                                  sp)
        own = (detail.get("hostId") or {}).get("state")
        if own != "live":
            return HostIdLiveness(NOT_KNOWN, f"this host does not hold its own host id "
                                  f"{record.host_id} on pool {sp} ({own}): it cannot read the "
                                  "others' records", sp)
        observed = float(detail.get("observedAt") or 0.0)
        since = float(detail.get("observingSince") or 0.0)
        fresh = 2 * self.spm.renew_interval + self.spm.io_timeout
        if not observed or now - observed > fresh:
            age = f"{now - observed:.0f} s ago" if observed else "never"
            return HostIdLiveness(NOT_KNOWN, f"the host ids of pool {sp} were last read {age}",
                                  sp)
        needed = self.spm.lease_time + self.spm.io_timeout
        live = {int(h) for h in detail.get("liveHosts") or []}
        if host_id == record.host_id:
            return HostIdLiveness(ALIVE, f"host id {host_id} is this host's own on pool {sp}",
                                  sp)
        if host_id in live and now - since < needed:
            return HostIdLiveness(NOT_KNOWN, f"this host has watched the host ids of pool "
                                  f"{sp} for {now - since:.0f} s only: a silent host shows "
                                  f"as dead after {needed:g} s", sp)
        if host_id in live:
            return HostIdLiveness(ALIVE, f"its record on the master domain {record.master_sd} "
                                  f"of pool {sp} was renewed within the last {needed:g} s", sp)
        return HostIdLiveness(DEAD, f"host id {host_id} holds no live lease on pool {sp} (not "
                              f"renewed for {needed:g} s, released, or never taken)", sp)
