"""vdsm-console: an interactive console for a person debugging a live agent.

It shows the live actor tree (states, mailbox depths, restart counts, last failures),
inspects one actor, watches the event stream and calls verbs. It talks to vdsmd over the
same API as every client (Actors.list, Actors.inspect, the PUB stream): it has no back door.

With a terminal it uses prompt-toolkit (history, completion of commands and actor paths);
without one (a pipe) it reads commands line by line, which also makes it scriptable.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from messaging import endpoints
from messaging.cli import names, values
from messaging.client import CallTimeout, Client, ClientError, Subscriber, parse_value
from messaging.errors import VdsmError
from messaging.policyview import POLICY_PATH, render_policy
from messaging.schema import SCHEMA

HELP = """\
commands:
  tree                      the actor tree: state, mailbox depth, restarts, uptime, failures
  ls                        the same as a flat table
  inspect PATH|VM           one actor's own state, recent messages (with their arguments,
                            secrets masked), supervisor policy; a VM's name or id works too
  top [SECONDS]             the busiest actors every second: messages/s, mailbox depth, and
                            each VM's CPU (for SECONDS, default 10; Ctrl-C stops)
  watch [PREFIX] [SECONDS]  print events whose topic starts with PREFIX (Ctrl-C stops)
  failures                  actors that failed, restarted or were given up on
  policy                    the policy: rules, switches, its inputs and last decisions
  call VERB [name=value..]  call any verb, e.g. call Host.getStats (values as vdsm-client
                            takes them: typed by the schema, sizes with units, VM names)
  crash PATH [REASON]       fault injection (needs [debug] fault_injection = true)
  help                      this text
  quit                      leave (also Ctrl-D)
"""


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


VMS = "/vms/"


def vm_label(path: str, names: Mapping[str, str]) -> str:
    """``path`` with the VM's name after it when it is a VM actor's (``/vms/<id> [web1]``)."""
    if path.startswith(VMS) and path[len(VMS):] in names:
        return f"{path} [{names[path[len(VMS):]]}]"
    return path


def render_tree(actors: Sequence[dict[str, Any]],
                names: Mapping[str, str] | None = None) -> str:
    """The tree of Actors.list entries, children indented under their supervisor; VM actors
    show their VM's name (``names``: vmID -> vmName)."""
    names = names or {}
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    for actor in actors:
        by_parent.setdefault(actor.get("supervisor"), []).append(actor)
    lines = [f"{'ACTOR':<56} {'STATE':<11} {'MBOX':>4} {'RST':>3} {'UP':>6}  LAST FAILURE"]
    known = {a["path"] for a in actors}

    def walk(parent: str | None, depth: int) -> None:
        for actor in sorted(by_parent.get(parent, []), key=lambda a: a["path"]):
            name = actor["path"] if depth == 0 else actor["path"].rsplit("/", 1)[-1]
            vm = names.get(name) if actor["path"].startswith(VMS) else None
            label = f"{'  ' * depth}{name} ({actor['class']}{', ' + vm if vm else ''})"
            failure = actor.get("lastFailure") or ""
            if failure:
                failure = f"{failure[:60]} ({_age(actor.get('lastFailureAgo', 0.0))} ago)"
            lines.append(
                f"{label:<56} {actor['state']:<11} {actor['mailbox']:>4} "
                f"{actor['restarts']:>3} {_age(actor['uptime']):>6}  {failure}"
            )
            walk(actor["path"], depth + 1)

    roots = [a for a in actors if a.get("supervisor") not in known]
    for root in sorted(roots, key=lambda a: a["path"]):
        by_parent.setdefault("__root__", []).append(root)
    walk("__root__", 0)
    return "\n".join(lines)


def render_table(actors: Sequence[dict[str, Any]],
                 names: Mapping[str, str] | None = None) -> str:
    names = names or {}
    lines = [f"{'PATH':<58} {'CLASS':<20} {'STATE':<11} {'MBOX':>4} {'RST':>3} {'UP':>6}"]
    for a in actors:
        lines.append(f"{vm_label(a['path'], names):<58} {a['class']:<20} {a['state']:<11} "
                     f"{a['mailbox']:>4} {a['restarts']:>3} {_age(a['uptime']):>6}")
    return "\n".join(lines)


def render_top(actors: Sequence[dict[str, Any]], rates: Mapping[str, float],
               names: Mapping[str, str], cpu: Mapping[str, float], limit: int = 30) -> str:
    """The actors by message rate (then mailbox depth), with each VM's CPU."""
    ranked = sorted(actors, key=lambda a: (-rates.get(a["path"], 0.0), -a["mailbox"],
                                           a["path"]))
    lines = [f"{'ACTOR':<58} {'STATE':<11} {'MSG/S':>7} {'MBOX':>5} {'RST':>3} {'CPU%':>6}"]
    for a in ranked[:limit]:
        vm_id = a["path"][len(VMS):] if a["path"].startswith(VMS) else ""
        load = f"{cpu[vm_id]:.1f}" if vm_id in cpu else ""
        lines.append(f"{vm_label(a['path'], names):<58} {a['state']:<11} "
                     f"{rates.get(a['path'], 0.0):>7.1f} {a['mailbox']:>5} {a['restarts']:>3} "
                     f"{load:>6}")
    return "\n".join(lines)


def render_inspect(info: dict[str, Any]) -> str:
    lines = [f"{info['path']}  ({info['class']}, {info['state']})"]
    lines.append(f"  supervisor: {info.get('supervisor')}   restarts: {info['restarts']}   "
                 f"mailbox: {info['mailbox']}   uptime: {_age(info['uptime'])}   "
                 f"answering: {info.get('answering')}")
    if info.get("lastFailure"):
        lines.append(f"  last failure: {info['lastFailure']}")
    if info.get("policy"):
        p = info["policy"]
        lines.append(f"  policy: {p.get('strategy')}, at most {p.get('maxRestarts')} restarts "
                     f"in {p.get('within')}s, backoff {p.get('backoffInitial')}s.."
                     f"{p.get('backoffMax')}s")
    if info.get("children"):
        lines.append(f"  children: {', '.join(info['children'])}")
    if info.get("note"):
        lines.append(f"  note: {info['note']}")
    own = info.get("detail")
    if isinstance(own, dict) and own:
        lines.append("  state:")
        text = json.dumps(own, indent=2, sort_keys=True, default=str)
        lines += ["    " + line for line in text.splitlines()]
    recent = info.get("recentMessages") or []
    if recent:
        lines.append("  recent messages (newest last):")
        lines += [f"    {m['ago']:>8.3f}s ago  {m['message']}" for m in recent[-10:]]
    return "\n".join(lines)


class Console:
    def __init__(self, api: str, events: str, out: TextIO = sys.stdout,
                 timeout: float = 10.0) -> None:
        self.api = api
        self.events = events
        self.out = out
        self.client = Client(api, timeout=timeout)
        self._paths: list[str] = []
        self._names: dict[str, str] = {}
        self.failed = False  # did a command fail (vdsm-console -c exits 1 then)
        self.commands: dict[str, Callable[[list[str]], None]] = {
            "tree": self.cmd_tree,
            "ls": self.cmd_ls,
            "inspect": self.cmd_inspect,
            "top": self.cmd_top,
            "watch": self.cmd_watch,
            "failures": self.cmd_failures,
            "policy": lambda args: self.say(render_policy(
                self.client.call("Actors.inspect", {"path": POLICY_PATH}))),
            "call": self.cmd_call,
            "crash": self.cmd_crash,
            "help": lambda args: self.say(HELP),
        }

    def close(self) -> None:
        self.client.close()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def fail(self, text: str) -> None:
        """Say why a command failed (and remember that one did)."""
        self.failed = True
        self.say(text)

    # --- commands -----------------------------------------------------------------------

    def actors(self) -> list[dict[str, Any]]:
        actors: list[dict[str, Any]] = self.client.call("Actors.list")
        self._paths = [a["path"] for a in actors]
        return actors

    def vm_names(self) -> dict[str, str]:
        """vmID -> vmName of the host's VMs ({} while the agent cannot say: recovering)."""
        try:
            vms = self.client.call("Host.getVMList")
        except ClientError:
            return self._names
        self._names = {v["vmID"]: v.get("vmName", "") for v in vms}
        return self._names

    def cmd_tree(self, _args: list[str]) -> None:
        self.say(render_tree(self.actors(), self.vm_names()))

    def cmd_ls(self, _args: list[str]) -> None:
        self.say(render_table(self.actors(), self.vm_names()))

    def actor_path(self, word: str) -> str:
        """An actor path, or the path of the VM a name or vmID names."""
        if word.startswith("/"):
            return word
        names = self.vm_names()
        if word in names:
            return VMS + word
        found = [vm_id for vm_id, name in names.items() if name == word]
        if len(found) == 1:
            return VMS + found[0]
        if found:
            raise ValueError(f"{len(found)} VMs are named {word!r}: {', '.join(found)}")
        raise ValueError(f"{word!r} is not an actor path, nor a VM's name or id")

    def cmd_inspect(self, args: list[str]) -> None:
        if len(args) != 1:
            self.fail("usage: inspect PATH|VM")
            return
        path = self.actor_path(args[0])
        self.say(render_inspect(self.client.call("Actors.inspect", {"path": path})))

    def cmd_failures(self, _args: list[str]) -> None:
        bad = [a for a in self.actors() if a["restarts"] or a.get("lastFailure")
               or a["state"] != "running"]
        self.say(render_table(bad, self.vm_names()) if bad else "no failures")

    def cmd_top(self, args: list[str]) -> None:
        seconds = float(args[0]) if args else 10.0
        deadline = time.monotonic() + seconds
        before: tuple[float, dict[str, int]] | None = None
        try:
            while True:
                actors, now = self.actors(), time.monotonic()
                counts = {a["path"]: int(a.get("messages", 0)) for a in actors}
                rates: dict[str, float] = {}
                if before is not None and now > before[0]:
                    rates = {p: max(0, n - before[1].get(p, n)) / (now - before[0])
                             for p, n in counts.items()}
                before = (now, counts)
                self.say("\x1b[2J\x1b[H" + time.strftime("%H:%M:%S") + "  (Ctrl-C stops)")
                self.say(render_top(actors, rates, self.vm_names(), self.vm_cpu()))
                if time.monotonic() >= deadline:
                    return
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:
            pass

    def vm_cpu(self) -> dict[str, float]:
        """vmID -> CPU percent (user + system) from the last stats sample."""
        try:
            stats = self.client.call("Host.getAllVmStats")
        except ClientError:
            return {}
        return {s["vmID"]: round(float(s.get("cpuUser", 0)) + float(s.get("cpuSys", 0)), 1)
                for s in stats if s.get("status") != "Down"}

    def cmd_watch(self, args: list[str]) -> None:
        prefix = args[0] if args else ""
        seconds = float(args[1]) if len(args) > 1 else None
        deadline = None if seconds is None else time.monotonic() + seconds
        self.say(f"watching events {prefix or '(all)'} - Ctrl-C stops")
        try:
            with Subscriber(self.events, [prefix]) as sub:
                while deadline is None or time.monotonic() < deadline:
                    wait = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
                    event = sub.receive(min(0.5, wait))
                    if event is None:
                        continue
                    topic, payload = event
                    payload = {k: v for k, v in payload.items() if k != "notify_time"}
                    self.say(f"{time.strftime('%H:%M:%S')} {topic} "
                             f"{json.dumps(payload, sort_keys=True, default=str)}")
        except KeyboardInterrupt:
            pass

    def cmd_call(self, args: list[str]) -> None:
        if not args:
            self.fail("usage: call Namespace.verb [name=value ...]")
            return
        if args[0] not in SCHEMA:  # the agent may know it: values as JSON, else text
            params = {}
            for word in args[1:]:
                name, sep, value = word.partition("=")
                if not sep:
                    self.fail(f"expected name=value, got {word!r}")
                    return
                params[name] = parse_value(value)
            self.say(json.dumps(self.client.call(args[0], params), indent=2, sort_keys=True,
                                default=str))
            return
        verb = SCHEMA.lookup(args[0])
        try:  # as vdsm-client: values typed by the schema, VM names for vmIDs
            params = values.parse_words(verb, args[1:])
            params = names.resolve_names(verb, params, self.client.call)
        except values.WordError as e:
            self.fail(str(e))
            return
        except VdsmError as e:
            self.fail(f"error {e.code}: {e.message}")
            return
        result = self.client.call(verb.name, params)
        self.say(json.dumps(result, indent=2, sort_keys=True, default=str))

    def cmd_crash(self, args: list[str]) -> None:
        if not args:
            self.fail("usage: crash PATH|VM [REASON]")
            return
        params = {"path": self.actor_path(args[0])}
        if len(args) > 1:
            params["reason"] = " ".join(args[1:])
        self.client.call("Actors.crash", params)
        self.say(f"sent a fault to {args[0]}")

    # --- the loop ------------------------------------------------------------------------

    def run_line(self, line: str) -> bool:
        """Run one command line; False when the user wants to leave."""
        try:
            words = shlex.split(line)
        except ValueError as e:
            self.fail(f"cannot parse: {e}")
            return True
        if not words:
            return True
        name, args = words[0], words[1:]
        if name in ("quit", "exit"):
            return False
        command = self.commands.get(name)
        if command is None:
            self.fail(f"unknown command {name!r}; type help")
            return True
        try:
            command(args)
        except ClientError as e:
            self.fail(f"error {e.code}: {e.message}")
        except CallTimeout as e:
            self.fail(f"no answer: {e}")
        except ValueError as e:
            self.fail(f"bad argument: {e}")
        return True

    def completions(self) -> list[str]:
        verbs = [v.name for v in SCHEMA]
        return [*self.commands, "quit", *self._paths, *verbs,
                *(n for n in self._names.values() if n)]

    def interactive(self) -> None:
        from prompt_toolkit import PromptSession  # noqa: PLC0415 - only with a terminal
        from prompt_toolkit.completion import WordCompleter  # noqa: PLC0415
        from prompt_toolkit.history import InMemoryHistory  # noqa: PLC0415

        session: PromptSession[str] = PromptSession(history=InMemoryHistory())
        self.say(f"vdsm-console on {self.api} - type help")
        self.run_line("tree")
        while True:
            completer = WordCompleter(self.completions(), WORD=True)
            try:
                line = session.prompt("vdsm> ", completer=completer)
            except KeyboardInterrupt:
                continue
            except EOFError:
                return
            if not self.run_line(line):
                return

    def scripted(self, lines: Iterable[str]) -> None:
        for line in lines:
            if not self.run_line(line.strip()):
                return


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vdsm-console", description=__doc__)
    parser.add_argument("--api", default=os.environ.get("VDSM_API")
                        or endpoints.default_api_endpoint())
    parser.add_argument("--events", default=os.environ.get("VDSM_EVENTS")
                        or endpoints.default_events_endpoint())
    parser.add_argument("-c", "--command", action="append",
                        help="run this command and exit (repeatable)")
    args = parser.parse_args(argv)
    console = Console(args.api, args.events)
    try:
        try:
            console.client.call("Host.ping", timeout=5)
        except (CallTimeout, ClientError) as e:
            print(f"vdsm-console: vdsmd at {args.api} does not answer: {e}", file=sys.stderr)
            return 1
        if args.command:
            console.scripted(args.command)
            return 1 if console.failed else 0
        if sys.stdin.isatty() and sys.stdout.isatty():
            console.interactive()
        else:
            console.scripted(sys.stdin)
    except BrokenPipeError:
        # the reader went away (| head): stop quietly, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        console.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
