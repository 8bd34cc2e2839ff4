"""What the keeper needs from the lease algorithms (the plain layer in actors/storage/lease).

:class:`LeaseOps` is the keeper's whole view of the storage: its host id (a delta lease in
the master domain's ``ids`` area), what it observes of the other hosts, and the SPM lease
(Disk Paxos in the ``leases`` area). Each call does bounded I/O (``io_timeout``) and raises
on failure; none keeps the caller longer than a few ``io_timeout``, except
:meth:`LeaseOps.acquire_host_id`, which may watch a slot for up to ``lease + 2 io_timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

ALIVE, DEAD, UNKNOWN = "alive", "dead", "unknown"


class LeaseHeld(Exception):
    """The SPM lease is held by a live host (``owner``)."""

    def __init__(self, owner: int, lver: int, reason: str = "") -> None:
        super().__init__(reason or f"the SPM lease is held by host {owner} (lver {lver})")
        self.owner = owner
        self.lver = lver


class HostIdLost(Exception):
    """The host id's deadline passed before a renewal completed: acquire it again."""


@dataclass(frozen=True)
class Leader:
    """The SPM lease's leader record: who holds it (owner 0: nobody) and its version."""

    lver: int
    owner: int
    generation: int
    held: bool


class LeaseOps(Protocol):
    def acquire_host_id(self, *, fast: bool) -> int:
        """Take this host's id slot; the new generation. ``fast``: the previous holder of
        the slot is known to be this host's own dead keeper (no need to watch it)."""
        ...

    def renew_host_id(self) -> float:
        """Renew; the new deadline (CLOCK_MONOTONIC). :class:`HostIdLost` if it is too late."""
        ...

    def release_host_id(self) -> None: ...

    def observe(self) -> None:
        """Read every host's slot once (liveness of the others is judged from these reads)."""
        ...

    def read_leader(self) -> Leader: ...

    def liveness(self, leader: Leader) -> str:
        """ALIVE, DEAD or UNKNOWN for the leader's owner, from the observations so far."""
        ...

    def live_hosts(self) -> list[int]:
        """The host ids the observations say are alive (from the last observation)."""
        ...

    def acquire_spm(self) -> int:
        """Run the acquisition; the new lver. :class:`LeaseHeld` if another host has it."""
        ...

    def release_spm(self) -> bool: ...

    @property
    def generation(self) -> int: ...
