"""The whole configuration: :class:`Config`, one field per TOML table."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.config.daemon import (
    ApiConfig,
    CurveSection,
    DaemonConfig,
    DebugConfig,
    EventsConfig,
    JobsConfig,
    MetricsConfig,
    SupervisionConfig,
)
from actors.config.host import FencingConfig, HostConfig, LibvirtConfig, NetworkConfig, PolicyConfig
from actors.config.migration import MigrationConfig, PeerConfig
from actors.config.storage import MailboxConfig, SpmConfig, StorageConfig
from actors.config.vm import GuestAgentConfig, ThinConfig, VmConfig


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
