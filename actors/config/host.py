"""The host's sections: libvirt, host stats, networks, fencing, the policy."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from actors.config.base import ConfigError, default_libvirt_uri


@dataclass(frozen=True)
class LibvirtConfig:
    """The libvirt connection. libvirtd's liveness is probed by the agent (libvirt's own
    client keepalive is off: see actors/host/libvirtopen.py)."""

    uri: str = field(default_factory=default_libvirt_uri)
    reconnect_max: float = 5.0  # longest backoff between connect attempts
    probe_interval: float = 5.0  # how often the agent checks that libvirtd answers
    stall_timeout: float = 5.0  # no answer this long: verbs needing libvirt answer 101
    reconnect_after: float = 15.0  # no answer this long: retire the connection, reconnect

    def __post_init__(self) -> None:
        for name in ("reconnect_max", "probe_interval", "stall_timeout", "reconnect_after"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[libvirt] {name} must be positive")
        if self.reconnect_after < self.stall_timeout:
            raise ConfigError("[libvirt] reconnect_after must not be shorter than "
                              "stall_timeout")


@dataclass(frozen=True)
class HostConfig:
    stats_interval: float = 5.0

@dataclass(frozen=True)
class NetworkConfig:
    """Network configuration (setupNetworks): DHCP, which links count as NICs, limits."""

    dhcp_client: tuple[str, ...] = ("udhcpc",)  # busybox's client, run with its own args
    dhcp_timeout: float = 30.0  # blockingdhcp: wait this long for a lease, then roll back
    fake_nics: tuple[str, ...] = ("dummy_*", "veth_*")  # veth/dummy links usable as NICs
    max_queued: int = 8  # changes waiting for the one in progress; more: 312
    apply_timeout: float = 60.0  # a change's budget besides its connectivity wait and DHCP

    def __post_init__(self) -> None:
        if not self.dhcp_client or not self.dhcp_client[0]:
            raise ConfigError("[network] dhcp_client must name a program")
        for name in ("dhcp_timeout", "apply_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[network] {name} must be positive")
        if self.max_queued < 1:
            raise ConfigError("[network] max_queued must be at least 1")

#: the fence agents Host.fenceNode may run (see actors/host/fenceopts.py for why these)
DEFAULT_FENCE_AGENTS = (
    "idrac", "ilo3", "ilo4", "ilo5", "imm", "ipmilan", "ipmilanplus", "ilo", "ilo2", "redfish",
    "cisco_ucs", "ilo_ssh", "ilo3_ssh", "ilo4_ssh", "ilo5_ssh", "ilo_mp", "ilo_moonshot",
    "drac5", "apc", "wti", "bladecenter", "rsa", "rsb", "hpblade",
)


@dataclass(frozen=True)
class FencingConfig:
    """Host.fenceNode: the fence agents (Debian's fence-agents) it may run, and for how long."""

    agent_dir: Path = Path("/usr/sbin")  # where fence_<agent> programs are
    agents: tuple[str, ...] = DEFAULT_FENCE_AGENTS
    timeout: float = 60.0  # one agent run; past it the agent is killed (power state unknown)
    max_running: int = 4  # fences at once (one per device)

    def __post_init__(self) -> None:
        if not self.agent_dir.is_absolute():
            raise ConfigError(f"[fencing] agent_dir {self.agent_dir} is not absolute")
        if not 0 < self.timeout <= 600:
            raise ConfigError("[fencing] timeout must be within (0, 600] seconds")
        if self.max_running < 1:
            raise ConfigError("[fencing] max_running must be at least 1")
        for name in self.agents:
            if re.fullmatch(r"[a-z0-9][a-z0-9_]{0,63}", name) is None:
                raise ConfigError(f"[fencing] agents: {name!r} is not an agent name (as in "
                                  "fence_<name>: lower-case letters, digits, '_')")

@dataclass(frozen=True)
class PolicyConfig:
    """The policy (KSM, balloons, vCPU quotas): see actors/policy/ and contrib/policy.toml."""

    interval: float = 10.0  # seconds between decisions
    rules: str = ""  # the rule file (TOML, reloaded when it changes); empty: built-in rules

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ConfigError("[policy] interval must be positive")
        if self.rules and not Path(self.rules).is_absolute():
            raise ConfigError(f"[policy] rules {self.rules} is not an absolute path")
