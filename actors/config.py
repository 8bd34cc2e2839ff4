"""vdsmd configuration: a TOML file plus command-line flags, over PROTOCOL.md's defaults.

Each TOML table maps onto one frozen dataclass below; an unknown table or key, or a value of
the wrong type, is a clear startup error naming it. Flags given on the command line win over
the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from messaging import endpoints


def _root() -> bool:
    return os.geteuid() == 0


def default_state_dir() -> Path:
    if _root():
        return Path("/var/lib/vdsm")
    return Path.home() / ".local" / "state" / "vdsm"


def default_libvirt_uri() -> str:
    return "qemu:///system" if _root() else "qemu:///session"


def default_hooks_dir() -> Path:
    return Path("/etc/vdsm/hooks") if _root() else default_state_dir() / "hooks"


def default_vm_log_dir() -> Path:
    return Path("/var/log/vdsm/vms") if _root() else Path.home() / ".cache" / "vdsm" / "vms"


#: Where the images a client may name by path (disks, CD-ROMs, floppies, kernels, initrds)
#: live by default: libvirt's conventional directories.
DEFAULT_IMAGE_DIRS = (Path("/var/lib/libvirt/images"), Path("/var/lib/libvirt/boot"))


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path = field(default_factory=default_state_dir)
    run_dir: Path = field(default_factory=endpoints.default_run_dir)
    host_id: int = 1
    log_level: str = "INFO"
    log_file: str = ""  # empty: stderr


@dataclass(frozen=True)
class ApiConfig:
    endpoint: str = ""  # empty: ipc://<run_dir>/api.sock
    insecure_tcp: bool = False  # serve a loopback tcp endpoint without CURVE (logged)
    workers: int = 16
    max_pending: int = 1000
    max_frame: int = 4 * 1024 * 1024
    max_depth: int = 32


@dataclass(frozen=True)
class EventsConfig:
    endpoint: str = ""  # empty: ipc://<run_dir>/events.sock
    insecure_tcp: bool = False  # publish on a loopback tcp endpoint without CURVE (logged)
    hwm: int = 10_000


@dataclass(frozen=True)
class CurveSection:
    """CURVE keys; required for every tcp endpoint (unless its insecure_tcp is set)."""

    server_secret: str = ""
    authorized_keys: str = ""
    reload_interval: float = 2.0  # seconds between checks of authorized_keys; 0: SIGHUP only

    def __post_init__(self) -> None:
        if self.reload_interval < 0:
            raise ConfigError("[curve] reload_interval must not be negative")

    @property
    def enabled(self) -> bool:
        return bool(self.server_secret)


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
class VmConfig:
    """VM settings. Timeouts bound calls into qemu (through libvirt) that may hang."""

    hooks_dir: Path = field(default_factory=default_hooks_dir)
    hook_timeout: float = 30.0  # per hook executable
    stats_interval: float = 2.0  # one bulk stats call per interval
    stats_timeout: float = 1.0  # a bulk call stuck longer is abandoned and re-issued at once
    call_timeout: float = 10.0  # pause, cont, reset, shutdown, setTicket, media changes
    start_timeout: float = 60.0  # createXML / restore (plus the hooks' own timeouts)
    destroy_timeout: float = 30.0  # libvirt gives a stuck qemu 10 s after SIGTERM
    save_timeout: float = 240.0  # VM.hibernate writing the guest's memory
    powering_up: float = 10.0  # a started VM is "Powering up" this long, then "Up"
    # Paths a client may name (see actors/vm/paths.py): images and boot files only in
    # image_dirs; memory images (VM.hibernate, restoreState) only in hibernation_dir.
    image_dirs: tuple[Path, ...] = DEFAULT_IMAGE_DIRS
    hibernation_dir: str = ""  # empty: <state_dir>/hibernation
    # Guests' serial console logs: capped and rotated by virtlogd, outside the state dir.
    serial_log_dir: Path = field(default_factory=default_vm_log_dir)
    serial_logs_kept: int = 20  # logs of VMs no longer known that are kept for post-mortems
    resync_interval: float = 5.0  # a VM without a running actor is recovered within ~2x this

    def __post_init__(self) -> None:
        if self.resync_interval <= 0:
            raise ConfigError("[vm] resync_interval must be positive")
        if self.serial_logs_kept < 0:
            raise ConfigError("[vm] serial_logs_kept must not be negative")
        for path in (*self.image_dirs, self.serial_log_dir):
            if not path.is_absolute():
                raise ConfigError(f"[vm] {path} is not an absolute path")
        if self.hibernation_dir and not Path(self.hibernation_dir).is_absolute():
            raise ConfigError(f"[vm] hibernation_dir {self.hibernation_dir} is not absolute")


#: The guest's package query (appsList): rpm where it answers, else dpkg-query.
DEFAULT_APPS_COMMAND = (
    "/bin/sh", "-c",
    "rpm -qa --qf '%{NAME}-%{VERSION}-%{RELEASE}\\n' 2>/dev/null"
    " || dpkg-query -W -f='${Package}-${Version}\\n'",
)
#: The "interesting applications" appsList shows (shell patterns on "name-version"), as
#: oVirt's guest agent reported them: kernels, guest agents, display drivers.
DEFAULT_APPS_MATCH = (
    "kernel-*", "linux-image-*", "qemu-guest-agent-*", "ovirt-guest-agent-*",
    "spice-vdagent-*", "xorg-x11-drv-qxl-*", "xserver-xorg-video-qxl-*", "cloud-init-*",
)
#: The placeholders each desktop command may use (whole or inside an argument); the password
#: of desktopLogin only ever goes to the command's standard input.
COMMAND_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "desktop_lock": frozenset(),
    "desktop_logoff": frozenset(),
    "desktop_logoff_user": frozenset({"username"}),
    "desktop_login": frozenset({"domain", "username"}),
}


@dataclass(frozen=True)
class GuestAgentConfig:
    """The QEMU guest agent (qemu-ga) of the VMs: see actors/vm/guestagent.py. Commands are
    argument lists run in the guest by ``guest-exec`` (never a shell line built from a
    client's values)."""

    timeout: float = 5.0  # one agent command, libvirt's guest-sync included
    info_interval: float = 30.0  # guest info refresh (0: never); verbs and events regardless
    apps_interval: float = 300.0  # the package query, at most this often (0: never)
    command_timeout: float = 30.0  # a guest-exec command (apps, desktop verbs), start to exit
    shutdown_timeout: float = 10.0  # agent shutdown/reboot before the ACPI fallback
    thaw_after: float = 60.0  # VM.freeze's default: the agent's thaw is forced after it
    max_reply: int = 1024 * 1024  # bytes: a longer agent reply is refused
    apps_command: tuple[str, ...] = DEFAULT_APPS_COMMAND
    apps_match: tuple[str, ...] = DEFAULT_APPS_MATCH  # empty: every package
    desktop_lock: tuple[str, ...] = ("loginctl", "lock-sessions")
    desktop_logoff: tuple[str, ...] = ("loginctl", "terminate-seat", "seat0")
    desktop_logoff_user: tuple[str, ...] = ("loginctl", "terminate-user", "{username}")
    desktop_login: tuple[str, ...] = ()  # no standard way: VM.desktopLogin answers 104

    def __post_init__(self) -> None:
        for name in ("timeout", "command_timeout", "shutdown_timeout", "thaw_after"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[guest_agent] {name} must be positive")
        for name in ("info_interval", "apps_interval"):
            if getattr(self, name) < 0:
                raise ConfigError(f"[guest_agent] {name} must not be negative")
        if self.max_reply < 4096:
            raise ConfigError("[guest_agent] max_reply must be at least 4096")
        if self.apps_command and not self.apps_command[0]:
            raise ConfigError("[guest_agent] apps_command: the program is empty")
        for name, allowed in COMMAND_PLACEHOLDERS.items():
            command: tuple[str, ...] = getattr(self, name)
            if command and not command[0]:
                raise ConfigError(f"[guest_agent] {name}: the program is empty")
            for arg in command:
                for used in _PLACEHOLDER.findall(arg):
                    if used not in allowed:
                        raise ConfigError(f"[guest_agent] {name}: {{{used}}} is not one of "
                                          f"{sorted(allowed) or 'no placeholders'}")


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class StorageConfig:
    """Storage settings. Every wait on storage I/O is bounded by one of these timeouts."""

    monitor_interval: float = 10.0  # one probe per domain per interval
    monitor_timeout: float = 10.0  # a probe running longer makes its domain invalid (215)
    call_timeout: float = 25.0  # a verb waits this long for storage I/O, then answers 215
    mount_timeout: float = 60.0  # one mount/umount command (killed past it)
    io_workers: int = 8  # threads for domain I/O of the verbs (info, prepare, create...)
    io_per_domain: int = 2  # of which at most this many on one domain (a hung one: 224)
    task_workers: int = 4  # threads running tasks (volume creation, deletion, attach...)
    file_preallocation: str = "falloc"  # file domains' preallocated volumes: falloc | full

    def __post_init__(self) -> None:
        if self.file_preallocation not in ("falloc", "full"):
            raise ConfigError(f"[storage] file_preallocation: {self.file_preallocation!r} is "
                              "not falloc or full")
        for name in ("monitor_interval", "monitor_timeout", "call_timeout", "mount_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[storage] {name} must be positive")
        for name in ("io_workers", "io_per_domain", "task_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[storage] {name} must be at least 1")


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


@dataclass(frozen=True)
class MigrationConfig:
    """Live migration between hosts (docs/migration.md). ``{host}`` in the URIs is the
    destination's host, as its ``[peers.<name>] endpoint`` names it."""

    max_outgoing: int = 2  # migrations from this host at once; more wait in a queue
    max_incoming: int = 2  # migrations to this host at once; more are refused (retryable)
    downtime: int = 500  # ms: the longest pause of the guest at the switch-over (default)
    bandwidth: int = 0  # MiB/s a migration may use (default); 0: no limit
    max_time_per_gib: float = 64.0  # s per GiB of guest memory (at least 1) before timing out
    progress_interval: float = 1.0  # s between progress samples (VM_migration_status)
    connect_timeout: float = 10.0  # s to reach a peer's agent (connect, CURVE, answer)
    prepare_timeout: float = 60.0  # s the destination has to prepare (storage, hooks, XML)
    incoming_grace: float = 60.0  # s the destination waits beyond the migration's timeout
    libvirt_uri: str = "qemu+tls://{host}/system"  # the destination's libvirtd (peer to peer)
    migrate_uri: str = ""  # the data channel (e.g. "tcp://{host}"); empty: libvirt's choice
    unsafe: bool = False  # allow disks on storage libvirt does not know to be shared

    def __post_init__(self) -> None:
        for name in ("max_outgoing", "max_incoming"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[migration] {name} must be at least 1")
        for name in ("downtime", "bandwidth"):
            if getattr(self, name) < 0:
                raise ConfigError(f"[migration] {name} must not be negative")
        for name in ("max_time_per_gib", "progress_interval", "connect_timeout",
                     "prepare_timeout", "incoming_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[migration] {name} must be positive")
        for name in ("libvirt_uri", "migrate_uri"):
            try:
                getattr(self, name).format(host="h")
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(f"[migration] {name}: only {{host}} may be replaced "
                                  f"({e!r})") from None
        if not self.libvirt_uri:
            raise ConfigError("[migration] libvirt_uri must not be empty")


@dataclass(frozen=True)
class PeerConfig:
    """Another host's agent (``[peers.<name>]``): where its API is and its server's public
    key (a ``.key`` file as ``zmq.auth.create_certificates`` writes it)."""

    endpoint: str
    public_key: Path

    def __post_init__(self) -> None:
        try:
            parsed = endpoints.parse(self.endpoint)
        except ValueError as e:
            raise ConfigError(f"[peers] {e}") from None
        if parsed.transport != "tcp":
            raise ConfigError(f"[peers] endpoint {self.endpoint!r} must be tcp://HOST:PORT")
        if not self.public_key.is_absolute():
            raise ConfigError(f"[peers] public_key {self.public_key} is not absolute")

    @property
    def host(self) -> str:
        """The endpoint's host as a URI names it (an IPv6 address in brackets)."""
        host = endpoints.parse(self.endpoint).host or ""
        return f"[{host}]" if ":" in host else host


PEER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class JobsConfig:
    keep_finished: float = 3600.0  # s a finished job stays listed (Host.getJobs)

    def __post_init__(self) -> None:
        if self.keep_finished < 0:
            raise ConfigError("[jobs] keep_finished must not be negative")


@dataclass(frozen=True)
class SpmConfig:
    """The SPM lease (docs/spm.md, docs/storage-leases.md). Every host of a pool must use the
    same lease_time and io_timeout: they bound how long a dead SPM keeps the role."""

    lease_time: float = 30.0  # a renewal keeps the host id (and the SPM lease) valid this long
    renew_interval: float = 5.0  # one host-id renewal per interval
    io_timeout: float = 5.0  # one lease read or write taking longer counts as failed
    agent_timeout: float = 10.0  # the keeper gives up the SPM role when vdsmd is silent this long
    heartbeat_interval: float = 1.0  # vdsmd -> keeper heartbeats
    kill_grace: float = 0.5  # time allowed for a SIGKILL of the writer to take effect
    max_hosts: int = 250  # host ids read by each observation of the ids area
    auto_contend: bool = False  # contend by itself whenever the pool has no live SPM
    journal: bool = False  # the safety journal on the master domain (tests, bench/chaos.py)
    writer_workers: int = 4  # the writer's threads (tasks, pool changes, extensions)

    def __post_init__(self) -> None:
        for name in ("lease_time", "renew_interval", "io_timeout", "agent_timeout",
                     "heartbeat_interval", "kill_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[spm] {name} must be positive")
        if self.lease_time <= self.renew_interval + 2 * self.io_timeout + self.kill_grace:
            raise ConfigError("[spm] lease_time must exceed renew_interval + 2 x io_timeout + "
                              "kill_grace, or the lease cannot be renewed in time")
        if self.heartbeat_interval * 2 >= self.agent_timeout:
            raise ConfigError("[spm] agent_timeout must be more than two heartbeat_intervals")
        if not 1 <= self.max_hosts <= 2000:
            raise ConfigError("[spm] max_hosts must be within 1..2000")
        if self.writer_workers < 1:
            raise ConfigError("[spm] writer_workers must be at least 1")


@dataclass(frozen=True)
class MailboxConfig:
    """The storage mailbox between the hosts and the SPM (docs/mailbox.md)."""

    poll_interval: float = 0.05  # the SPM's poll of every outbox; a waiting host's of its inbox
    idle_poll_interval: float = 0.5  # the SPM's slowest poll, once requests stopped coming
    hosts: int = 64  # outbox slots the SPM reads (host ids 1..hosts can ask it)

    def __post_init__(self) -> None:
        if not 0 < self.poll_interval <= 10:
            raise ConfigError("[mailbox] poll_interval must be within (0, 10] seconds")
        if not 0 < self.idle_poll_interval <= 10:  # below poll_interval: poll_interval
            raise ConfigError("[mailbox] idle_poll_interval must be within (0, 10] seconds")
        if not 1 <= self.hosts <= 256:
            raise ConfigError("[mailbox] hosts must be within 1..256 (1 MiB areas)")


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
class ThinConfig:
    """Thin provisioning of the VMs' cow volumes on block domains (actors/vm/thin.py): an
    extension adds a chunk when the guest's writes come within a watermark (half a chunk, or
    the drive's thresholdMiB) of the volume's end."""

    chunk_mib: int = 1024  # an extension adds at least this much
    chunk_max_mib: int = 8192  # the most an adaptive chunk grows to
    adaptive: bool = True  # the chunk grows with the drive's measured write rate
    headroom: float = 4.0  # s: an adaptive chunk holds this long of writes at that rate
    check_interval: float = 10.0  # s: the slow check that catches a lost threshold event
    extend_timeout: float = 60.0  # s: one wait for the SPM (then asked again: it keeps waiting)
    retry_max: float = 30.0  # s: the longest pause between attempts after a failed extension

    def __post_init__(self) -> None:
        if self.chunk_mib < 1:
            raise ConfigError("[thin] chunk_mib must be at least 1")
        if self.chunk_max_mib < self.chunk_mib:
            raise ConfigError("[thin] chunk_max_mib must be at least chunk_mib")
        for name in ("headroom", "check_interval", "extend_timeout", "retry_max"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[thin] {name} must be positive")


@dataclass(frozen=True)
class SupervisionConfig:
    max_restarts: int = 5
    within: float = 60.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0


@dataclass(frozen=True)
class DebugConfig:
    fault_injection: bool = False


@dataclass(frozen=True)
class MetricsConfig:
    """The optional HTTP endpoint in Prometheus' text format (off unless listen is set)."""

    listen: str = ""  # "HOST:PORT", e.g. "127.0.0.1:9105"; empty: no endpoint

    def __post_init__(self) -> None:
        if self.listen:
            host, sep, port = self.listen.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ConfigError(f"[metrics] listen: {self.listen!r} is not HOST:PORT")

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


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


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    curve: CurveSection = field(default_factory=CurveSection)
    libvirt: LibvirtConfig = field(default_factory=LibvirtConfig)
    host: HostConfig = field(default_factory=HostConfig)
    vm: VmConfig = field(default_factory=VmConfig)
    guest_agent: GuestAgentConfig = field(default_factory=GuestAgentConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    migration: MigrationConfig = field(default_factory=MigrationConfig)
    peers: dict[str, PeerConfig] = field(default_factory=dict)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    spm: SpmConfig = field(default_factory=SpmConfig)
    mailbox: MailboxConfig = field(default_factory=MailboxConfig)
    thin: ThinConfig = field(default_factory=ThinConfig)
    fencing: FencingConfig = field(default_factory=FencingConfig)
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    #: the settings the file or the flags gave ("daemon.run_dir"), as opposed to defaults
    given: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def api_endpoint(self) -> str:
        return self.api.endpoint or f"ipc://{self.daemon.run_dir}/api.sock"

    @property
    def events_endpoint(self) -> str:
        return self.events.endpoint or f"ipc://{self.daemon.run_dir}/events.sock"


def _coerce(section: str, key: str, kind: Any, value: Any) -> Any:
    where = f"[{section}] {key}"
    if kind is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(kind)[0]
        return tuple(_coerce(section, key, item, v) for v in value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {kind}")


def _section(cls: type[Any], name: str, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            names = ", ".join(sorted(known))
            raise ConfigError(f"[{name}] has no setting {key!r} (known: {names})")
    values = {}
    for key, value in table.items():
        kind = hints[key]
        if isinstance(kind, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        values[key] = _coerce(name, key, kind, value)
    return cls(**values)


def from_mapping(data: dict[str, Any]) -> Config:
    hints = typing.get_type_hints(Config)
    known = {f.name for f in dataclasses.fields(Config)} - {"given"}
    sections: dict[str, Any] = {}
    given = set()
    for name, table in data.items():
        if name not in known:
            raise ConfigError(f"unknown section [{name}] (known: {', '.join(sorted(known))})")
        if name == "peers":
            sections[name] = _peers(table)
        else:
            sections[name] = _section(hints[name], name, table)
        given |= {f"{name}.{key}" for key in table}
    return Config(**sections, given=frozenset(given))


def _peers(table: Any) -> dict[str, PeerConfig]:
    """``[peers.<name>]`` tables: each one peer, with its endpoint and public key."""
    if not isinstance(table, dict):
        raise ConfigError("[peers] must be a table of [peers.<name>] tables")
    peers = {}
    for name, peer in table.items():
        if PEER_NAME.fullmatch(name) is None:
            raise ConfigError(f"[peers.{name}]: a peer's name is letters, digits, '_.-'")
        if not isinstance(peer, dict):
            raise ConfigError(f"[peers] {name} must be a table [peers.{name}]")
        missing = {"endpoint", "public_key"} - set(peer)
        if missing:
            raise ConfigError(f"[peers.{name}] needs {', '.join(sorted(missing))}")
        peers[name] = _section(PeerConfig, f"peers.{name}", peer)
    return peers


def load(path: Path | None) -> Config:
    if path is None:
        return Config()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return from_mapping(data)


def check(config: Config) -> None:
    """What no single section can check: CURVE keys in pairs, every tcp endpoint secured."""
    curve = config.curve
    if curve.enabled and not curve.authorized_keys:
        raise ConfigError("[curve] server_secret needs authorized_keys too")
    if curve.authorized_keys and not curve.enabled:
        raise ConfigError("[curve] authorized_keys needs server_secret too")
    if config.peers and not curve.enabled:
        raise ConfigError("[peers] need [curve] server_secret: this host's key pair is its "
                          "identity when it calls a peer's agent")
    for name, url, insecure in (
        ("api", config.api_endpoint, config.api.insecure_tcp),
        ("events", config.events_endpoint, config.events.insecure_tcp),
    ):
        try:
            endpoints.check_security(endpoints.parse(url), curve=curve.enabled,
                                     insecure_tcp=insecure)
        except ValueError as e:
            raise ConfigError(f"[{name}] endpoint: {e}") from None


def with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``config`` with some settings replaced (flags win over the file)."""
    changes: dict[str, Any] = {}
    given = set(config.given)
    for name, settings in sections.items():
        values = {k: v for k, v in settings.items() if v is not None}
        if values:
            changes[name] = dataclasses.replace(getattr(config, name), **values)
            given |= {f"{name}.{key}" for key in values}
    return dataclasses.replace(config, **changes, given=frozenset(given))


def derive_run_dir(config: Config) -> Config:
    """Give an agent with its own state directory its own run directory, unless one was set.

    Two agents never share a state directory (each locks its own), so an agent started with
    another ``--state-dir`` than the default and no ``--run-dir`` gets
    ``<default run dir>/agents/<name>-<hash of the state dir>``: its sockets, mounts,
    storage links and the records of prepared volumes are its own, and it does not collide
    with the default agent's ``/run/vdsm`` (nor take its lock). The default agent keeps the
    default run directory.
    """
    if "daemon.run_dir" in config.given:
        return config
    state = config.daemon.state_dir.absolute()
    if state == default_state_dir().absolute():
        return config
    return dataclasses.replace(
        config, daemon=dataclasses.replace(config.daemon, run_dir=agent_run_dir(state)))


def agent_run_dir(state_dir: Path) -> Path:
    """The run directory :func:`derive_run_dir` gives the agent of ``state_dir``."""
    state = state_dir.absolute()
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", state.name)[:24] or "state"
    return endpoints.default_run_dir() / "agents" / f"{name}-{digest}"
