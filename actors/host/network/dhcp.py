"""DHCP for a network: busybox's udhcpc (a real client) speaks DHCP, the agent applies.

udhcpc runs in the foreground, one per DHCP network, and runs a script at each event; the
agent's script only prints what the client got (``VDSM-DHCP bound ip=... mask=...``) on
udhcpc's stdout, which a reader thread turns into a :class:`Lease` and a callback. The
address and route are then applied by the network actor through netlink like any other
change: udhcpc never configures the link itself. The values the script prints are ones
udhcpc formatted from the packet's binary fields (addresses, numbers), and are parsed again
strictly here: a DHCP server is not trusted.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCRIPT = """#!/bin/sh
# Written by vdsmd: report udhcpc's events to vdsmd (udhcpc's stdout); vdsmd applies them.
echo "VDSM-DHCP $1 ip=$ip mask=$mask router=$router lease=$lease"
"""
PREFIX = "VDSM-DHCP "
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Lease:
    address: str
    prefix: int
    router: str | None
    seconds: int


def write_script(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    path = directory / "udhcpc-event"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(SCRIPT)
    os.chmod(tmp, 0o700)
    tmp.replace(path)
    return path


def parse_event(line: str) -> tuple[str, Lease | None] | None:
    """``(event, lease)`` from one script line; None for anything else. A lease only for
    ``bound`` and ``renew`` with a valid address."""
    if not line.startswith(PREFIX):
        return None
    words = line[len(PREFIX):].split()
    if not words:
        return None
    event = words[0]
    values: dict[str, str] = {}
    for word in words[1:]:
        key, _, value = word.partition("=")
        values.setdefault(key, value)  # router may list several: the first one
    if event not in ("bound", "renew"):
        return event, None
    try:
        address = ipaddress.IPv4Address(values.get("ip", ""))
        prefix = int(values.get("mask", ""))
        router = values.get("router") or None
        if router is not None:
            router = str(ipaddress.IPv4Address(router))
        seconds = int(values.get("lease") or 0)
    except ValueError:
        log.warning("ignoring a DHCP lease that does not parse: %r", line[:200])
        return event, None
    if not 1 <= prefix <= 32 or address.is_unspecified or address.is_multicast:
        log.warning("ignoring a DHCP lease with an unusable address: %r", line[:200])
        return event, None
    return event, Lease(str(address), prefix, router, seconds)


class DhcpClient:
    """One udhcpc for one network's device. ``on_change(network)`` is called on the reader
    thread whenever the lease changes (it must only tell an actor)."""

    def __init__(self, network: str, device: str, *, command: Sequence[str], script: Path,
                 run_dir: Path, on_change: Callable[[str], None]) -> None:
        self.network = network
        self.device = device
        self._command = list(command)
        self._script = script
        self._pidfile = run_dir / f"udhcpc-{device}.pid"
        self._on_change = on_change
        self._cond = threading.Condition()
        self._lease: Lease | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        #: the lease the agent applied to the device (written by the apply thread only)
        self.applied: Lease | None = None

    def start(self) -> None:
        _kill_stale(self._pidfile)
        argv = [*self._command, "-f", "-i", self.device, "-s", str(self._script),
                "-p", str(self._pidfile), "-t", "5", "-T", "2", "-A", "5"]
        log.info("starting the DHCP client of network %s on %s", self.network, self.device)
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", start_new_session=True, close_fds=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"dhcp-{self.device}",
                                        daemon=True)
        self._reader.start()

    def lease(self) -> Lease | None:
        with self._cond:
            return self._lease

    def wait_lease(self, timeout: float, cancel: threading.Event) -> Lease | None:
        """The first lease, waiting at most ``timeout`` (or until ``cancel`` is set)."""
        with self._cond:
            self._cond.wait_for(lambda: self._lease is not None or cancel.is_set()
                                or not self.running(), timeout)
            return self._lease

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
        try:
            self._pidfile.unlink()
        except FileNotFoundError:
            pass
        with self._cond:
            self._cond.notify_all()
        log.info("stopped the DHCP client of network %s on %s", self.network, self.device)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parsed = parse_event(line.rstrip("\n"))
            if parsed is None:
                log.debug("udhcpc %s: %s", self.device, line.rstrip()[:200])
                continue
            event, lease = parsed
            log.info("DHCP %s on %s: %s", event, self.device,
                     f"{lease.address}/{lease.prefix} via {lease.router}" if lease else "-")
            if event in ("bound", "renew") and lease is None:
                continue  # unusable: keep what we have
            if event not in ("bound", "renew", "deconfig", "leasefail", "nak"):
                continue
            changed = False
            with self._cond:
                # a deconfig before the first lease (udhcpc starts with one) drops nothing
                if event in ("bound", "renew") or (event == "deconfig" and self.applied):
                    changed = lease != self._lease
                    self._lease = lease
                self._cond.notify_all()
            if changed:
                self._on_change(self.network)
        with self._cond:
            self._cond.notify_all()


def _kill_stale(pidfile: Path) -> None:
    """A udhcpc a dead agent left on this device (its pid file in the run dir)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"udhcpc" in cmdline and str(pidfile).encode() in cmdline:
        log.info("killing the stale DHCP client %d (%s)", pid, pidfile.name)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
