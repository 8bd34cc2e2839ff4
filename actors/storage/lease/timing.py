"""The three numbers every lease decision rests on, and the bounds derived from them.

Hosts share no clock: each measures only durations on its own monotonic clock. Every bound
below is a duration that one host measures by itself; the derivations assume only that the
rates of the hosts' clocks differ by much less than ``io_timeout / lease`` (quartz drifts by
~1e-5; NTP slews by at most 5e-4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LeaseTiming:
    """``lease``: how long a holder may go without a successful renewal; ``renew_interval``:
    how often it renews; ``io_timeout``: the longest one read or write of one or a few sectors
    may take before it counts as failed. All in seconds."""

    lease: float
    renew_interval: float
    io_timeout: float

    def __post_init__(self) -> None:
        for name in ("lease", "renew_interval", "io_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.renew_interval + 2 * self.io_timeout >= self.lease:
            raise ValueError(
                f"lease {self.lease:g} s must exceed renew_interval + 2 x io_timeout "
                f"({self.renew_interval:g} + 2 x {self.io_timeout:g} s): a renewal issued on time "
                "that takes the whole io_timeout must land before the writers' cutoff")

    @property
    def dead_after_seen(self) -> float:
        """``lease + io_timeout``: how long, counted from the *completion* of the first read
        that showed a host record, a later read (counted from its *issue*) must still show
        the very same record before the holder counts as dead.

        Let ``c`` be that completion. The holder's last successful renewal wrote the record
        we see, so it was issued before it landed, hence before ``c``: the holder's validity
        ends before ``c + lease``. A later renewal would have to land before the validity
        ends (one that completes later does not count), so before ``c + lease``; a read
        issued at ``T > c + lease + io_timeout`` is served after ``T`` and still shows the old
        record: no renewal landed, the holder's validity ended before ``T - io_timeout``, and
        any write it (or its writers) issued while valid and that completed within
        ``io_timeout`` has landed before ``T``.
        """
        return self.lease + self.io_timeout

    @property
    def dead_after(self) -> float:
        """``lease + 2 x io_timeout``: the same bound counted from the *issue* of the first
        read. A read that counts completes within ``io_timeout`` of its issue, so this is
        never shorter than :attr:`dead_after_seen`; it is what a contender that knows only
        when it started watching (as safelease does) must wait."""
        return self.lease + 2 * self.io_timeout

    @property
    def writer_margin(self) -> float:
        """``io_timeout``: writers must not issue a write past ``deadline - writer_margin``,
        and the keeper kills them then. A write issued before that and completing within
        ``io_timeout`` has landed by the deadline; :attr:`dead_after_seen` adds another
        ``io_timeout`` after the deadline before any other host may act, which covers the kill
        itself (delivery of SIGKILL, also to a stopped writer) and the clocks' drift."""
        return self.io_timeout

    @property
    def settle(self) -> float:
        """``2 x io_timeout``: how long a delta-lease claimant waits between writing its claim
        and reading it back. A competing claim issued before ours was read back lands within
        ``io_timeout`` of its issue; twice that leaves room for our own write's latency."""
        return 2 * self.io_timeout

    def failover(self, poll_interval: float) -> float:
        """The longest time from a holder's death to a contender that was already polling the
        ids area every ``poll_interval`` seconds judging it dead, when the contender's own
        reads complete promptly: ``lease + 2 x io_timeout + 2 x poll_interval``.

        The dead holder's last renewal lands at most ``io_timeout`` after its death; the
        contender's next poll sees it within ``poll_interval``; the poll that proves the
        holder dead is the first one issued more than :attr:`dead_after_seen` later, within
        another ``poll_interval``. Acquiring the SPM lease then takes a few prompt I/Os and
        no waiting. A contender that starts polling only at the death (cold) is bounded the
        same way with its first poll in place of the first poll after the last renewal."""
        if poll_interval <= 0:
            raise ValueError("the poll interval must be positive")
        return self.lease + 2 * self.io_timeout + 2 * poll_interval
