"""Helpers of the process-level VM tests: a vdsmd with VM settings, guests, cleanup.

Every domain a test's vdsmd makes carries that vdsmd's ``owner`` tag (its state directory)
in its metadata, so :func:`destroy_owned` finds and destroys them all after the test, even
when the vdsmd was killed or the test failed, without touching the domains of tests that
run in parallel.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt

from actors import config as config_module
from actors.vm import domxml
from messaging.client import ClientError
from tests import guest as g
from tests.harness import Vdsmd, wait_for
from tests.privlibvirt import PrivateLibvirtd, namespace_script

BOOT_TIMEOUT = 120.0
STATUS_TIMEOUT = 60.0


def config(hooks_dir: Path, guest_agent: dict[str, Any] | None = None, **vm: Any) -> str:
    """A vdsmd config: fault injection on, short VM timings (overridable); images may come
    from the test guest's cache and from the test's own directory (the parent of
    ``hooks_dir``), serial logs go to ``vm-logs`` there. ``guest_agent``: [guest_agent]
    settings."""
    top = hooks_dir.parent
    settings = {"powering_up": 1.0, "call_timeout": 5.0, "hook_timeout": 5.0,
                "image_dirs": [str(g.default_cache_dir().absolute()), str(top)],
                "serial_log_dir": str(top / "vm-logs"), "resync_interval": 1.0, **vm}
    lines = ["[debug]", "fault_injection = true", "[vm]", f'hooks_dir = "{hooks_dir}"']
    lines += [f"{k} = {_toml(v)}" for k, v in settings.items()]
    if guest_agent:
        lines += ["[guest_agent]", *(f"{k} = {_toml(v)}" for k, v in guest_agent.items())]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | list | tuple):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return repr(value)


def owner(agent: Vdsmd) -> str:
    return str(agent.state_dir.resolve())


def vm_setting(agent: Vdsmd, name: str, default: Any = None) -> Any:
    """A [vm] setting of the agent's config file."""
    return tomllib.loads(agent.config_path.read_text()).get("vm", {}).get(name, default)


def serial_log(agent: Vdsmd, vm_id: str) -> Path:
    directory = vm_setting(agent, "serial_log_dir", str(config_module.default_vm_log_dir()))
    return Path(directory) / f"{vm_id}.log"


def hibernation_dir(agent: Vdsmd) -> Path:
    return Path(vm_setting(agent, "hibernation_dir", "") or agent.state_dir / "hibernation")


def new_id() -> str:
    return str(uuid.uuid4())


def name() -> str:
    return f"vmt-{uuid.uuid4().hex[:10]}"


def guest_params(image: g.GuestImage, mode: str = "idle", **overrides: Any) -> dict[str, Any]:
    """vmParams of the tiny test guest (TCG, 128 MiB)."""
    params: dict[str, Any] = {
        "vmName": name(),
        "memSize": 128,
        "emulator": "qemu",
        "kernel": str(image.kernel),
        "initrd": str(image.initrd),
        "kernelArgs": g.kernel_cmdline(mode),
    }
    params.update(overrides)
    return params


def bare_params(**overrides: Any) -> dict[str, Any]:
    """vmParams of a VM with no OS: qemu runs SeaBIOS, finds nothing to boot, idles."""
    params: dict[str, Any] = {"vmName": name(), "memSize": 96, "emulator": "qemu"}
    params.update(overrides)
    return params


def error(call: Callable[[], Any]) -> ClientError:
    """The error reply ``call`` gets (AssertionError when it succeeds)."""
    try:
        result = call()
    except ClientError as e:
        return e
    raise AssertionError(f"expected an error reply, got {result!r}")


def status(agent: Vdsmd, vm_id: str) -> dict[str, Any]:
    stats: dict[str, Any] = agent.call("VM.getStats", vmID=vm_id)[0]
    return stats


def wait_status(agent: Vdsmd, vm_id: str, wanted: str,
                timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        stats = status(agent, vm_id)
        return stats if stats["status"] == wanted else None

    found: dict[str, Any] = wait_for(check, timeout, interval=0.1,
                                     what=f"VM {vm_id} to be {wanted}")
    return found


def wait_ready(agent: Vdsmd) -> None:
    """Until the agent's first recovery pass is done (VM verbs answer, not 100)."""
    agent.wait_ready(30)


def vm_actors(agent: Vdsmd) -> list[str]:
    return [a["path"] for a in agent.call("Actors.list")
            if a["path"].startswith("/vms/") and a["path"] != "/vms/sampler"]


def qemu_pid(vm_name: str, run_dir: Path = Path("/run/libvirt/qemu")) -> int:
    return int((run_dir / f"{vm_name}.pid").read_text().strip())


def domain_exists(conn: libvirt.virConnect, vm_id: str) -> bool:
    try:
        conn.lookupByUUIDString(vm_id)
    except libvirt.libvirtError:
        return False
    return True


def destroy_owned(conn: libvirt.virConnect, tag: str,
                  run_dir: Path = Path("/run/libvirt/qemu")) -> list[str]:
    """Continue and destroy every domain whose metadata names ``tag`` as its owner."""
    destroyed = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            stored = domxml.read_metadata(
                dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NS))
        except (libvirt.libvirtError, ValueError):
            continue
        if stored is None or stored.owner != tag:
            continue
        with contextlib.suppress(OSError, ValueError, libvirt.libvirtError):
            os.kill(qemu_pid(dom.name(), run_dir), signal.SIGCONT)
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
            destroyed.append(dom.name())
    return destroyed


@contextlib.contextmanager
def started(conn: libvirt.virConnect, daemon: Vdsmd) -> Iterator[Vdsmd]:
    """Start ``daemon`` and wait until it is ready; afterwards stop it (killed if it stays)
    and destroy every domain it made, even when it was killed or the test failed. The body
    of the tests' vdsmd fixtures: ``with started(conn, daemon): yield daemon``."""
    try:
        daemon.start()
        wait_ready(daemon)
        yield daemon
    finally:
        try:
            daemon.stop(timeout=30)
        finally:
            daemon.kill()
            destroy_owned(conn, owner(daemon))


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the block; SIGCONT it in any case."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def hook(hooks_dir: Path, hook_name: str, script: str, body: str) -> Path:
    """An executable hook script ``hooks_dir/hook_name/script`` running ``body`` (sh)."""
    directory = hooks_dir / hook_name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / script
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def elapsed(since: float) -> float:
    return time.monotonic() - since


def domain_exists_by_name(conn: libvirt.virConnect, vm_name: str) -> bool:
    try:
        conn.lookupByName(vm_name)
    except libvirt.libvirtError:
        return False
    return True


class GuestLibvirtd(PrivateLibvirtd):
    """A private libvirtd that can run guests: with a virtlogd of its own in its namespace
    (qemu's output goes through virtlogd). The virtlogd outlives a killed libvirtd, as it
    would on a host, and is stopped by :meth:`close`. ``virtlogd_conf`` is its virtlogd's
    configuration file (default: the host's)."""

    def __init__(self, workdir: Path, *, virtlogd_conf: Path | None = None,
                 wrapper: tuple[str, ...] = (), qemu_conf: str = "") -> None:
        """``wrapper``: runs the daemons (``ip netns exec NS``: in a network namespace).
        ``qemu_conf``: lines added to a private copy of /etc/libvirt/qemu.conf (its
        /etc/libvirt is then that copy, bound over the host's in its namespace)."""
        super().__init__(workdir)
        self.virtlogd_conf = virtlogd_conf
        self.wrapper = wrapper
        self.qemu_conf = qemu_conf

    def start(self, timeout: float = 20.0) -> None:
        conf = f" -f {self.virtlogd_conf}" if self.virtlogd_conf else ""
        virtlogd = f"(virtlogd -d -p {self.workdir / 'virtlogd.pid'}{conf} || true)"
        etc: tuple[str, ...] = ()
        if self.qemu_conf:
            private = self.workdir / "etc"
            shutil.rmtree(private, ignore_errors=True)
            shutil.copytree("/etc/libvirt", private, symlinks=True)
            with (private / "qemu.conf").open("a") as f:
                f.write("\n" + self.qemu_conf + "\n")
            etc = (f"mount --bind {private} /etc/libvirt",)
        script = namespace_script(self.workdir, *etc, virtlogd,
                                  f"exec libvirtd -p {self.workdir / 'libvirtd.pid'}")
        with (self.workdir / "libvirtd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrapper, "unshare", "-m", "--propagation", "private", "sh", "-c",
                 script],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"private libvirtd exited with {self.proc.returncode}")
            if self.socket.exists():
                with contextlib.suppress(libvirt.libvirtError):
                    libvirt.open(self.uri).close()
                    return
            time.sleep(0.1)
        raise TimeoutError("private libvirtd did not answer")

    @property
    def qemu_run_dir(self) -> Path:
        return self.workdir / "run" / "qemu"

    def close(self) -> None:
        """Destroy its guests, stop it and its virtlogd."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(libvirt.libvirtError):
                conn = libvirt.open(self.uri)
                try:
                    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                        with contextlib.suppress(libvirt.libvirtError):
                            dom.destroy()
                finally:
                    conn.close()
        self.kill()
        for pid_file in self.qemu_run_dir.glob("*.pid") if self.qemu_run_dir.exists() else ():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((self.workdir / "virtlogd.pid").read_text().strip()), signal.SIGTERM)
