"""Errors that another agent process sent, rebuilt as the class that owns their code.

The owner of a code is the first class that has it, depth first through the tree in the
order the classes were defined (importing any ``messaging.errors`` module loads the whole
tree first). tests/messaging/test_errors.py pins the owner of each code.
"""

from __future__ import annotations

from typing import Any

from messaging.errors.base import VdsmError
from messaging.errors.protocol import InternalError


def _subclasses(cls: type[VdsmError]) -> list[type[VdsmError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def error_from_wire(error: Any) -> VdsmError:
    """The error another agent process sent (its ``code``, ``message``, ``data``), as an
    instance of the class that owns the code here (the message is kept as it was)."""
    if not isinstance(error, dict):
        return InternalError(reason=f"malformed error reply {error!r:.200}")
    code = error.get("code", -32603)
    message = str(error.get("message", ""))
    cls: type[VdsmError] = VdsmError
    for candidate in _subclasses(VdsmError):
        if candidate.code == code:
            cls = candidate
            break
    made = cls.from_wire(message, error.get("data"))
    if made.code != code:  # an unknown code: keep it as it came
        made.code = code  # type: ignore[misc]
    return made
