"""One host of the test bed: a network namespace, a private mount namespace, and in them
its own virtlogd, libvirtd (listening on tcp at the host's address, as the recipe in
ENVIRONMENT.md says) and, when started, its own vdsmd (:mod:`tests.testbed.agent`).

The namespaces are held by an *anchor* process (``sleep``) started by ``ip netns exec ...
unshare -m --propagation private``: the anchor's script detaches other tests' mounts from
its copy of the mount table (as :mod:`tests.privlibvirt` does), bind-mounts the host's own
``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and
``/var/cache/libvirt``, then sleeps. Every daemon of the host is started with ``nsenter``
into the anchor's namespaces, so each can be killed and started again on its own (a
SIGKILLed vdsmd, a restarted libvirtd) while the host stays. The host's ``/sys`` is the
namespace's (``ip netns exec`` remounts it): its network devices are the host's own.

Its libvirtd runs a qemu hook (``/etc/libvirt/hooks/qemu``, found by libvirtd when it
starts) that hands each call to :attr:`BedHost.libvirt_hook` when a test put an executable
there: a test can so act inside libvirt's own steps (e.g. delay the preparation of an
incoming migration) without restarting libvirtd.

Everything a host runs is in its network namespace: :meth:`BedHost.close` (through the bed)
kills every process there, qemu included, and the namespaces vanish with their last process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import libvirt

from tests.testbed import netns

LIBVIRT_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}
# Detach (in the new namespace only) the mounts other tests made: deepest first.
FORGET_FOREIGN_MOUNTS = (
    "awk '$2 ~ \"^/tmp/|^/run/vdsm/\" {print $2}' /proc/self/mounts | sort -r"
    " | while read -r m; do umount -l \"$m\" 2>/dev/null; done"
)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def _quiet(_opaque: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; callers check the exceptions."""


class BedHost:
    """Host ``name`` of a bed: ``address`` on the bed's network, files under ``workdir``."""

    def __init__(self, name: str, *, netns_name: str, address: str, workdir: Path,
                 libvirt_dir: Path) -> None:
        self.name = name
        self.netns = netns_name
        self.address = address
        self.workdir = workdir
        # short: libvirtd's socket path must fit a unix socket address (108 bytes)
        self.libvirt_dir = libvirt_dir
        self.anchor: subprocess.Popen[bytes] | None = None
        self.libvirtd: subprocess.Popen[bytes] | None = None
        self.virtlogd: subprocess.Popen[bytes] | None = None
        self.agent = None  # set by the bed: a tests.testbed.agent.BedAgent
        self.host_uuid = str(uuid.uuid4())

    # --- how to reach it ----------------------------------------------------------------

    @property
    def libvirt_uri(self) -> str:
        """Its libvirtd, from the test process (through the socket file)."""
        return f"qemu+unix:///system?socket={self.libvirt_dir / 'run' / 'libvirt-sock'}"

    @property
    def remote_libvirt_uri(self) -> str:
        """Its libvirtd from another host of the bed (tcp, no auth: a test network)."""
        return f"qemu+tcp://{self.address}/system"

    @property
    def libvirt_hook(self) -> Path:
        """Where a test may put an executable that libvirtd's qemu hook runs with its
        arguments and stdin (``<domain> <operation> <sub-operation> -``); absent: nothing
        runs. What it prints is libvirt's business (for ``migrate``: a new XML): print
        nothing."""
        return self.workdir / "libvirt-hook"

    @property
    def qemu_run_dir(self) -> Path:
        return self.libvirt_dir / "run" / "qemu"

    def connect(self) -> libvirt.virConnect:
        libvirt.registerErrorHandler(_quiet, None)
        return libvirt.open(self.libvirt_uri)

    def enter_command(self, *command: str) -> list[str]:
        """``command`` run in this host's namespaces (network and mount)."""
        assert self.anchor is not None, "the host is not up"
        return ["nsenter", "-t", str(self.anchor.pid), "-n", "-m", "--", *command]

    def run(self, *command: str, timeout: float = 60.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on this host (its namespaces) and wait for it."""
        return subprocess.run(self.enter_command(*command), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def popen(self, *command: str, log: Path) -> subprocess.Popen[bytes]:
        """Start ``command`` on this host, its output appended to ``log``."""
        with log.open("ab") as out:
            return subprocess.Popen(self.enter_command(*command), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    # --- bringing it up -----------------------------------------------------------------

    def prepare(self) -> None:
        """Its private libvirt directories and configuration (before :meth:`up`)."""
        for name in LIBVIRT_DIRS:
            if name != "etc":
                (self.libvirt_dir / name).mkdir(parents=True, exist_ok=True)
        etc = self.libvirt_dir / "etc"
        shutil.copytree("/etc/libvirt", etc, symlinks=True, dirs_exist_ok=True)
        (self.workdir / "libvirt").symlink_to(self.libvirt_dir)  # for post-mortems
        for stale in etc.glob("qemu/*.xml"):  # no persistent domains of the real host
            stale.unlink()
        shutil.rmtree(etc / "qemu" / "networks", ignore_errors=True)
        (etc / "libvirtd.conf").write_text(
            "listen_tls = 0\nlisten_tcp = 1\nauth_tcp = \"none\"\n"
            f"listen_addr = \"{self.address}\"\nhost_uuid = \"{self.host_uuid}\"\n"
        )
        with (etc / "qemu.conf").open("a") as f:
            f.write("\ncgroup_controllers = [ ]\n")  # no cgroups of its own in a namespace
        hook = etc / "hooks" / "qemu"
        hook.parent.mkdir(exist_ok=True)
        hook.write_text("#!/bin/sh\n# the test bed's: a test's own hook, when there is one\n"
                        f"[ -x '{self.libvirt_hook}' ] || exit 0\n"
                        f"exec '{self.libvirt_hook}' \"$@\"\n")
        hook.chmod(0o755)

    def up(self) -> None:
        """Start the anchor (namespaces), then virtlogd and libvirtd in them."""
        ready = self.workdir / "anchor.ready"
        binds = [f"mount --bind {self.libvirt_dir / n} {t}" for n, t in LIBVIRT_DIRS.items()]
        script = " && ".join([f"{{ {FORGET_FOREIGN_MOUNTS}; true; }}", *binds,
                              f"touch {ready}", "exec sleep infinity"])
        with (self.workdir / "anchor.log").open("ab") as log:
            self.anchor = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "unshare", "-m", "--propagation",
                 "private", "sh", "-c", script],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._wait(ready.exists, "its namespaces", self.anchor)
        self.start_libvirt()

    def start_libvirt(self) -> None:
        """Start (or start again) its virtlogd and libvirtd; wait until libvirtd answers."""
        run = self.libvirt_dir / "run"
        if self.virtlogd is None or self.virtlogd.poll() is not None:
            self.virtlogd = self.popen("virtlogd", "-p", str(run / "virtlogd.pid"),
                                       log=self.workdir / "virtlogd.log")
        self.libvirtd = self.popen("libvirtd", "--listen", "-p", str(run / "libvirtd.pid"),
                                   log=self.workdir / "libvirtd.log")
        proc = self.libvirtd
        last: list[str] = []

        def answers() -> bool:
            try:
                self.connect().close()
            except libvirt.libvirtError as e:
                last[:] = [str(e)]
                return False
            return True

        try:
            self._wait(answers, "libvirtd", proc)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; last error: {last[0] if last else '-'}") from None

    def _wait(self, ready: Callable[[], bool], what: str,
              proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"host {self.name}: {what} exited with {proc.returncode} "
                                   f"(see {self.workdir})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"host {self.name}: {what} not up within {START_TIMEOUT} s")
            time.sleep(0.05)

    # --- what runs there ------------------------------------------------------------------

    def domains(self) -> list[str]:
        """The UUIDs of its running domains."""
        conn = self.connect()
        try:
            return sorted(d.UUIDString() for d in
                          conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
        finally:
            conn.close()

    def qemu_pids(self) -> list[int]:
        pids = []
        for pid_file in self.qemu_run_dir.glob("*.pid") if self.qemu_run_dir.exists() else ():
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(pid_file.read_text().strip()))
        return pids

    def stop_libvirtd(self) -> None:
        _stop(self.libvirtd)

    # --- tearing it down ------------------------------------------------------------------

    def close(self) -> list[str]:
        """Stop its agent and daemons, kill everything left in its network namespace.
        Returns what went wrong (the bed reports it after tearing down the rest)."""
        problems: list[str] = []
        if self.agent is not None:
            try:
                self.agent.close()
            except Exception as e:  # noqa: BLE001 - keep tearing down
                problems.append(f"host {self.name}: stopping vdsmd: {e!r}")
        if self.libvirtd is not None and self.libvirtd.poll() is None:
            with contextlib.suppress(libvirt.libvirtError):
                conn = self.connect()
                try:
                    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                        with contextlib.suppress(libvirt.libvirtError):
                            dom.destroy()
                finally:
                    conn.close()
        for proc in (self.libvirtd, self.virtlogd):
            _stop(proc)
        for pid in self.qemu_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if netns.exists(self.netns):
            stuck = netns.kill_all(self.netns)
            if stuck:
                problems.append(f"host {self.name}: processes {stuck} would not die")
        if self.anchor is not None:
            _stop(self.anchor)
        # keep libvirt's logs (of qemu too) with the test's files; the short dir goes
        with contextlib.suppress(OSError, shutil.Error):
            link = self.workdir / "libvirt"
            if link.is_symlink():
                link.unlink()
            shutil.copytree(self.libvirt_dir / "log", self.workdir / "libvirt-log",
                            dirs_exist_ok=True)
        return problems


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; reaped."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)
