"""The lease layer's errors: leaves of the agent's one exception tree (messaging.errors).

``messaging.errors`` imports nothing but ``typing``, so the keeper process stays light.
"""

from __future__ import annotations

from messaging.errors import LeaseError, StorageBusy, StorageError, StorageTimeout


class IoTimeout(StorageTimeout):
    """An I/O did not complete within io_timeout (it may still be stuck: it is abandoned)."""

    template = "{what}: no answer within {timeout:g} s"


class IoBusy(StorageBusy):
    """The previous I/O on this file is still stuck: no new one is started."""

    template = ("{what} has {pending} I/O still running (for {age:.1f} s): "
                "not starting another")


class IoFailed(StorageError):
    """The storage answered an I/O with an error (EIO, a short file, a vanished path)."""

    template = "{what}: {reason}"


class ChecksumError(LeaseError):
    """A sector holds something that is not a valid record of the kind expected: torn,
    foreign or garbage. It is never trusted."""

    template = "{lease}: sector {sector} is not a valid {kind} record: {reason}"


class LeaseExpired(LeaseError):
    """The lease's validity ended before a renewal landed: it is lost for good."""

    template = "{lease}: the lease expired ({reason})"


class HostIdInUse(LeaseError):
    """Another owner is still renewing this host id, or took it over meanwhile."""

    template = "{lease}: host id {host_id} is in use by {owner!r}"


class LeaseHeld(LeaseError):
    """Another (host id, generation) holds the resource and is not known to be dead."""

    template = "{lease}: held by host {host_id} generation {generation} at lver {lver}"

    def __init__(self, *, lease: str, host_id: int, generation: int, lver: int) -> None:
        super().__init__(lease=lease, host_id=host_id, generation=generation, lver=lver)
        self.owner = (host_id, generation)
        self.lver = lver


class LeaseContended(LeaseError):
    """Ballots kept being overtaken by other contenders; try again."""

    template = "{lease}: {attempts} ballots were overtaken by other contenders"
    retryable = True
