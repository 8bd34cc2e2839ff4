"""Fault rules and the rule set the filesystem consults before every operation.

A :class:`Rule` matches a path glob (relative to the mount, ``fnmatch`` style: ``*`` also
matches ``/``), an operation class and optionally a caller process (the pid or any of its
ancestors), and has an effect: ``eio`` (fail with an errno, EIO unless told otherwise),
``delay`` (sleep, then do the operation), ``hang`` (block until the rule is removed or
the set is cleared) or ``pass`` (do the operation: an exemption from the rules after it).
``count`` limits a rule to the next N operations it applies to, ``probability`` makes it
apply to each matching operation with that chance.

A caller held by a delay or hang waits in the kernel *uninterruptibly*, as a process waiting
on a hung block device does: SIGKILL takes effect only once the operation is released. With
``killable`` the held operation instead ends with EINTR as soon as its caller has a SIGKILL
pending (as on NFS, whose waits are killable), and the caller dies.

The :class:`RuleSet` is shared by the filesystem's worker threads and the control server:
every change takes one lock and is seen by the next operation that starts after the change
returned. Rules are tried in the order they were added; the first that matches and applies
decides. This module is plain logic (no FUSE), so it is tested on its own.
"""

from __future__ import annotations

import errno as errnos
import fnmatch
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EFFECTS = ("eio", "delay", "hang", "pass")

OPS: dict[str, frozenset[str]] = {
    "read": frozenset({"read", "readdir", "readlink"}),
    "write": frozenset({"write", "truncate", "fallocate", "chmod", "chown", "utimens"}),
    "open": frozenset({"open", "create"}),
    "fsync": frozenset({"fsync", "fsyncdir"}),
    "stat": frozenset({"getattr", "statfs", "access"}),
    "namespace": frozenset({"mkdir", "rmdir", "unlink", "rename", "symlink", "link", "mknod"}),
    "close": frozenset({"flush"}),
}
"""Operation classes a rule names, and the FUSE operations each one covers."""

ALL_OPS = frozenset().union(*OPS.values())
OP_CLASSES = (*OPS, "any")

KILL_POLL = 0.05
"""Seconds between checks whether the caller of a held ``killable`` operation is killed."""

MAX_ANCESTRY = 64
"""How far up the process tree a ``pid`` filter looks (bounded: /proc can change under us)."""


def parent_of(pid: int) -> int | None:
    """The parent of ``pid`` (a thread id is fine: its process's parent), None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1])


def tgid_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def sigkill_pending(tid: int) -> bool:
    """Whether thread ``tid`` (or its process) has a SIGKILL pending: it is being killed."""
    if tid <= 0:  # a caller in another pid namespace: unknown, so never taken as killed
        return False
    bit = 1 << (signal.SIGKILL - 1)
    try:
        for line in Path(f"/proc/{tid}/status").read_text().splitlines():
            if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
                return True
    except (OSError, ValueError):
        return True  # gone: nobody waits for the answer
    return False


def descends_from(caller: int, ancestor: int) -> bool:
    """Whether process ``caller`` (a thread id as FUSE reports it) is ``ancestor`` or below it."""
    pid: int | None = tgid_of(caller) or caller
    for _ in range(MAX_ANCESTRY):
        if pid is None or pid <= 0:
            return False
        if pid == ancestor:
            return True
        if pid == 1:
            return False
        pid = parent_of(pid)
    return False


@dataclass
class Rule:
    """One fault rule (``id`` is given by the set; ``hits`` and ``blocked`` are live counts)."""

    glob: str
    op: str = "any"
    effect: str = "eio"
    seconds: float = 0.0
    count: int | None = None
    probability: float = 1.0
    errno: int = errnos.EIO
    pid: int | None = None
    killable: bool = False
    id: int = 0
    hits: int = 0
    blocked: int = 0
    released: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        if self.op not in OP_CLASSES:
            raise ValueError(f"unknown operation class {self.op!r} (one of {OP_CLASSES})")
        if self.effect not in EFFECTS:
            raise ValueError(f"unknown effect {self.effect!r} (one of {EFFECTS})")
        if self.glob.startswith("/"):
            raise ValueError(f"glob {self.glob!r} must be relative to the mount")
        if not 0 <= self.seconds <= 3600:
            raise ValueError(f"seconds {self.seconds!r} out of range 0..3600")
        if self.effect == "delay" and self.seconds <= 0:
            raise ValueError("a delay needs seconds > 0")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count {self.count!r} must be at least 1")
        if not 0 < self.probability <= 1:
            raise ValueError(f"probability {self.probability!r} out of range (0, 1]")
        if not 0 < self.errno < 4096:
            raise ValueError(f"errno {self.errno!r} out of range")
        if not isinstance(self.killable, bool):
            raise ValueError(f"killable {self.killable!r} is not a boolean")
        if self.pid is not None and (isinstance(self.pid, bool) or not isinstance(self.pid, int)
                                     or self.pid <= 0):
            raise ValueError(f"pid {self.pid!r} is not a process id")

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Rule:
        allowed = {"glob", "op", "effect", "seconds", "count", "probability", "errno", "pid",
                   "killable"}
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"unknown rule fields {sorted(unknown)}")
        if not isinstance(raw.get("glob"), str):
            raise ValueError("a rule needs a glob (a string)")
        value = raw.get("errno", errnos.EIO)
        if isinstance(value, str):
            if not value.isupper() or not hasattr(errnos, value):
                raise ValueError(f"unknown errno {value!r}")
            raw = {**raw, "errno": getattr(errnos, value)}
        return cls(**raw)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "glob": self.glob, "op": self.op, "effect": self.effect,
                "seconds": self.seconds, "count": self.count, "probability": self.probability,
                "errno": errnos.errorcode.get(self.errno, str(self.errno)), "pid": self.pid,
                "killable": self.killable, "hits": self.hits, "blocked": self.blocked}

    def matches(self, op: str, paths: tuple[str, ...], caller: int) -> bool:
        if self.op != "any" and op not in OPS[self.op]:
            return False
        if not any(fnmatch.fnmatchcase(p, self.glob) for p in paths):
            return False
        return self.pid is None or descends_from(caller, self.pid)


class RuleSet:
    """The live rules; :meth:`apply` runs before each filesystem operation."""

    def __init__(self, *, rng: Callable[[], float] = random.random,
                 killed: Callable[[int], bool] = sigkill_pending) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._spent: dict[int, Rule] = {}  # spent rules that still hold blocked callers
        self._next_id = 1
        self._rng = rng
        self._killed = killed
        self.ops: Counter[str] = Counter()
        """Operations seen, by FUSE operation name (faulted or not)."""

    def add(self, rule: Rule) -> int:
        with self._lock:
            rule.id = self._next_id
            self._next_id += 1
            self._rules.append(rule)
            return rule.id

    def remove(self, rule_id: int) -> bool:
        """Drop the rule and release whatever it holds; whether it existed."""
        with self._lock:
            found = [r for r in self._rules if r.id == rule_id]
            self._rules = [r for r in self._rules if r.id != rule_id]
            spent = self._spent.pop(rule_id, None)
        for rule in [*found, *([spent] if spent else [])]:
            rule.released.set()
        return bool(found or spent)

    def clear(self) -> int:
        """Drop every rule and release every hang at once; how many rules there were."""
        with self._lock:
            rules, self._rules = self._rules, []
            spent, self._spent = list(self._spent.values()), {}
        for rule in [*rules, *spent]:
            rule.released.set()
        return len(rules)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_wire() for r in self._rules]

    def blocked(self) -> int:
        """Operations blocked right now by hangs or delays."""
        with self._lock:
            return sum(r.blocked for r in [*self._rules, *self._spent.values()])

    def _pick(self, op: str, paths: tuple[str, ...], caller: int) -> Rule | None:
        with self._lock:
            self.ops[op] += 1
            for rule in self._rules:
                if not rule.matches(op, paths, caller):
                    continue
                if rule.probability < 1 and self._rng() >= rule.probability:
                    continue
                rule.hits += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count == 0:
                        self._rules.remove(rule)
                        if rule.effect in ("delay", "hang"):
                            self._spent[rule.id] = rule
                if rule.effect in ("delay", "hang"):
                    rule.blocked += 1
                return rule
        return None

    def apply(self, op: str, paths: tuple[str, ...], caller: int) -> None:
        """Apply the first rule that applies to this operation: raise, sleep, block or pass.

        ``paths`` are relative to the mount (a rename gives both names).
        """
        rule = self._pick(op, paths, caller)
        if rule is None or rule.effect == "pass":
            return
        if rule.effect == "eio":
            raise OSError(rule.errno, f"faultfs rule {rule.id}")
        try:
            # clear() cuts a delay short too, so that cleanup never waits out a long one
            deadline = time.monotonic() + rule.seconds if rule.effect == "delay" else None
            while not rule.released.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                if rule.killable:
                    if self._killed(caller):
                        raise OSError(errnos.EINTR, f"faultfs rule {rule.id}: caller killed")
                    left = KILL_POLL if left is None else min(left, KILL_POLL)
                rule.released.wait(left)
        finally:
            with self._lock:
                rule.blocked -= 1
                if rule.blocked == 0 and rule.id in self._spent:
                    del self._spent[rule.id]
