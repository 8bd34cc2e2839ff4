"""Prepare libvirt for the agent (docs/registration.md): users, directories, qemu.conf, daemons.

What ``vdsm-tool configure --module libvirt`` does, idempotently; :func:`problems` is what
``vdsm-tool is-configured`` reports. libvirtd is restarted only when qemu.conf changed.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: guests run as root without a security driver (no SELinux/AppArmor here; the tests hand
#: qemu loop devices and temporary files), and without a private mount namespace (a guest's
#: namespace would keep a copy of every mount that existed when it started)
QEMU_SETTINGS = (("user", '"root"'), ("group", '"root"'), ("security_driver", '"none"'),
                 ("namespaces", "[ ]"))
#: guests' serial consoles go through virtlogd, which caps and rotates each log
#: (actors/vm/seriallog.py); "logd" is libvirt's default, so only a line that sets another
#: handler is a problem (and is replaced): a default qemu.conf is left as it is
LOG_HANDLER = ("stdio_handler", '"logd"')
_LOG_HANDLER_LINE = re.compile(r"^\s*stdio_handler\s*=\s*(.*?)\s*$")
DIRS = tuple(Path(p) for p in ("/var/log/libvirt", "/var/run/libvirt", "/var/lib/libvirt",
                               "/var/cache/libvirt"))
URI = "qemu:///system"
WAIT = 10.0


@dataclass(frozen=True)
class LibvirtSetup:
    qemu_conf: Path = Path("/etc/libvirt/qemu.conf")
    dirs: tuple[Path, ...] = DIRS
    settings: tuple[tuple[str, str], ...] = field(default=QEMU_SETTINGS)


def _group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def set_setting(text: str, key: str, value: str) -> str:
    """``text`` with ``key = value``: an exact line is kept, the first (maybe commented)
    assignment of ``key`` replaced, else the line appended."""
    wanted = f"{key} = {value}"
    lines = text.splitlines()
    if wanted in lines:
        return text
    pattern = re.compile(rf"^#?\s*{re.escape(key)}\s*=")
    for i, line in enumerate(lines):
        if pattern.match(line):
            lines[i] = wanted
            return "\n".join(lines) + "\n"
    return text + ("" if not text or text.endswith("\n") else "\n") + wanted + "\n"


def log_handlers(text: str) -> list[str]:
    """The values qemu.conf ``text`` gives ``stdio_handler`` (none: libvirt's default)."""
    found = []
    for line in text.splitlines():
        match = _LOG_HANDLER_LINE.match(line)
        if match is not None:
            found.append(match.group(1))
    return found


def keep_log_handler(text: str) -> str:
    """``text`` with every line that sets ``stdio_handler`` to something other than
    ``"logd"`` set to ``"logd"`` (a guest writing its console without end would otherwise
    fill the disk: qemu writes the file itself, uncapped); the rest unchanged."""
    key, value = LOG_HANDLER
    wanted = f"{key} = {value}"
    lines = text.splitlines()
    changed = False
    for i, line in enumerate(lines):
        match = _LOG_HANDLER_LINE.match(line)
        if match is not None and match.group(1) != value:
            lines[i], changed = wanted, True
    return "\n".join(lines) + "\n" if changed else text


def _answers() -> bool:
    try:
        done = subprocess.run(["virsh", "-c", URI, "version"], capture_output=True,
                              timeout=WAIT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _system_pid(name: str) -> int | None:
    """The pid of the system's ``name`` daemon (its pid file in /run), if it runs. Not by
    process name: tests start private libvirtd and virtlogd processes of their own."""
    try:
        pid = int(Path(f"/run/{name}.pid").read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == name else None


def problems(setup: LibvirtSetup) -> list[str]:
    found = [f"no group {g}" for g in ("kvm", "libvirt-qemu") if not _group(g)]
    if not _user("libvirt-qemu"):
        found.append("no user libvirt-qemu")
    found += [f"no directory {d}" for d in setup.dirs if not d.is_dir()]
    try:
        lines = setup.qemu_conf.read_text().splitlines()
    except OSError:
        lines = []
    found += [f"{setup.qemu_conf} does not say {k} = {v}" for k, v in setup.settings
              if f"{k} = {v}" not in lines]
    found += [f"{setup.qemu_conf} says stdio_handler = {handler}: guests' console logs "
              "would not be capped by virtlogd" for handler in log_handlers("\n".join(lines))
              if handler != LOG_HANDLER[1]]
    if not _answers():
        found.append(f"libvirtd does not answer on {URI}")
    return found


def ensure(setup: LibvirtSetup) -> list[str]:
    changed: list[str] = []
    for group in ("kvm", "libvirt-qemu"):
        if not _group(group):
            subprocess.run(["groupadd", "--system", group], check=True, timeout=60)
            changed.append(f"group {group}")
    if not _user("libvirt-qemu"):
        # libvirtd resolves its compiled-in default user before it reads qemu.conf
        subprocess.run(["useradd", "--system", "--no-create-home", "--gid", "libvirt-qemu",
                        "--groups", "kvm", "--shell", "/usr/sbin/nologin", "libvirt-qemu"],
                       check=True, timeout=60)
        changed.append("user libvirt-qemu")
    for directory in setup.dirs:
        if not directory.is_dir():
            directory.mkdir(parents=True)
            changed.append(f"made {directory}")
    before = setup.qemu_conf.read_text() if setup.qemu_conf.exists() else ""
    text = before
    for key, value in setup.settings:
        text = set_setting(text, key, value)
    keys = [k for k, _ in setup.settings]
    if (fixed := keep_log_handler(text)) != text:
        text, keys = fixed, [*keys, LOG_HANDLER[0]]
    if text != before:
        setup.qemu_conf.parent.mkdir(parents=True, exist_ok=True)
        setup.qemu_conf.write_text(text)
        changed.append(f"{setup.qemu_conf} ({', '.join(keys)})")
    changed += _daemons(restart=text != before)
    return changed


def _daemons(*, restart: bool) -> list[str]:
    changed: list[str] = []
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "enable", "--now", "virtlogd.socket", "libvirtd.socket"],
                       capture_output=True, timeout=60, check=False)
        if restart:
            subprocess.run(["systemctl", "restart", "libvirtd"], timeout=120, check=False)
            changed.append("restarted libvirtd")
    else:  # no systemd (containers, this CI): the daemons run detached
        if _system_pid("virtlogd") is None:
            subprocess.run(["virtlogd", "-d"], check=True, timeout=60)
            changed.append("started virtlogd")
        if restart and (pid := _system_pid("libvirtd")) is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + WAIT
            while _system_pid("libvirtd") is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            changed.append("stopped libvirtd (qemu.conf changed)")
        if _system_pid("libvirtd") is None:
            subprocess.run(["libvirtd", "-d"], check=True, timeout=60)
            changed.append("started libvirtd")
    deadline = time.monotonic() + WAIT
    while not _answers():
        if time.monotonic() > deadline:
            raise RuntimeError(f"libvirtd does not answer on {URI}")
        time.sleep(0.1)
    return changed
