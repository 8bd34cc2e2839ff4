"""VM names wherever a vmID is: ``vdsm-client VM pause vmID=web1``.

A vmID that is not a UUID is taken as a VM name and looked up in ``Host.getVMList``. Exactly
one VM of that name: its id is sent. None: the lookup fails as "not found". Several (names
are not unique on a host): refused, listing the ids, so that nothing is done to the wrong
VM.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from messaging.errors import InvalidParams
from messaging.schema.types import Uuid
from messaging.schema.verbs import Verb

Call = Callable[[str, dict[str, Any]], Any]


class NoSuchName(InvalidParams):
    """A vmID that is neither a UUID nor the name of a VM (exit code "not found")."""


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def vm_id_params(verb: Verb) -> list[str]:
    return [f.name for f in verb.params if f.name == "vmID" and isinstance(f.type, Uuid)]


def resolve_names(verb: Verb, params: dict[str, Any], call: Call) -> dict[str, Any]:
    """``params`` with VM names in vmID params replaced by the ids (one lookup at most)."""
    names = [p for p in vm_id_params(verb)
             if isinstance(params.get(p), str) and params[p] and not is_uuid(params[p])]
    if not names:
        return params
    vms: list[dict[str, Any]] = call("Host.getVMList", {})
    resolved = dict(params)
    for param in names:
        resolved[param] = vm_id_of(params[param], vms, param)
    return resolved


def vm_id_of(name: str, vms: list[dict[str, Any]], param: str = "vmID") -> str:
    """The id of the one VM called ``name`` in a ``Host.getVMList`` answer."""
    found = sorted(str(vm["vmID"]) for vm in vms if vm.get("vmName") == name)
    if not found:
        raise NoSuchName(param, f"{name[:64]!r} is not a UUID, nor the name of a VM of "
                         "this host")
    if len(found) > 1:
        raise InvalidParams(param, f"{len(found)} VMs are named {name[:64]!r} "
                            f"({', '.join(found)}): give the vmID")
    return found[0]
