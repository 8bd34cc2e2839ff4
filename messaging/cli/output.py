"""Printing results: ``-o json`` (the default, as PROTOCOL.md says), ``table`` or ``yaml``.

A table shows a list of maps one row each, a map of maps (``Host.getAllTasksStatuses``,
``Host.getStorageRepoStats``) one row per key, a map as name/value rows; nested values are
shown as compact JSON, cut at :data:`CELL_MAX` characters. Bytes are base64 in every format.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

FORMATS = ("json", "table", "yaml")
CELL_MAX = 48


def _plain(value: Any) -> Any:
    """``value`` with bytes as ``{"$base64": ...}`` (as JSON shows them)."""
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def render(value: Any, fmt: str = "json") -> str:
    if fmt == "json":
        return json.dumps(_plain(value), indent=2, sort_keys=True)
    if fmt == "yaml":
        return yaml.safe_dump(_plain(value), sort_keys=True, default_flow_style=False,
                              allow_unicode=True).rstrip("\n")
    if fmt == "table":
        return table(_plain(value))
    raise ValueError(f"unknown output format {fmt!r} (one of {', '.join(FORMATS)})")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str | int):
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    text = " ".join(text.split())  # one line
    return text if len(text) <= CELL_MAX else text[: CELL_MAX - 3] + "..."


def grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last one is not padded."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = []
    for row in (header, *rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _columns(maps: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for entry in maps:
        for key in entry:
            if key not in columns:
                columns.append(key)
    return columns


def table(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = _columns(value)
        return grid([c.upper() for c in columns],
                    [[cell(entry.get(c)) for c in columns] for entry in value])
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        columns = _columns(list(value.values()))
        return grid(["ID", *(c.upper() for c in columns)],
                    [[str(key), *(cell(entry.get(c)) for c in columns)]
                     for key, entry in sorted(value.items())])
    if isinstance(value, dict):
        return grid(["NAME", "VALUE"], [[str(k), cell(v)] for k, v in sorted(value.items())])
    if isinstance(value, list):
        return "\n".join(cell(v) for v in value)
    return cell(value)
