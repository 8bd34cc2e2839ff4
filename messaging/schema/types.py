"""Value types of the verb schema.

Each type checks a decoded msgpack value and returns it normalised (a UUID lower-cased, a
float from an int), or raises :class:`InvalidParams` naming the dotted path of the value. The
same objects describe themselves for ``vdsm-client --help`` and docs/api.md.
"""

from __future__ import annotations

import copy
import math
import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from messaging.errors import InvalidParams

MISSING: Any = object()


class Type:
    """Base class: ``check`` validates and normalises, ``describe`` names the type."""

    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _type_name(value: Any) -> str:
    return type(value).__name__


@dataclass(frozen=True)
class Str(Type):
    min_len: int = 0
    max_len: int = 4096
    pattern: str | None = None

    def check(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise InvalidParams(path, f"expected a string, got {_type_name(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise InvalidParams(
                path, f"length {len(value)} is outside [{self.min_len}, {self.max_len}]"
            )
        if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            raise InvalidParams(path, f"{value[:64]!r} does not match {self.pattern}")
        return value

    def describe(self) -> str:
        return "string"


_NOT_TEXT = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
"""Unicode categories that are not text: controls (NUL, newline, escape, DEL...), format
characters (zero-width, bidi overrides), surrogates, private use, unassigned, and the
line and paragraph separators."""


def check_text(value: str, path: str, *, forbidden: str = "") -> str:
    """``value`` if it is one line of printable text (no character of :data:`_NOT_TEXT`'s
    categories, none of ``forbidden``); else :class:`InvalidParams` naming ``path``.

    The one validator of names, descriptions and other free text that ends up in metadata,
    logs, command lines or file names: the schema's :class:`Text` and the code below the
    verbs (which may be reached without the schema) both use it.
    """
    for i, char in enumerate(value):
        if char in forbidden or unicodedata.category(char) in _NOT_TEXT:
            raise InvalidParams(path, f"character {char!r} at position {i} is not allowed "
                                "(one line of printable text"
                                f"{', without ' + repr(forbidden) if forbidden else ''})")
    return value


@dataclass(frozen=True)
class Text(Str):
    """A :class:`Str` that is one line of printable text (see :func:`check_text`)."""

    forbidden: str = ""

    def check(self, value: Any, path: str) -> str:
        return check_text(super().check(value, path), path, forbidden=self.forbidden)

    def describe(self) -> str:
        return "text" + (f" without {self.forbidden!r}" if self.forbidden else "")


@dataclass(frozen=True)
class Path(Str):
    """An absolute filesystem path; never contains NUL. Empty allowed only if ``min_len`` 0."""

    min_len: int = 0
    max_len: int = 4096

    def check(self, value: Any, path: str) -> str:
        text = super().check(value, path)
        if "\0" in text:
            raise InvalidParams(path, "a path cannot contain NUL")
        if text and not text.startswith("/"):
            raise InvalidParams(path, f"{text[:64]!r} is not an absolute path")
        return text

    def describe(self) -> str:
        return "absolute path"


@dataclass(frozen=True)
class Int(Type):
    min: int | None = None
    max: int | None = None

    def check(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParams(path, f"expected an integer, got {_type_name(value)}")
        if self.min is not None and value < self.min:
            raise InvalidParams(path, f"{value} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise InvalidParams(path, f"{value} is above the maximum {self.max}")
        return value

    def describe(self) -> str:
        bounds = ""
        if self.min is not None or self.max is not None:
            low = "" if self.min is None else str(self.min)
            high = "" if self.max is None else str(self.max)
            bounds = f" [{low}..{high}]"
        return "integer" + bounds


@dataclass(frozen=True)
class Size(Int):
    """An :class:`Int` that is an amount of storage or memory, counted in ``unit`` bytes.

    The wire carries the integer; ``vdsm-client`` also accepts units (``1G``, ``512M``) and
    converts them to ``unit``s (see :func:`parse_size`)."""

    unit: int = 1

    def describe(self) -> str:
        what = "bytes" if self.unit == 1 else f"{_UNIT_NAMES.get(self.unit, self.unit)}"
        return f"size in {what}" + super().describe().removeprefix("integer")


_UNIT_NAMES = {1 << 10: "KiB", 1 << 20: "MiB", 1 << 30: "GiB"}
_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
             "P": 1 << 50}


def parse_size(text: str, unit: int = 1) -> int:
    """``text`` (``4096``, ``512M``, ``1G``, ``1.5GiB``, ``2T``) as a count of ``unit`` bytes.

    Suffixes are binary (K = 1024); a number without one is already in ``unit``s. A size
    that is not a whole number of ``unit``s is refused (ValueError), never rounded."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([KMGTP])(?:I?B)?|B)?\s*", text.upper())
    if match is None:
        raise ValueError(f"{text!r} is not a size (a number with an optional unit: "
                         "K, M, G, T, e.g. 512M or 1G)")
    number, suffix = match.groups()
    if suffix is None:
        if "." in number:
            raise ValueError(f"{text!r}: a size without a unit is a whole number")
        return int(number)
    scaled = Fraction(number) * _SUFFIXES[suffix]
    if scaled % unit:
        raise ValueError(f"{text!r} is not a whole number of {_UNIT_NAMES.get(unit, unit)}")
    return scaled // unit


@dataclass(frozen=True)
class Float(Type):
    min: float | None = None
    max: float | None = None

    def check(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidParams(path, f"expected a number, got {_type_name(value)}")
        number = float(value)
        if math.isnan(number):
            raise InvalidParams(path, "NaN is not a valid number")
        if self.min is not None and number < self.min:
            raise InvalidParams(path, f"{number:g} is below the minimum {self.min:g}")
        if self.max is not None and number > self.max:
            raise InvalidParams(path, f"{number:g} is above the maximum {self.max:g}")
        return number

    def describe(self) -> str:
        return "number"


@dataclass(frozen=True)
class Bool(Type):
    def check(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise InvalidParams(path, f"expected a boolean, got {_type_name(value)}")
        return value

    def describe(self) -> str:
        return "boolean"


@dataclass(frozen=True)
class Uuid(Type):
    """A UUID in its canonical text form; returned lower-case. Safe to build a path from."""

    def check(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise InvalidParams(path, f"expected a UUID string, got {_type_name(value)}")
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            raise InvalidParams(path, f"{value[:64]!r} is not a UUID") from None
        canonical = str(parsed)
        if canonical != value.lower():
            raise InvalidParams(path, f"{value[:64]!r} is not a UUID in canonical form")
        return canonical

    def describe(self) -> str:
        return "UUID"


@dataclass(frozen=True)
class Enum(Type):
    values: tuple[Any, ...]

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or value not in self.values:
            allowed = ", ".join(repr(v) for v in self.values)
            raise InvalidParams(path, f"{value!r} is not one of {allowed}")
        return value

    def describe(self) -> str:
        return " | ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class ListOf(Type):
    item: Type
    max_len: int = 1024

    def check(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise InvalidParams(path, f"expected a list, got {_type_name(value)}")
        if len(value) > self.max_len:
            raise InvalidParams(path, f"{len(value)} items exceed the maximum {self.max_len}")
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def describe(self) -> str:
        return f"list of {self.item.describe()}"


@dataclass(frozen=True)
class MapOf(Type):
    """A free-form map with string keys and values of one type."""

    value: Type
    max_len: int = 1024

    def check(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise InvalidParams(path, f"expected a map, got {_type_name(value)}")
        if len(value) > self.max_len:
            raise InvalidParams(path, f"{len(value)} entries exceed the maximum {self.max_len}")
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidParams(path, f"key {key!r} is not a string")
            result[key] = self.value.check(item, f"{path}.{key}")
        return result

    def describe(self) -> str:
        return f"map of string to {self.value.describe()}"


@dataclass(frozen=True)
class AnyValue(Type):
    """Any decoded value (already bounded in size and depth by the codec)."""

    def check(self, value: Any, path: str) -> Any:
        return value

    def describe(self) -> str:
        return "any"


@dataclass(frozen=True)
class Field:
    """One named member of a :class:`Struct` or one param of a verb."""

    name: str
    type: Type
    required: bool = True
    default: Any = MISSING
    doc: str = ""


@dataclass(frozen=True)
class Struct(Type):
    """A map with declared members; unknown members are refused."""

    fields: tuple[Field, ...]
    name: str = "map"
    by_name: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})

    def check(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise InvalidParams(path or "params", f"expected a map, got {_type_name(value)}")
        return check_fields(self.fields, self.by_name, value, path)

    def describe(self) -> str:
        return self.name


def check_fields(
    fields: Sequence[Field], by_name: Mapping[str, Field], value: Mapping[Any, Any], path: str
) -> dict[str, Any]:
    """Validate ``value`` against ``fields``: returns a new dict with defaults filled in."""
    prefix = f"{path}." if path else ""
    for key in value:
        if key not in by_name:
            name = key if isinstance(key, str) else repr(key)
            raise InvalidParams(f"{prefix}{name}", "unknown param")
    result: dict[str, Any] = {}
    for spec in fields:
        if spec.name in value:
            result[spec.name] = spec.type.check(value[spec.name], prefix + spec.name)
        elif spec.required:
            raise InvalidParams(prefix + spec.name, "missing required param")
        elif spec.default is not MISSING:
            # a copy: a handler that mutates a default must not change the schema
            result[spec.name] = copy.deepcopy(spec.default)
    return result
