"""``name=value`` words as typed params, from the verb's schema (not from guessing).

A value is what its param's type says: a string param takes the text as it is
(``password=123456`` and ``vmName=2024`` stay strings), an integer param takes a number,
a size takes units (``size=1G``, ``memSize=512M``: converted to the param's unit), a boolean
takes true/false/yes/no/on/off/1/0, an enum is checked here with the allowed values in the
message, and a map or list param takes JSON (``vmParams=@vm.json`` reads it from a file).
Sizes inside a JSON value (``"memSize": "1G"`` in a vmParams file) are converted too.

A bad value is an :class:`~messaging.errors.InvalidParams` naming the param, as the agent
would answer it, but without a round trip.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from messaging.errors import InvalidParams
from messaging.schema.types import (
    AnyValue,
    Bool,
    Enum,
    Field,
    Float,
    Int,
    ListOf,
    MapOf,
    Size,
    Str,
    Struct,
    Type,
    Uuid,
    parse_size,
)
from messaging.schema.verbs import Verb

from .resolve import suggest

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class WordError(Exception):
    """A word that is not ``name=value`` (a usage error)."""


def parse_words(verb: Verb, words: Sequence[str], base: Mapping[str, Any] | None = None,
                ) -> dict[str, Any]:
    """The params of ``verb`` from ``words`` (over ``base``, e.g. from ``-f FILE``)."""
    params: dict[str, Any] = dict(base or {})
    for word in words:
        name, sep, text = word.partition("=")
        if not sep or not name:
            raise WordError(f"expected name=value, got {word!r}")
        field = verb.by_name.get(name)
        if field is None:
            known = [f.name for f in verb.params]
            hint = suggest(name, known)
            raise InvalidParams(name, "unknown param" + (
                f"; did you mean {' or '.join(hint)}?" if hint else "")
                + (f" ({verb.name} takes {', '.join(known)})" if known
                   else f" ({verb.name} takes no params)"))
        params[name] = parse_value(field, text)
    return params


def parse_value(field: Field, text: str) -> Any:
    """``text`` as a value of ``field``'s type."""
    kind, name = field.type, field.name
    if isinstance(kind, Enum):
        return _enum(kind, text, name)
    if isinstance(kind, Size):
        try:
            return parse_size(text, kind.unit)
        except ValueError as e:
            raise InvalidParams(name, str(e)) from None
    if isinstance(kind, Int):
        try:
            return int(text)
        except ValueError:
            raise InvalidParams(name, f"expected an integer, got {text!r}") from None
    if isinstance(kind, Float):
        try:
            return float(text)
        except ValueError:
            raise InvalidParams(name, f"expected a number, got {text!r}") from None
    if isinstance(kind, Bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InvalidParams(name, f"expected true or false, got {text!r}")
    if isinstance(kind, Str | Uuid):
        return text
    if isinstance(kind, AnyValue):
        try:
            return _json(text, name)
        except InvalidParams:
            return text
    return coerce(kind, _json(text, name), name)


def coerce(kind: Type, value: Any, path: str) -> Any:
    """``value`` (decoded JSON) with sizes given as text converted (``"1G"``), recursively."""
    if isinstance(kind, Size) and isinstance(value, str):
        try:
            return parse_size(value, kind.unit)
        except ValueError as e:
            raise InvalidParams(path, str(e)) from None
    if isinstance(kind, Struct) and isinstance(value, dict):
        return {k: coerce(kind.by_name[k].type, v, f"{path}.{k}") if k in kind.by_name else v
                for k, v in value.items()}
    if isinstance(kind, ListOf) and isinstance(value, list):
        return [coerce(kind.item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(kind, MapOf) and isinstance(value, dict):
        return {k: coerce(kind.value, v, f"{path}.{k}") for k, v in value.items()}
    return value


def coerce_params(verb: Verb, params: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`coerce` for every known param (e.g. of a ``-f`` file)."""
    return {k: coerce(verb.by_name[k].type, v, k) if k in verb.by_name else v
            for k, v in params.items()}


def _enum(kind: Enum, text: str, name: str) -> Any:
    for value in kind.values:
        if str(value) == text:
            return value
    allowed = ", ".join(str(v) for v in kind.values)
    raise InvalidParams(name, f"{text!r} is not one of {allowed}")


def _json(text: str, name: str) -> Any:
    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text()
        except OSError as e:
            raise InvalidParams(name, f"cannot read {text[1:]}: {e.strerror or e}") from None
    try:
        return json.loads(source)
    except ValueError as e:
        raise InvalidParams(name, f"expected JSON{' in ' + text[1:] if source != text else ''}"
                            f" ({e})") from None
