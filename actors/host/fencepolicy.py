"""``policy`` of Host.fenceNode: do not power off a host that still writes its storage heartbeat.

vdsm's shape: ``{"storageDomainHostIdMap": {sdUUID: hostID, ...}}``, the storage domains of
the target's pool and the target's host id there. A host that still renews its host id (its
delta lease) on any of them is alive: the management layer lost contact with it, the host did
not die, and fencing it would kill VMs that are running. Such a fence is skipped, and the
answer says which domain and host id showed it. Only ``on``, ``off`` and ``reboot`` are
checked (``status`` changes nothing).

This module knows nothing of storage: the daemon hands it a :class:`HostIdQuery` (the storage
subsystem's view of the lease keepers' observations), whose answers are ``alive``, ``dead``
or ``unknown`` with a reason. Only ``alive`` skips the fence: a host that this host cannot
see (a domain of no pool connected here, an observation too young or too old) is fenced, as
vdsm fences when sanlock says anything but LIVE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from messaging.errors import InvalidParams, VdsmError
from messaging.schema.types import Uuid

log = logging.getLogger(__name__)

ALIVE = "alive"
HOST_ID_MAP = "storageDomainHostIdMap"


class HostIdAnswer(Protocol):
    @property
    def state(self) -> str:
        """``alive``, ``dead`` or ``unknown``."""
        ...

    @property
    def reason(self) -> str: ...


class HostIdQuery(Protocol):
    def __call__(self, sd_uuid: str, host_id: int, /) -> HostIdAnswer:
        """Whether host id ``host_id`` renews its lease on storage domain ``sd_uuid``."""
        ...


@dataclass(frozen=True)
class Check:
    sd_uuid: str
    host_id: int
    state: str
    reason: str

    def to_wire(self) -> dict[str, Any]:
        return {"sdUUID": self.sd_uuid, "hostID": self.host_id, "state": self.state,
                "reason": self.reason}


@dataclass(frozen=True)
class Verdict:
    skip: bool
    checks: tuple[Check, ...]

    @property
    def message(self) -> str:
        alive = [c for c in self.checks if c.state == ALIVE]
        if alive:
            c = alive[0]
            return (f"fencing skipped: host id {c.host_id} still renews its lease on storage "
                    f"domain {c.sd_uuid} ({c.reason}), so the host is alive")
        return "; ".join(f"host id {c.host_id} on {c.sd_uuid}: {c.state} ({c.reason})"
                         for c in self.checks)


def parse_policy(policy: Any) -> dict[str, int]:
    """The host id map of a checked ``policy`` (the schema checked its shape)."""
    if not policy:
        return {}
    mapping = policy.get(HOST_ID_MAP) or {}
    checked = {}
    for sd_uuid, host_id in mapping.items():
        sd = Uuid().check(sd_uuid, f"policy.{HOST_ID_MAP}.<key>")
        checked[sd] = host_id
    if not checked:
        raise InvalidParams(f"policy.{HOST_ID_MAP}", "empty: name the target's storage "
                            "domains and its host id on them, or send no policy")
    return checked


def decide(host_ids: dict[str, int], query: HostIdQuery) -> Verdict:
    """Skip when any domain of the map shows the host id alive; a failing query is
    'unknown' (the fence goes on, as in vdsm)."""
    checks = []
    for sd_uuid, host_id in host_ids.items():
        try:
            answer = query(sd_uuid, host_id)
            check = Check(sd_uuid, host_id, answer.state, answer.reason)
        except VdsmError as e:
            check = Check(sd_uuid, host_id, "unknown", e.message)
        checks.append(check)
        if check.state == ALIVE:
            break
    return Verdict(any(c.state == ALIVE for c in checks), tuple(checks))
