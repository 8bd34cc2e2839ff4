"""From the command line's words to a verb: names, aliases, and what to say when it is wrong.

Accepted forms: ``Namespace verb`` (the namespace in any case), ``Namespace.verb``, a 2011
alias alone (``ping``, ``getVdsCapabilities``, ``list``) and an alias after its namespace
(``VM continue``, ``VM getVmStats``). A word that names nothing gets the closest names
("did you mean ...") and the namespace's verbs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from messaging.schema import SCHEMA
from messaging.schema.verbs import Verb

#: what vdsm-client itself adds to namespaces (not verbs of the agent)
CLIENT_COMMANDS = {"VM": ("list",), "Task": ("wait",), "Job": ("wait",)}
#: namespaces of vdsm-client's own (the agent has no Job verbs: Host.getJobs lists jobs)
CLIENT_NAMESPACES = ("Job",)
TOP_COMMANDS = ("events", "completion")


class UsageError(Exception):
    """The words name no verb (exit 2); the message says what would."""


@dataclass(frozen=True)
class Target:
    """What the words name: a verb, or a client command (``VM list``, ``Task wait``)."""

    verb: Verb | None
    command: str  # "" for a verb, else "VM list" / "Task wait" / "Job wait"
    rest: tuple[str, ...]  # the words after the name (name=value ...)


def all_namespaces() -> list[str]:
    """The agent's namespaces and the client's own."""
    return sorted({*SCHEMA.namespaces(), *CLIENT_NAMESPACES})


def namespace(word: str) -> str | None:
    """The namespace ``word`` names, in any case."""
    for name in all_namespaces():
        if name.lower() == word.lower():
            return name
    return None


def suggest(word: str, candidates: Iterable[str]) -> list[str]:
    """The closest candidates to ``word`` (case-insensitive), best first."""
    pool = sorted(set(candidates))
    lowered = {c.lower(): c for c in pool}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=3, cutoff=0.6)
    prefixed = [c for c in pool if c.lower().startswith(word.lower()) and word]
    seen: list[str] = []
    for name in [*(lowered[c] for c in close), *prefixed]:
        if name not in seen:
            seen.append(name)
    return seen[:3]


def _did_you_mean(found: Sequence[str]) -> str:
    return f"; did you mean {' or '.join(found)}?" if found else ""


def verbs_of(ns: str) -> list[Verb]:
    return [v for v in SCHEMA if v.namespace == ns]


def names_in(ns: str) -> dict[str, str]:
    """Every word that names something after ``ns``: short names, aliases of its verbs and
    the client's own commands; each mapped to a verb name or a client command."""
    names = {v.short_name: v.name for v in verbs_of(ns)}
    for alias, target in SCHEMA.aliases().items():
        if target.split(".", 1)[0] == ns and "." not in alias:
            names.setdefault(alias, target)
    for command in CLIENT_COMMANDS.get(ns, ()):
        names[command] = f"{ns} {command}"
    return names


def resolve(words: Sequence[str]) -> Target:
    """The target of ``words`` (at least one), or UsageError saying what is wrong."""
    first, rest = words[0], tuple(words[1:])
    if "." in first and first in SCHEMA:
        return Target(SCHEMA.lookup(first), "", rest)
    ns = namespace(first)
    if ns is not None:
        if not rest or "=" in rest[0]:
            raise UsageError(f"{ns} needs a verb\n{listing(ns)}")
        names = names_in(ns)
        word = rest[0]
        target = names.get(word) or next(
            (t for n, t in names.items() if n.lower() == word.lower()), None)
        if target is None:
            raise UsageError(f"{ns} has no verb {word!r}"
                             f"{_did_you_mean(suggest(word, names))}\n{listing(ns)}")
        if " " in target:
            return Target(None, target, rest[1:])
        return Target(SCHEMA.lookup(target), "", rest[1:])
    aliases = {a for a in SCHEMA.aliases() if "." not in a}
    if first in aliases:
        return Target(SCHEMA.lookup(first), "", rest)
    everything = [*all_namespaces(), *aliases, *TOP_COMMANDS, *(v.name for v in SCHEMA)]
    raise UsageError(f"no namespace or verb {first!r}{_did_you_mean(suggest(first, everything))}"
                     f"; namespaces: {', '.join(all_namespaces())}")


def listing(ns: str) -> str:
    """The verbs of ``ns``, one a line, marking those declared but not implemented."""
    lines = [f"{ns} verbs:"]
    for verb in verbs_of(ns):
        mark = "  (not implemented)" if not verb.implemented else ""
        aliases = [a for a in verb.aliases if "." not in a and a != verb.short_name]
        also = f"  [alias: {', '.join(aliases)}]" if aliases else ""
        lines.append(f"  {verb.short_name:<26} {verb.doc}{mark}{also}")
    for command in CLIENT_COMMANDS.get(ns, ()):
        lines.append(f"  {command:<26} {_COMMAND_DOCS[f'{ns} {command}']} (vdsm-client)")
    return "\n".join(lines)


def listing_of(command: str) -> str:
    """What a client command (``VM list``) does."""
    return _COMMAND_DOCS[command]


_COMMAND_DOCS = {
    "VM list": "A table of the VMs: name, id, status, CPU, memory, display, uptime.",
    "Task wait": "Follow a task (Task wait TASKID) until it ends; exit with its outcome.",
    "Job wait": "Follow a job (Job wait JOBID: a VM's hibernation, restore or migration, "
                "listed by Host.getJobs) until it ends; exit with its outcome.",
}
