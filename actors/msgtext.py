"""A message as ``Actors.inspect`` shows it: its name and arguments, short, secrets masked.

A proxy call shows as ``stop_task(task_id='5d0e...')``, a message object as
``Timer(what='attach', force=False, reboots=0)``. Values are cut (:data:`VALUE_MAX`
characters each, the whole at :data:`LINE_MAX`), and any argument or map key whose name
suggests a secret (password, passwd, secret, token, ticket, key) shows as ``'***'``, nested
ones included.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Mapping
from typing import Any

VALUE_MAX = 60
LINE_MAX = 200
MASK = "'***'"
_SECRET = re.compile(r"pass|secret|token|ticket|key$|^key|_key", re.IGNORECASE)


def secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def value_text(value: Any, depth: int = 0) -> str:
    """``value`` in at most :data:`VALUE_MAX` characters, secret map entries masked."""
    if isinstance(value, Mapping) and depth < 2:
        items = [f"{k!r}: {MASK if isinstance(k, str) and secret(k) else value_text(v, depth + 1)}"
                 for k, v in list(value.items())[:8]]
        more = ", ..." if len(value) > 8 else ""
        text = "{" + ", ".join(items) + more + "}"
    elif isinstance(value, list | tuple) and depth < 2:
        text = "[" + ", ".join(value_text(v, depth + 1) for v in list(value)[:8]) + \
            (", ...]" if len(value) > 8 else "]")
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= VALUE_MAX else text[: VALUE_MAX - 3] + "..."


def _arguments(pairs: list[tuple[str | None, Any]]) -> str:
    shown = []
    for name, value in pairs:
        if name is None:
            shown.append(value_text(value))
        else:
            shown.append(f"{name}={MASK if secret(name) else value_text(value)}")
    return ", ".join(shown)


def _parameters(cls: type, attr: str) -> tuple[str, ...] | None:
    """The names of the positional parameters of ``cls.attr`` (None if unknown)."""
    try:
        target = getattr(cls, attr)
        params = inspect.signature(target).parameters.values()
    except (AttributeError, TypeError, ValueError):
        return None
    return tuple(p.name for p in params if p.name != "self"
                 and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def describe(message: Any, actor_class: type | None = None) -> str:
    attr_path = getattr(message, "attr_path", None)
    if attr_path is not None:
        name = ".".join(attr_path)
        if not hasattr(message, "args"):
            return name  # an attribute read
        args, kwargs = tuple(message.args), dict(message.kwargs)
        names = _parameters(actor_class, attr_path[0]) if actor_class and len(attr_path) == 1 \
            else None
        pairs: list[tuple[str | None, Any]] = [
            (names[i] if names is not None and i < len(names) else None, a)
            for i, a in enumerate(args)]
        pairs += list(kwargs.items())
        text = f"{name}({_arguments(pairs)})"
    elif dataclasses.is_dataclass(message) and not isinstance(message, type):
        pairs = [(f.name, getattr(message, f.name)) for f in dataclasses.fields(message)]
        text = f"{type(message).__name__}({_arguments(pairs)})"
    else:
        text = type(message).__name__
    return text if len(text) <= LINE_MAX else text[: LINE_MAX - 3] + "..."
