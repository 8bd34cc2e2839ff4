"""The keeper's :class:`~actors.storage.spm.leaseops.LeaseOps`, over the lease algorithms of
:mod:`actors.storage.lease` (delta lease, ids observer, Disk Paxos).

Each thread of the keeper uses its own files: the renewal thread the delta lease, the
observer and a leader reader; the contend thread the Disk Paxos lease of the current
generation (a new generation gets a new one).
"""

from __future__ import annotations

import threading

from actors.storage.lease import aligned
from actors.storage.lease import errors as lease_errors
from actors.storage.lease.delta import DeltaLease
from actors.storage.lease.observer import IdsObserver, Liveness
from actors.storage.lease.paxos import PaxosLease
from actors.storage.lease.records import HostFlags, LeaderRecord, LeaderState
from actors.storage.lease.timing import LeaseTiming
from actors.storage.spm.keeperconf import KeeperConfig
from actors.storage.spm.leaseops import ALIVE, DEAD, UNKNOWN, HostIdLost, Leader, LeaseHeld

RESOURCE = "SPM"
_LIVENESS = {Liveness.ALIVE: ALIVE, Liveness.DEAD: DEAD, Liveness.UNKNOWN: UNKNOWN}


class LibLeaseOps:
    def __init__(self, config: KeeperConfig) -> None:
        self.config = config
        self.timing = LeaseTiming(config.lease, config.renew_interval, config.io_timeout)
        self.sector = aligned.detect_sector_size(config.ids_path)
        self.delta = DeltaLease(config.ids_path, config.host_id, config.owner, self.timing,
                                sector_size=self.sector)
        self.observer = IdsObserver(config.ids_path, self.timing, sector_size=self.sector,
                                    hosts=config.max_hosts)
        self._reader = PaxosLease(config.leases_path, RESOURCE, config.host_id, 1, self.timing,
                                  sector_size=self.sector, hosts=config.max_hosts)
        self._lock = threading.Lock()
        self._paxos: PaxosLease | None = None

    @property
    def generation(self) -> int:
        return self.delta.generation

    # --- host id ---------------------------------------------------------------------------

    def acquire_host_id(self, *, fast: bool) -> int:
        self.delta.acquire(previous_dead=fast)
        with self._lock:
            if self._paxos is not None:
                self._paxos.close()
            self._paxos = PaxosLease(self.config.leases_path, RESOURCE, self.config.host_id,
                                     self.delta.generation, self.timing,
                                     sector_size=self.sector, hosts=self.config.max_hosts,
                                     host_deadline=lambda: self.delta.deadline)
        return self.delta.generation

    def renew_host_id(self) -> float:
        try:
            return self.delta.renew()
        except (lease_errors.LeaseExpired, lease_errors.HostIdInUse) as e:
            raise HostIdLost(str(e)) from e

    def release_host_id(self) -> None:
        self.delta.release()

    # --- observing -------------------------------------------------------------------------

    def observe(self) -> None:
        self.observer.poll()

    def read_leader(self) -> Leader:
        """The leader record (on the renewal thread's own file)."""
        return _leader(self._reader.read_owner())

    def liveness(self, leader: Leader) -> str:
        if not leader.held:
            return DEAD
        if (leader.owner, leader.generation) == (self.config.host_id, self.delta.generation):
            return ALIVE
        if not 1 <= leader.owner <= self.config.max_hosts:
            return UNKNOWN
        return _LIVENESS[self.observer.liveness(leader.owner, leader.generation)]

    def live_hosts(self) -> list[int]:
        """Host ids whose records are live and not known dead (the mailbox's slots)."""
        found = []
        for host_id in range(1, self.config.max_hosts + 1):
            slot = self.observer.slot(host_id)
            record = slot.record if slot is not None else None
            if record is None or record.flags is not HostFlags.LIVE:
                continue
            if self.observer.liveness(host_id, record.generation) is not Liveness.DEAD:
                found.append(host_id)
        return found

    # --- the SPM lease ---------------------------------------------------------------------

    def _current(self) -> PaxosLease:
        with self._lock:
            if self._paxos is None:
                raise HostIdLost("no host id: acquire it first")
            return self._paxos

    def acquire_spm(self) -> int:
        paxos = self._current()
        leader = _leader(paxos.read_owner())  # the contend thread's own file
        if leader.held and self.liveness(leader) == ALIVE and leader.owner != self.config.host_id:
            raise LeaseHeld(leader.owner, leader.lver)  # its owner renews: no use waiting
        wait = self.timing.dead_after + 2 * self.timing.renew_interval
        try:
            return paxos.acquire(self.observer, wait=wait)
        except lease_errors.LeaseHeld as e:
            raise LeaseHeld(e.owner[0], e.lver, e.message) from e

    def release_spm(self) -> bool:
        return self._current().release()


def _leader(record: LeaderRecord | None) -> Leader:
    if record is None:
        return Leader(0, 0, 0, held=False)
    return Leader(record.lver, record.owner_id, record.owner_generation,
                  held=record.state is LeaderState.HELD)
