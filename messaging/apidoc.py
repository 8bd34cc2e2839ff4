"""Render docs/api.md from the schema: ``python -m messaging.apidoc > docs/api.md``."""

from __future__ import annotations

import sys

from messaging import errors
from messaging.deadline import REPLY_MARGIN
from messaging.schema import SCHEMA
from messaging.schema.types import MISSING, Field, ListOf, Struct


def _params(fields: tuple[Field, ...], indent: str = "") -> list[str]:
    lines = []
    for f in fields:
        flag = "required" if f.required else "optional"
        default = ""
        if not f.required and f.default is not MISSING and f.default is not None:
            default = f", default `{f.default!r}`"
        doc = f" — {f.doc}" if f.doc else ""
        lines.append(f"{indent}- `{f.name}` ({f.type.describe()}, {flag}{default}){doc}")
        inner = f.type.item if isinstance(f.type, ListOf) else f.type
        if isinstance(inner, Struct):
            lines += _params(inner.fields, indent + "  ")
    return lines


def _error_table() -> list[str]:
    rows = ["| code | class | message template |", "| --- | --- | --- |"]
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.VdsmError)]
    for cls in sorted(classes, key=lambda c: (c.code, c.__name__)):
        retry = " (retryable)" if cls.retryable else ""
        rows.append(f"| {cls.code} | `{cls.__name__}`{retry} | {cls.template} |")
    return rows


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from `messaging/schema/` by `python -m messaging.apidoc`; do not edit.",
        "The wire format, events, statuses and security rules are in",
        "[protocol.md](protocol.md); a guided first session is in [quickstart.md](quickstart.md).",
        "",
        "Verbs marked **not implemented** are declared (their params are checked, so clients",
        "can be written against them) but this agent does not implement them yet: calling one",
        "answers `-32601 ... is declared but not implemented on this host`. They are: "
        + ", ".join(f"`{v.name}`" for v in SCHEMA if not v.implemented) + ".",
        "",
        "Deadlines: each request gets its verb's server-side timeout when it is accepted. A",
        "verb that starts an operation with a deadline of its own (a VM operation: its `[vm]`",
        "timeout plus its hooks' budget, each hook executable `[vm] hook_timeout` + 1 s; a",
        "storage call: its `[storage]` timeout) is given until that deadline plus "
        f"{REPLY_MARGIN:g} s,",
        "so the reply is the operation's own outcome (e.g. code 5, qemu not responding), never",
        "a timeout while it still runs. Past the deadline the reply is `-32603 ... did not",
        "finish within N s` and a late result is dropped.",
        "",
    ]
    for namespace in SCHEMA.namespaces():
        lines += [f"## {namespace}", ""]
        for verb in (v for v in SCHEMA if v.namespace == namespace):
            lines.append(f"### `{verb.name}`" + ("" if verb.implemented
                                                   else " (not implemented)"))
            lines.append("")
            if not verb.implemented:
                lines.append("**Declared, not implemented on this agent yet**: calling it "
                             "answers -32601.")
                lines.append("")
            lines.append(verb.doc)
            lines.append("")
            if verb.aliases:
                lines.append(f"Aliases: {', '.join(f'`{a}`' for a in verb.aliases)}. ")
            if verb.operation:
                lines.append(f"Server-side timeout: {verb.timeout:g} s, or the operation's "
                             f"deadline ({verb.operation}) plus {REPLY_MARGIN:g} s if later.")
            else:
                lines.append(f"Server-side timeout: {verb.timeout:g} s.")
            lines.append("")
            if verb.params:
                lines.append("Params:")
                lines.append("")
                lines += _params(verb.params)
            else:
                lines.append("Params: none.")
            lines.append("")
            lines.append(f"Result: {verb.result}")
            lines.append("")
            if verb.starts_task:
                lines.append("Starts a task: `vdsm-client --wait` follows it to its end.")
                lines.append("")
            if verb.job:
                only = f", only with `{verb.job_if}`" if verb.job_if else ""
                lines.append(f"Starts a job (`Host.getJobs` job_type `{verb.job}`{only}): "
                             "`vdsm-client --wait` follows it to its end, `vdsm-client Job "
                             "wait JOBID` too.")
                lines.append("")
    lines += ["## Error codes", "", *_error_table(), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
