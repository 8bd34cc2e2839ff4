"""A node with a BMC: a libvirt domain and VirtualBMC serving IPMI for it on 127.0.0.1.

VirtualBMC (``virtualbmc`` on PyPI) runs from its own venv (``.venv-vbmc``, made by
``tools/setup-host --dev``) with its own ``HOME`` and configuration under the test's
directory, so its state stays private: ``vbmcd`` (its control socket on a free loopback
port) and one IPMI endpoint on a free loopback UDP port. Power on/off through IPMI becomes
``virDomainCreate``/``virDomainDestroy`` of the node's domain, which must be defined.

Everything is cleaned up by :meth:`Bmc.close` (the ``node_bmc`` fixtures call it): the IPMI
endpoint, vbmcd (by its pid), the domain (destroyed and undefined).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import libvirt

from tests.harness import TOP, wait_for

VENV = TOP / ".venv-vbmc"
USER, PASSWORD = "admin", "fence-pw-Zq81"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def node_xml(name: str) -> str:
    """A small TCG domain with nothing to boot: enough to be powered on and off."""
    return (f"<domain type='qemu'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
            "<memory unit='MiB'>32</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type><boot dev='network'/></os>"
            "<features><acpi/></features><on_poweroff>destroy</on_poweroff>"
            "<devices><memballoon model='none'/></devices></domain>")


class Bmc:
    def __init__(self, workdir: Path, *, uri: str = "qemu:///system") -> None:
        if not (VENV / "bin" / "vbmcd").exists():
            raise RuntimeError(f"{VENV} has no virtualbmc: run tools/setup-host --dev")
        self.workdir = workdir
        self.home = workdir / "home"
        (self.home / ".vbmc").mkdir(parents=True, exist_ok=True)
        self.uri = uri
        self.name = f"fence-node-{uuid.uuid4().hex[:8]}"
        self.port = free_port(socket.SOCK_DGRAM)
        self.control = free_port(socket.SOCK_STREAM)
        (self.home / ".vbmc" / "virtualbmc.conf").write_text(
            f"[default]\nserver_port = {self.control}\n"
            f"config_dir = {self.home / '.vbmc'}\npid_file = {self.home / '.vbmc/master.pid'}\n"
            f"[log]\nlogfile = {workdir / 'vbmcd.log'}\n")
        self.conn = libvirt.open(uri)
        self.domain: libvirt.virDomain | None = None
        self.daemon: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "PATH": f"{VENV / 'bin'}:/usr/bin:/bin",
                "VIRTUALBMC_CONFIG": str(self.home / ".vbmc" / "virtualbmc.conf")}

    def _vbmc(self, *args: str) -> str:
        done = subprocess.run([str(VENV / "bin" / "vbmc"), *args], env=self._env(),
                              capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"vbmc {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def open(self) -> Bmc:
        """Define and start the node, start vbmcd and its IPMI endpoint for the node."""
        self.domain = self.conn.defineXML(node_xml(self.name))
        self.domain.create()
        log = (self.workdir / "vbmcd.out").open("ab")
        self.daemon = subprocess.Popen([str(VENV / "bin" / "vbmcd"), "--foreground"],
                                       env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        log.close()
        wait_for(self._answers, 30, 0.1, "vbmcd to answer")
        self._vbmc("add", self.name, "--port", str(self.port), "--address", "127.0.0.1",
                   "--username", USER, "--password", PASSWORD, "--libvirt-uri", self.uri)
        self._vbmc("start", self.name)
        wait_for(lambda: "running" in self._vbmc("show", self.name), 30, 0.1,
                 "the IPMI endpoint to run")
        return self

    def _answers(self) -> bool:
        assert self.daemon is not None
        if self.daemon.poll() is not None:
            raise RuntimeError(f"vbmcd exited: {(self.workdir / 'vbmcd.out').read_text()}")
        try:
            self._vbmc("list")
        except RuntimeError:
            return False
        return True

    def power(self) -> str:
        """What libvirt says: 'on' while the domain runs, else 'off'."""
        assert self.domain is not None
        return "on" if self.domain.isActive() else "off"

    def power_on(self) -> None:
        assert self.domain is not None
        if not self.domain.isActive():
            self.domain.create()

    def close(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            try:
                self._vbmc("stop", self.name)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait(10)
        if self.domain is not None:
            try:
                if self.domain.isActive():
                    self.domain.destroy()
            except libvirt.libvirtError:
                pass
            try:
                self.domain.undefine()
            except libvirt.libvirtError:
                pass
        self.conn.close()


def processes_with(text: str) -> list[tuple[int, str]]:
    """Every process whose command line contains ``text``: (pid, command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        line = raw.replace(b"\0", b" ").decode(errors="replace")
        if text in line:
            found.append((int(entry.name), line))
    return found


def wait_gone(text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while processes_with(text) and time.monotonic() < deadline:
        time.sleep(0.05)
