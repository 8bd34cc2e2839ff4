"""The ``vdsm-client`` command: argument parsing and what each form of the command does."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import zmq

from messaging import endpoints
from messaging.client import CallTimeout, Client, ClientError, Subscriber
from messaging.curve import ClientCurve
from messaging.errors import InvalidParams, NoSuchTask, VdsmError
from messaging.schema import SCHEMA
from messaging.schema.types import MISSING, ListOf, Struct, Uuid
from messaging.schema.verbs import Verb

from . import completion, exitcodes, names, output, resolve, values, vmlist, wait

DESCRIPTION = """\
Call one verb of vdsmd and print its result (JSON unless -o says otherwise):
  vdsm-client Host ping                       (also: vdsm-client ping, Host.ping)
  vdsm-client Volume create ... size=1G --wait
  vdsm-client VM pause vmID=web1              (a VM's name works wherever a vmID does)
  vdsm-client -f params.json VM create        (params from a JSON file; - for stdin)
  vdsm-client VM create vmID=... vmParams=@vm.json
client commands:
  vdsm-client VM list                         a table of the VMs
  vdsm-client Task wait TASKID                follow a task until it ends
  vdsm-client Job wait JOBID                  follow a job (VM hibernate, restore, migrate)
  vdsm-client events [TOPIC-PREFIX ...]       print one JSON line per event
  vdsm-client completion bash                 a bash completion script
'vdsm-client Namespace --help' lists verbs ("not implemented" marks verbs the agent declares
but does not implement yet); 'vdsm-client Namespace verb --help' shows a verb's params."""


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _fail(code: int, message: str) -> NoReturn:
    print(f"vdsm-client: {message}", file=sys.stderr)
    raise _Exit(code)


def _error_reply(error: dict[str, Any], code: int) -> NoReturn:
    print(json.dumps(error, indent=2, sort_keys=True, default=str), file=sys.stderr)
    raise _Exit(code)


def _local_error(e: VdsmError) -> NoReturn:
    """An error found here, printed as the agent would have answered it."""
    code = exitcodes.NOT_FOUND if isinstance(e, names.NoSuchName) else \
        exitcodes.for_error(e.code)
    _error_reply(e.to_wire(), code)


# --- help ----------------------------------------------------------------------------------


def verb_help(verb: Verb) -> str:
    lines = [f"{verb.name}: {verb.doc}"]
    if not verb.implemented:
        lines.append("  NOT IMPLEMENTED: declared (its params are checked) but this agent "
                     "does not implement it yet; calling it answers -32601")
    if verb.aliases:
        lines.append(f"  aliases: {', '.join(verb.aliases)}")
    lines.append(f"  timeout: {verb.timeout:g} s")
    if verb.params:
        lines.append("  params:")
        for f in verb.params:
            flag = "required" if f.required else "optional"
            default = "" if f.required or f.default in (None, MISSING) \
                else f", default {f.default!r}"
            doc = f" - {f.doc}" if f.doc else ""
            lines.append(f"    {f.name} ({f.type.describe()}, {flag}{default}){doc}")
            inner = f.type.item if isinstance(f.type, ListOf) else f.type
            if isinstance(inner, Struct):
                for sub in inner.fields:
                    sflag = "required" if sub.required else "optional"
                    sdoc = f" - {sub.doc}" if sub.doc else ""
                    lines.append(f"        .{sub.name} ({sub.type.describe()}, {sflag}){sdoc}")
        if any(f.name == "vmID" for f in verb.params):
            lines.append("  vmID may also be the VM's name (refused when several VMs have it)")
        lines.append("  values: text as given, sizes with units (1G, 512M), JSON for maps "
                     "and lists (@FILE reads it from a file)")
    else:
        lines.append("  params: none")
    lines.append(f"  result: {verb.result}")
    if verb.starts_task:
        lines.append("  --wait: follow the task it starts until it ends")
    if verb.job:
        only = f" (it starts one only with {verb.job_if})" if verb.job_if else ""
        lines.append(f"  --wait: follow the job it starts (Host.getJobs, job_type {verb.job}) "
                     f"until it ends{only}; a jobID is made up when none is given")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vdsm-client",
        description=DESCRIPTION,
        epilog=f"namespaces: {', '.join(resolve.all_namespaces())}\n\n{exitcodes.HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    parser.add_argument("--api", default=os.environ.get("VDSM_API") or
                        endpoints.default_api_endpoint(), help="request endpoint")
    parser.add_argument("--events", default=os.environ.get("VDSM_EVENTS") or
                        endpoints.default_events_endpoint(), help="event endpoint")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for each reply")
    parser.add_argument("-f", "--file", help="read the params map from a JSON file (- = stdin)")
    parser.add_argument("-o", "--output", choices=[*output.FORMATS, "names"],
                        help="json (default), table or yaml (VM list: table)")
    parser.add_argument("--wait", action="store_true",
                        help="for a verb that starts a task or a job (VM hibernate, migrate, "
                        "create with restoreState): follow it to its end, showing its "
                        "progress, and exit with its outcome")
    parser.add_argument("--wait-timeout", type=float,
                        help="stop waiting after this many seconds (the task or job goes on)")
    parser.add_argument("--curve-secret", help="client key pair file (CURVE)")
    parser.add_argument("--curve-server-key", help="server public key file (CURVE)")
    parser.add_argument("--count", type=int, help="events: stop after this many")
    parser.add_argument("--duration", type=float, help="events: stop after this many seconds")
    parser.add_argument("words", nargs="*", help="Namespace verb [name=value ...]")
    return parser


# --- the agent ----------------------------------------------------------------------------


def check_endpoint(url: str, flag: str = "--api, or VDSM_API") -> None:
    """Fail at once (no reply) when an ipc endpoint has no agent behind it, rather than
    waiting for a reply that cannot come."""
    try:
        endpoint = endpoints.parse(url)
    except ValueError as e:
        _fail(exitcodes.USAGE, str(e))
    path = endpoint.ipc_path
    if path is None:
        return
    hint = f"is vdsmd running? ({flag}, names another agent)"
    if not path.exists():
        _fail(exitcodes.NO_REPLY, f"no agent at {url}: {path} does not exist; {hint}")
    if not path.is_socket():
        _fail(exitcodes.NO_REPLY, f"no agent at {url}: {path} is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except PermissionError:
        _fail(exitcodes.NO_REPLY, f"cannot connect to {url}: permission denied (the API "
              "is for root and the socket's group)")
    except OSError as e:
        _fail(exitcodes.NO_REPLY, f"no agent at {url}: {e.strerror or e} (a socket left by "
              f"an agent that stopped?); {hint}")
    finally:
        probe.close()


def _curve_from(args: argparse.Namespace) -> ClientCurve | None:
    if args.curve_secret or args.curve_server_key:
        if not (args.curve_secret and args.curve_server_key):
            _fail(exitcodes.USAGE, "--curve-secret and --curve-server-key go together")
        return ClientCurve(Path(args.curve_secret), Path(args.curve_server_key))
    return None


class Agent:
    """The client as the commands use it: errors become exits."""

    def __init__(self, args: argparse.Namespace) -> None:
        check_endpoint(args.api)
        self.client = Client(args.api, timeout=args.timeout, curve=_curve_from(args))

    def call(self, method: str, params: dict[str, Any]) -> Any:
        try:
            return self.client.call(method, params)
        except ClientError as e:
            _error_reply(e.to_dict(), exitcodes.for_error(e.code))
        except CallTimeout as e:
            _fail(exitcodes.NO_REPLY, str(e))

    def close(self) -> None:
        self.client.close()


def _read_params_file(name: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
        params = json.loads(text)
    except (OSError, ValueError) as e:
        _fail(exitcodes.USAGE, f"cannot read params from {name}: {e}")
    if not isinstance(params, dict):
        _fail(exitcodes.USAGE, f"{name} must hold a JSON object of params")
    return params


def _print(value: Any, fmt: str | None) -> None:
    print(output.render(value, fmt or "json"), flush=True)


# --- the commands --------------------------------------------------------------------------


def run_verb(args: argparse.Namespace, verb: Verb, words: Sequence[str]) -> int:
    if args.wait and not (verb.starts_task or verb.job):
        _fail(exitcodes.USAGE, f"--wait: {verb.name} starts no task and no job")
    base = _read_params_file(args.file) if args.file else {}
    try:
        params = values.parse_words(verb, words, values.coerce_params(verb, base))
    except values.WordError as e:
        _fail(exitcodes.USAGE, str(e))
    except VdsmError as e:
        _local_error(e)
    job_id = ""
    if args.wait and verb.job:
        if not verb.starts_job(params):
            _fail(exitcodes.USAGE, f"--wait: {verb.name} starts a job only with "
                  f"{verb.job_if}")
        # the verb answers no job id: the client names the job to follow it
        if params.get("jobID") is None:
            params["jobID"] = str(uuid.uuid4())
        job_id = str(params["jobID"]).lower()  # canonical once the check below passed
    agent = Agent(args)
    events = JobEvents(args, job_id) if job_id else None
    try:
        try:
            params = names.resolve_names(verb, params, agent.call)
            verb.check_params(params)  # the agent would refuse it: say so without a call
        except VdsmError as e:
            _local_error(e)
        result = agent.call(verb.name, params)
        if not args.wait:
            _print(result, args.output)
            return exitcodes.OK
        if events is not None:
            return _follow_job(agent, job_id, args, events, started=True)
        return _follow(agent, str(result), args)
    finally:
        if events is not None:
            events.close()
        agent.close()


def _follow(agent: Agent, task_id: str, args: argparse.Namespace) -> int:
    try:
        status = wait.follow(agent.call, task_id, sys.stderr, timeout=args.wait_timeout)
    except TimeoutError as e:
        _fail(exitcodes.NO_REPLY, str(e))
    except KeyboardInterrupt:
        _fail(130, f"stopped waiting; the task goes on: vdsm-client Task wait {task_id}")
    _print(status, args.output)
    return wait.outcome(status)


class JobEvents:
    """The ``|jobs|status|<jobID>`` events of one job, subscribed to before it starts: a job
    forgotten as soon as it ended (``[jobs] keep_finished = 0``) is known by its last event.
    Nothing is received when --events names no agent (the poll alone then decides), nor
    when it is not an endpoint at all."""

    WAIT = 2.0  # s for the job's last event to arrive once the poll no longer finds the job
    CONNECT_WAIT = 5.0  # s for the subscription to connect before the verb is called

    def __init__(self, args: argparse.Namespace, job_id: str) -> None:
        self._sub: Subscriber | None = None
        self._last: dict[str, Any] | None = None
        try:
            self._sub = Subscriber(args.events, [f"|jobs|status|{job_id}"],
                                   curve=_curve_from(args))
        except zmq.ZMQError:
            return
        # Connected before the verb is called: a job that ends (and is forgotten) at once
        # must not have published its last event before the subscription was there. No
        # agent at the endpoint: not waited for (the poll alone decides).
        self._sub.wait_connected(self.CONNECT_WAIT)

    def last(self) -> dict[str, Any] | None:
        if self._sub is None:
            return None
        deadline = time.monotonic() + self.WAIT
        while (event := self._sub.receive(max(0.0, deadline - time.monotonic()))) is not None:
            self._last = event[1]
            if self._last.get("status") in wait.JOB_ENDED:
                break
        return self._last

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()


def _follow_job(agent: Agent, job_id: str, args: argparse.Namespace, events: JobEvents,
                *, started: bool) -> int:
    try:
        job = wait.follow_job(agent.call, job_id, sys.stderr, timeout=args.wait_timeout,
                              last_event=events.last, started=started)
    except wait.NoSuchJob as e:
        _fail(exitcodes.NOT_FOUND, str(e))
    except TimeoutError as e:
        _fail(exitcodes.NO_REPLY, str(e))
    except KeyboardInterrupt:
        _fail(130, f"stopped waiting; the job goes on: vdsm-client Job wait {job_id}")
    _print(job, args.output)
    return wait.job_outcome(job)


def run_job_wait(args: argparse.Namespace, words: Sequence[str]) -> int:
    job_ids = [w.partition("=")[2] if w.startswith("jobID=") else w for w in words]
    if len(job_ids) != 1 or "=" in job_ids[0]:
        _fail(exitcodes.USAGE, "usage: vdsm-client Job wait JOBID")
    try:
        job_id = Uuid().check(job_ids[0], "jobID")
    except InvalidParams as e:
        _local_error(e)
    agent = Agent(args)
    events = JobEvents(args, job_id)
    try:
        return _follow_job(agent, job_id, args, events, started=False)
    finally:
        events.close()
        agent.close()


def run_task_wait(args: argparse.Namespace, words: Sequence[str]) -> int:
    task_ids = [w.partition("=")[2] if w.startswith("taskID=") else w for w in words]
    if len(task_ids) != 1 or "=" in words[0].removeprefix("taskID="):
        _fail(exitcodes.USAGE, "usage: vdsm-client Task wait TASKID")
    try:
        SCHEMA.lookup("Task.getStatus").check_params({"taskID": task_ids[0]})
    except InvalidParams as e:
        _local_error(e)
    agent = Agent(args)
    try:
        _not_a_job(agent, task_ids[0])
        return _follow(agent, task_ids[0], args)
    finally:
        agent.close()


def _not_a_job(agent: Agent, task_id: str) -> None:
    """When no task has this id but a job (a VM operation) does, say so and name the command
    that follows it, rather than answering only "no such task"."""
    try:
        agent.client.call("Task.getStatus", {"taskID": task_id})
        return
    except ClientError as e:
        if e.code != NoSuchTask.code:
            return  # the poll below reports it as usual
    except CallTimeout:
        return
    jobs = agent.call("Host.getJobs", {"job_ids": [task_id]})
    job = jobs.get(task_id.lower()) if isinstance(jobs, dict) else None
    if isinstance(job, dict):
        _fail(exitcodes.NOT_FOUND,
              f"{task_id} is not a task but a job ({job.get('job_type', '?')} of VM "
              f"{job.get('vmID', '?')}): vdsm-client Job wait {task_id}")


def run_vm_list(args: argparse.Namespace, words: Sequence[str]) -> int:
    if words:
        _fail(exitcodes.USAGE, "usage: vdsm-client VM list [-o table|json|yaml]")
    agent = Agent(args)
    try:
        rows = vmlist.rows(agent.call("Host.getAllVmStats", {}))
    finally:
        agent.close()
    if args.output == "names":
        print("\n".join(r["name"] for r in rows if r["name"]), flush=True)
    elif args.output in (None, "table"):
        print(vmlist.render(rows), flush=True)
    else:
        _print(rows, args.output)
    return exitcodes.OK


def run_events(args: argparse.Namespace, prefixes: list[str]) -> int:
    check_endpoint(args.events, "--events, or VDSM_EVENTS")
    deadline = None if args.duration is None else time.monotonic() + args.duration
    count = 0
    signal.signal(signal.SIGINT, lambda *_: sys.exit(exitcodes.OK))
    with Subscriber(args.events, prefixes or [""], curve=_curve_from(args)) as sub:
        while deadline is None or time.monotonic() < deadline:
            wait_s = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            event = sub.receive(wait_s)
            if event is None:
                continue
            topic, payload = event
            print(json.dumps({"topic": topic, "payload": output._plain(payload)}), flush=True)
            count += 1
            if args.count is not None and count >= args.count:
                break
    return exitcodes.OK


def dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    words: list[str] = list(args.words) + [w for w in extra if w not in ("--help", "-h")]
    wants_help = args.help or any(w in ("--help", "-h") for w in extra)
    unknown_flags = [w for w in words if w.startswith("--")]
    if unknown_flags:
        hint = resolve.suggest(unknown_flags[0], [a for act in parser._actions
                                                  for a in act.option_strings])
        _fail(exitcodes.USAGE, f"unknown option {unknown_flags[0]}"
              + (f"; did you mean {' or '.join(hint)}?" if hint else ""))
    if not words:
        parser.print_help()
        return exitcodes.OK if wants_help else exitcodes.USAGE
    if words[0] == "events":
        if wants_help:
            print("vdsm-client [--events EP] events [TOPIC-PREFIX ...] [--count N] "
                  "[--duration S]: print one JSON line per event")
            return exitcodes.OK
        return run_events(args, words[1:])
    if words[0] == "completion":
        if words[1:] not in ([], ["bash"]):
            _fail(exitcodes.USAGE, "usage: vdsm-client completion bash")
        print(completion.bash(), end="")
        return exitcodes.OK
    ns = resolve.namespace(words[0])
    if ns is not None and (len(words) == 1 or "=" in words[1]) and wants_help:
        print(resolve.listing(ns))
        return exitcodes.OK
    try:
        target = resolve.resolve(words)
    except resolve.UsageError as e:
        _fail(exitcodes.USAGE, str(e))
    if wants_help:
        print(verb_help(target.verb) if target.verb is not None else
              f"vdsm-client {target.command}: {resolve.listing_of(target.command)}")
        return exitcodes.OK
    if target.verb is not None:
        return run_verb(args, target.verb, target.rest)
    if target.command == "VM list":
        return run_vm_list(args, target.rest)
    if target.command == "Job wait":
        return run_job_wait(args, target.rest)
    return run_task_wait(args, target.rest)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return dispatch(argv)
    except _Exit as e:
        return e.code
    except BrokenPipeError:
        # the reader went away (| head): nothing more to say, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exitcodes.OK
