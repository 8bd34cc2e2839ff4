"""The test bed: several hosts on one machine, joined by a switch, torn down completely.

Topology: one network namespace per host and one more for the *switch*, which holds a Linux
bridge; each host's ``eth0`` is a veth whose other end is a port of that bridge (created
straight into the namespaces: nothing of the bed appears in the test machine's own
namespace). Host ``i`` has the address ``10.77.0.<i+1>/24``; the addresses exist only inside
the bed (never address them from the test machine's own namespace: use the host's
namespace, as :class:`~tests.testbed.agent.BedAgent` does).

Keys: every host has a CURVE key pair (its agent's server key, also its identity when it
calls another host's agent), and the bed has one client key pair for the tests. A host
authorises the client key and every other host's key, and knows every other host as a peer
(``[peers.<name>]`` in its config).

:meth:`Bed.close` stops every agent and daemon, kills whatever is left in the bed's
namespaces (guests included) and deletes the namespaces (the veths go with them); mounts made
inside a host vanish with its mount namespace. A bed left behind by a test process that was
killed is removed by the next bed that starts (:func:`tests.testbed.netns.sweep_stale`).
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from messaging.curve import generate_keys
from tests import guest as g
from tests.harness import wait_for
from tests.testbed import netns
from tests.testbed.agent import API_PORT, BedAgent, merged, toml
from tests.testbed.host import BedHost

SUBNET = "10.77.0"
SHORT_ROOT = Path("/tmp")  # the bed's own short directory, named after its process
_serials = itertools.count(1)


class Bed:
    """Hosts named ``names`` (``"a"``, ``"b"`` by default) under ``workdir``."""

    def __init__(self, workdir: Path, *, names: tuple[str, ...] = ("a", "b")) -> None:
        if not 1 <= len(names) <= 200 or len(set(names)) != len(names):
            raise ValueError(f"bad host names {names!r}")
        self.workdir = workdir
        self.tag = f"{os.getpid()}-{next(_serials)}{secrets.token_hex(2)}"
        self.switch = f"{netns.PREFIX}-{self.tag}-sw"
        self.shared = workdir / "shared"
        self.keys = workdir / "keys"
        self.short = SHORT_ROOT / f"{netns.PREFIX}-{self.tag}"  # libvirtd's sockets
        self.hosts = [
            BedHost(name, netns_name=f"{netns.PREFIX}-{self.tag}-{name}",
                    address=f"{SUBNET}.{i + 1}", workdir=workdir / f"host-{name}",
                    libvirt_dir=self.short / name)
            for i, name in enumerate(names)
        ]
        self._started = False

    def __enter__(self) -> Bed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host(self, name: str) -> BedHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    # --- bringing it up ---------------------------------------------------------------------

    def start(self) -> Bed:
        """Namespaces, network, keys, and every host's libvirtd (agents: :meth:`start_agents`)."""
        netns.sweep_stale(SHORT_ROOT)
        self._started = True
        try:
            self._network()
            self._keys()
            self.shared.mkdir(parents=True, exist_ok=True)
            for host in self.hosts:
                host.workdir.mkdir(parents=True, exist_ok=True)
                (host.workdir / "hooks").mkdir(exist_ok=True)
                host.prepare()
            for host in self.hosts:
                host.up()
        except BaseException:
            self.close()
            raise
        return self

    def _network(self) -> None:
        netns.add(self.switch)
        netns.ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        netns.ip("-n", self.switch, "link", "set", "br0", "up")
        netns.ip("-n", self.switch, "link", "set", "lo", "up")
        for i, host in enumerate(self.hosts):
            netns.add(host.netns)
            port = f"p{i}"
            netns.ip("link", "add", port, "netns", self.switch, "type", "veth", "peer",
                     "name", "eth0", "netns", host.netns)
            netns.ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            netns.ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            netns.ip("-n", host.netns, "link", "set", "eth0", "up")
            netns.ip("-n", host.netns, "link", "set", "lo", "up")

    def _keys(self) -> None:
        generate_keys(self.keys, "client")
        for host in self.hosts:
            generate_keys(self.keys, host.name)
        for host in self.hosts:
            authorized = self.authorized_dir(host)
            authorized.mkdir(parents=True, exist_ok=True)
            for other in ("client", *(h.name for h in self.hosts if h is not host)):
                shutil.copy(self.keys / f"{other}.key", authorized / f"{other}.key")

    def authorized_dir(self, host: BedHost) -> Path:
        """The host's authorised client keys (remove a file there to refuse that client)."""
        return self.keys / f"authorized-{host.name}"

    # --- agents -----------------------------------------------------------------------------

    def agent_config(self, host: BedHost,
                     extra: Mapping[str, dict[str, Any]] | None = None) -> str:
        """The vdsmd config of ``host``: CURVE, its peers, short VM timings, the guest cache,
        the shared directory and its own directory as image dirs; ``extra`` tables merged
        in (their settings win)."""
        sections: dict[str, dict[str, Any]] = {
            "debug": {"fault_injection": True},
            "curve": {"server_secret": str(self.keys / f"{host.name}.key_secret"),
                      "authorized_keys": str(self.authorized_dir(host))},
            "vm": {"hooks_dir": str(host.workdir / "hooks"), "powering_up": 1.0,
                   "call_timeout": 5.0, "hook_timeout": 5.0, "resync_interval": 1.0,
                   "image_dirs": [str(g.default_cache_dir().absolute()), str(self.shared),
                                  str(host.workdir)],
                   "serial_log_dir": str(host.workdir / "vm-logs")},
            "migration": {"libvirt_uri": "qemu+tcp://{host}/system",
                          "migrate_uri": "tcp://{host}", "unsafe": True},
        }
        for other in self.hosts:
            if other is not host:
                sections[f"peers.{other.name}"] = {
                    "endpoint": f"tcp://{other.address}:{API_PORT}",
                    "public_key": str(self.keys / f"{other.name}.key"),
                }
        return toml(merged(sections, dict(extra or {})))

    def start_agents(self, timeout: float = 60.0,
                     **extra: Mapping[str, dict[str, Any]]) -> list[BedAgent]:
        """Start every host's vdsmd (at once), wait until each answers and has recovered.
        ``extra[<host name>]``: config tables for that host (see :meth:`agent_config`)."""
        unknown = set(extra) - {h.name for h in self.hosts}
        if unknown:
            raise KeyError(f"no hosts {sorted(unknown)}")
        agents = []
        for host in self.hosts:
            agent = self.new_agent(host, extra.get(host.name))
            agent.start_process()
            agents.append(agent)
        for agent in agents:
            wait_started(agent, timeout)
            agent.wait_ready(timeout)
        return agents

    def new_agent(self, host: BedHost,
                  extra: Mapping[str, dict[str, Any]] | None = None) -> BedAgent:
        """The host's vdsmd (not started), replacing (and closing) one it had."""
        if host.agent is not None:
            host.agent.close()
        agent = BedAgent(host.workdir / "vdsmd", host=host,
                         config=self.agent_config(host, extra),
                         client_secret=self.keys / "client.key_secret",
                         server_public=self.keys / f"{host.name}.key")
        host.agent = agent
        return agent

    # --- tearing down -----------------------------------------------------------------------

    def close(self) -> None:
        """Everything of the bed goes, also after a failed start; RuntimeError if something
        would not go (after trying the rest)."""
        if not self._started:
            return
        problems: list[str] = []
        for host in self.hosts:
            problems += host.close()
        for name in [h.netns for h in self.hosts] + [self.switch]:
            try:
                netns.delete(name)
            except RuntimeError as e:
                problems.append(str(e))
        shutil.rmtree(self.short, ignore_errors=True)
        self._started = False
        if problems:
            raise RuntimeError("test bed teardown: " + "; ".join(problems))


def wait_started(agent: BedAgent, timeout: float) -> None:
    """Until the agent answers Host.ping (its process must stay alive meanwhile)."""
    def answers() -> bool:
        assert agent.proc is not None
        if agent.proc.poll() is not None:
            raise RuntimeError(f"vdsmd exited with {agent.proc.returncode}:\n{agent.log()}")
        try:
            return bool(agent.call("Host.ping", timeout=1.0))
        except Exception:  # noqa: BLE001 - not answering yet
            time.sleep(0.05)
            return False

    wait_for(answers, timeout, interval=0.01, what=f"vdsmd on host {agent.host.name}")
