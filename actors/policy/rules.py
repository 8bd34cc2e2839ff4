"""The policy's rule file: TOML, validated, reloaded when it changes.

Why TOML and not Python functions: the rules run inside a root daemon, on the policy
actor's thread. A rule file of Python would be arbitrary code there: an infinite loop stalls
the policy for good, an import or a stray side effect runs as root, and a reload (re-import)
keeps stale state. A TOML file is data: it is parsed and checked completely (types, ranges,
consistency) before it replaces the rules in force, a bad edit is refused with a message
naming the setting (and the last good rules keep running), and what each number does is
fixed, documented and tested code (:mod:`actors.policy.decide`). What an operator tunes on a
node are thresholds and steps, which is what MOM's rule files mostly set too.

``contrib/policy.toml`` is the documented file with every default.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_SIZE = 64 * 1024  # a larger rule file is refused


class RulesError(ValueError):
    pass


@dataclass(frozen=True)
class HostRules:
    #: the host is under memory pressure while MemAvailable is below this share of MemTotal
    pressure_free_percent: float = 20.0


@dataclass(frozen=True)
class KsmRules:
    enabled: bool = False  # the policy controls KSM (Host.setMOMPolicyParameters ksmEnabled)
    run_below_free_percent: float = 20.0  # KSM runs while free memory is below this
    pages_boost: int = 300  # pages_to_scan grows by this at each decision while it runs
    pages_decay: int = 50  # and shrinks by this while it does not need to
    pages_min: int = 64
    pages_max: int = 1250
    sleep_ms_baseline: int = 10  # sleep_millisecs per 16 GiB of host memory (at least 10)

    def __post_init__(self) -> None:
        if self.pages_min > self.pages_max:
            raise RulesError("[ksm] pages_min is above pages_max")


@dataclass(frozen=True)
class BalloonRules:
    enabled: bool = False  # the policy moves balloons (setMOMPolicyParameters ballooningEnabled)
    max_change_percent: float = 5.0  # of memSize, per decision
    min_change_percent: float = 0.5  # of memSize: smaller changes are not made
    min_free_percent: float = 20.0  # a shrunk guest keeps this share of its memory free
    grow_below_free_percent: float = 10.0  # a guest with less free than this gets memory

    def __post_init__(self) -> None:
        if self.grow_below_free_percent >= self.min_free_percent:
            raise RulesError("[balloon] grow_below_free_percent must be below "
                             "min_free_percent (else a guest is shrunk and grown in turn)")
        if self.min_change_percent > self.max_change_percent:
            raise RulesError("[balloon] min_change_percent is above max_change_percent")


@dataclass(frozen=True)
class CpuRules:
    period_us: int = 100000  # the period of the quota a vcpuLimit sets (µs)


@dataclass(frozen=True)
class Rules:
    host: HostRules = field(default_factory=HostRules)
    ksm: KsmRules = field(default_factory=KsmRules)
    balloon: BalloonRules = field(default_factory=BalloonRules)
    cpu: CpuRules = field(default_factory=CpuRules)


#: (low, high) of each number, by "section.key"
BOUNDS: dict[str, tuple[float, float]] = {
    "host.pressure_free_percent": (0, 100),
    "ksm.run_below_free_percent": (0, 100),
    "ksm.pages_boost": (0, 100000),
    "ksm.pages_decay": (0, 100000),
    "ksm.pages_min": (1, 100000),
    "ksm.pages_max": (1, 100000),
    "ksm.sleep_ms_baseline": (1, 60000),
    "balloon.max_change_percent": (0.1, 100),
    "balloon.min_change_percent": (0, 100),
    "balloon.min_free_percent": (0, 90),
    "balloon.grow_below_free_percent": (0, 90),
    "cpu.period_us": (1000, 1000000),
}


def parse(text: str) -> Rules:
    """Rules from the text of a rule file; RulesError naming what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RulesError(f"not valid TOML: {e}") from None
    hints = typing.get_type_hints(Rules)
    sections: dict[str, Any] = {}
    for name, table in data.items():
        if name not in hints:
            raise RulesError(f"unknown section [{name}] (known: {', '.join(sorted(hints))})")
        if not isinstance(table, dict):
            raise RulesError(f"[{name}] must be a table")
        sections[name] = _section(hints[name], name, table)
    return Rules(**sections)


def _section(cls: type[Any], name: str, table: dict[str, Any]) -> Any:
    kinds = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"[{name}] {key}"
        kind = kinds.get(key)
        if kind is None:
            known = ", ".join(f.name for f in dataclasses.fields(cls))
            raise RulesError(f"{where}: unknown setting (known: {known})")
        if kind is bool:
            if not isinstance(value, bool):
                raise RulesError(f"{where}: expected true or false, got {value!r}")
            values[key] = value
        elif isinstance(value, bool) or not isinstance(value, int | float) or \
                (kind is int and not isinstance(value, int)):
            raise RulesError(f"{where}: expected {'an integer' if kind is int else 'a number'}"
                             f", got {value!r}")
        else:
            low, high = BOUNDS[f"{name}.{key}"]
            if not low <= value <= high:
                raise RulesError(f"{where}: {value} is not in {low:.10g}..{high:.10g}")
            values[key] = kind(value)
    return cls(**values)


class RuleFile:
    """The rules in force: the file's (reloaded by :meth:`refresh` when it changed), the
    built-in defaults without a file; a file that does not parse keeps the rules in force."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rules = Rules()
        self.error = ""  # why the file's current content is not in force ("" if it is)
        self.loaded = 0  # how many times a version of the file was taken
        self._seen: tuple[int, int, int] | None = None

    def refresh(self) -> bool:
        """Reload the file if it changed (a stat per call); whether the rules changed."""
        if self.path is None:
            return False
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self._gone()
        except OSError as e:
            return self._refuse((0, 0, 0), f"cannot read {self.path}: {e.strerror}")
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._seen:
            return False
        if st.st_size > MAX_SIZE:
            return self._refuse(key, f"{self.path} is larger than {MAX_SIZE} bytes")
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            return self._refuse(key, f"cannot read {self.path}: {e}")
        try:
            rules = parse(text)
        except RulesError as e:
            return self._refuse(key, f"{self.path}: {e}")
        self._seen, self.error = key, ""
        changed = rules != self.rules
        self.rules = rules
        self.loaded += 1
        log.info("policy rules loaded from %s", self.path)
        return changed

    def _gone(self) -> bool:
        if self._seen == (0, 0, -1):
            return False
        self._seen = (0, 0, -1)
        self.error = f"{self.path} does not exist: the built-in rules are in force"
        log.warning("policy: %s", self.error)
        changed = self.rules != Rules()
        self.rules = Rules()
        return changed

    def _refuse(self, key: tuple[int, int, int], error: str) -> bool:
        if key != self._seen:
            log.error("policy rules not reloaded (the rules in force stay): %s", error)
        self._seen, self.error = key, error
        return False

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "loaded": self.loaded,
                "error": self.error, "rules": dataclasses.asdict(self.rules)}
