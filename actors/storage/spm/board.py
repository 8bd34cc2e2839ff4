"""The lease board: each connected pool's SPM state as its keeper last reported it.

Written by the lease actor's link thread, read from any thread without asking an actor: the
pool's write gate, ``StoragePool.getSpmStatus``, the writer client (to notice a lost lease while
it waits), ``Actors.inspect``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

UNKNOWN = "Unknown"  # no keeper report (yet, or any more)


@dataclass(frozen=True)
class LeaseState:
    sp_uuid: str
    status: str = UNKNOWN  # SPM | Free | Contend | Unknown
    lver: int = 0  # this host's lver while SPM
    spm_id: int = -1  # who the leader record names (any host), -1 for nobody
    spm_lver: int = -1
    deadline: float = 0.0  # CLOCK_MONOTONIC: this host's lease deadline (writes stop before)
    margin: float = 0.0
    writer_endpoint: str = ""
    writer_pid: int = 0
    writer_ready: bool = False
    reason: str = ""
    keeper_pid: int = 0
    host_id_state: str = ""
    generation: int = 0
    attempts: int = 0  # acquisitions the keeper started (or refused) so far
    received: float = field(default_factory=time.monotonic)
    detail: dict[str, Any] = field(default_factory=dict)

    def may_write(self, now: float | None = None) -> bool:
        """This host is SPM, its writer serves, and the lease has time left."""
        now = time.monotonic() if now is None else now
        return (self.status == "SPM" and self.writer_ready and bool(self.writer_endpoint)
                and now < self.deadline - self.margin)

    def to_wire(self, now: float | None = None) -> dict[str, Any]:
        """``StoragePool.getSpmStatus``'s ``spm_st`` (vdsm's names). A role whose deadline
        passed without a newer report from the keeper is not claimed: its writers are fenced
        by then whatever the keeper is doing."""
        status = self.status if self.status in ("SPM", "Contend") else "Free"
        if status == "SPM" and not self.writer_ready:
            status = "Contend"  # acquired, the writer is starting
        now = time.monotonic() if now is None else now
        if status == "SPM" and now >= self.deadline:
            status = "Free"
        return {"spmStatus": status, "spmId": self.spm_id, "spmLver": self.spm_lver}


class LeaseBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, LeaseState] = {}

    def put(self, state: LeaseState) -> LeaseState | None:
        with self._lock:
            old = self._states.get(state.sp_uuid)
            self._states[state.sp_uuid] = state
            return old

    def get(self, sp_uuid: str) -> LeaseState:
        with self._lock:
            return self._states.get(sp_uuid) or LeaseState(sp_uuid)

    def remove(self, sp_uuid: str) -> None:
        with self._lock:
            self._states.pop(sp_uuid, None)
