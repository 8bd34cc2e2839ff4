"""The hook runner: site executables run around VM lifecycle steps.

The executables of ``<hooks_dir>/<hook>/`` run one after another in name order. Each gets
the domain XML in a temporary file whose path is in ``$_hook_domxml``, the VM id in ``$vmId``
and the VM's custom properties as ``$custom_<name>`` (a property ``team`` is
``$custom_team``). That is the whole environment besides a fixed ``PATH`` and ``LANG``:
nothing is inherited from the agent, and a client's custom property can never set
``PATH``, ``LD_PRELOAD``, ``BASH_ENV`` or anything else a root hook or its interpreter
obeys. A hook may rewrite the file:
the next hook reads the rewritten XML and :meth:`HookRunner.run` returns the final one (only
``before_vm_start`` and ``before_vm_dehibernate`` rewrites have an effect: the caller ignores
the others). Files that are not executable, hidden files and directories are skipped.

A hook that exits non-zero, cannot be run, leaves XML that does not parse, or exceeds its
timeout (its whole process group is then killed) raises :class:`HookError` naming the hook
and quoting the tail of its stderr.

:meth:`HookRunner.run` blocks on a subprocess: call it off the actor thread. The runner
holds no mutable state, so one instance serves every VM from any thread.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from messaging.errors import HookError

log = logging.getLogger(__name__)

HOOK_NAMES = frozenset(
    {
        "before_vm_start",
        "after_vm_start",
        "before_vm_destroy",
        "after_vm_destroy",
        "before_vm_pause",
        "after_vm_pause",
        "before_vm_cont",
        "after_vm_cont",
        "before_vm_shutdown",
        "before_vm_hibernate",
        "after_vm_hibernate",
        "before_vm_dehibernate",
        "after_vm_dehibernate",
        "before_vm_migrate_source",
        "after_vm_migrate_source",
        "before_vm_migrate_destination",
        "after_vm_migrate_destination",
        "before_vm_set_ticket",
        "after_vm_set_ticket",
    }
)
#: Further directories run after a hook's own: ``after_vm_restore/`` (the issue's name for
#: the moment after a VM was restored from its hibernation file) is the same moment as
#: ``after_vm_dehibernate/``, so both directories are honoured.
HOOK_ALIASES: Mapping[str, tuple[str, ...]] = {"after_vm_dehibernate": ("after_vm_restore",)}

DOMXML_ENV = "_hook_domxml"
VMID_ENV = "vmId"
HOOK_NAME_ENV = "_hook_name"
DEFAULT_TIMEOUT = 30.0
STDERR_TAIL = 2048
#: A hook's environment besides its own variables: fixed, nothing inherited from the agent.
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
#: A custom property ``name`` reaches the hooks as ``$custom_<name>``.
CUSTOM_PREFIX = "custom_"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class HookRunner:
    """Runs the hooks under ``hooks_dir``; ``timeout`` is per executable, in seconds."""

    def __init__(self, hooks_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.hooks_dir = hooks_dir
        self.timeout = timeout

    def scripts(self, hook: str) -> list[Path]:
        """The executables a hook runs, in order (empty when there are none)."""
        if hook not in HOOK_NAMES:
            raise ValueError(f"unknown hook {hook!r}")
        found: list[Path] = []
        for name in (hook, *HOOK_ALIASES.get(hook, ())):
            directory = self.hooks_dir / name
            try:
                entries = sorted(directory.iterdir(), key=lambda p: p.name)
            except FileNotFoundError:
                continue
            except OSError as e:
                log.warning("cannot list hook directory %s: %s", directory, e)
                continue
            found.extend(
                p
                for p in entries
                if not p.name.startswith(".") and p.is_file() and os.access(p, os.X_OK)
            )
        return found

    def run(
        self,
        hook: str,
        domxml: str,
        *,
        vm_id: str,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Run ``hook``'s executables over ``domxml``; return the XML they leave.

        ``env`` (the VM's custom properties) reaches each hook as ``custom_<name>``
        variables; a name that is not a shell identifier or a value with NUL is a bug of
        the caller (``ValueError``).
        """
        scripts = self.scripts(hook)
        if not scripts:
            return domxml
        limit = self.timeout if timeout is None else timeout
        with tempfile.TemporaryDirectory(prefix="vdsm-hook-") as workdir:
            xml_path = Path(workdir) / "domxml"
            xml_path.write_text(domxml)
            environ = hook_environment(env or {})
            environ.update({DOMXML_ENV: str(xml_path), VMID_ENV: vm_id, HOOK_NAME_ENV: hook})
            for script in scripts:
                _run_one(hook, script, environ, Path(workdir), limit)
            result = xml_path.read_text()
        if result != domxml:
            try:
                ET.fromstring(result)  # written by the site's own hook
            except ET.ParseError as e:
                raise HookError(hook=hook, reason=f"it left invalid domain XML ({e})") from None
            log.info("hook %s of VM %s rewrote the domain XML", hook, vm_id)
        return result


def hook_environment(custom: Mapping[str, str]) -> dict[str, str]:
    """The fixed base environment plus the custom properties, each under its prefix."""
    environ = dict(BASE_ENV)
    for name, value in custom.items():
        if _ENV_NAME.fullmatch(name) is None or "\0" in value:
            raise ValueError(f"custom property {name!r} cannot be a hook variable")
        environ[CUSTOM_PREFIX + name] = value
    return environ


def _run_one(
    hook: str, script: Path, environ: Mapping[str, str], workdir: Path, timeout: float
) -> None:
    name = f"{hook}/{script.name}"
    log.debug("running hook %s", name)
    # Output goes to files, not pipes: a grandchild that outlives the hook cannot then keep
    # us waiting for the end of a pipe.
    with (workdir / "stderr").open("w+b") as stderr:
        try:
            proc = subprocess.Popen(
                [str(script)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=dict(environ),
                cwd=workdir,
                start_new_session=True,
            )
        except OSError as e:
            raise HookError(hook=name, reason=f"cannot run it: {e}") from None
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise HookError(
                hook=name, reason=f"timed out after {timeout:g} s{_tail(stderr)}"
            ) from None
        if rc != 0:
            how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
            raise HookError(hook=name, reason=f"{how}{_tail(stderr)}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(stderr: IO[bytes]) -> str:
    stderr.seek(0, os.SEEK_END)
    size = stderr.tell()
    stderr.seek(max(0, size - STDERR_TAIL))
    text = stderr.read().decode(errors="replace").strip()
    return f": {text}" if text else ""
