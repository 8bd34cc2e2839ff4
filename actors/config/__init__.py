"""vdsmd configuration: a TOML file plus command-line flags, over PROTOCOL.md's defaults.

Each TOML table maps onto one frozen dataclass; an unknown table or key, or a value of the
wrong type, is a clear startup error naming it. Flags given on the command line win over the
file.

The sections are grouped by area, each group in its own module: ``daemon`` (the process, its
endpoints, CURVE, supervision, jobs, metrics, debugging), ``host`` (libvirt, host stats,
networks, fencing, the policy), ``vm`` (VMs, their guest agent, thin provisioning),
``migration`` (migrations and peers), ``storage`` (storage, the SPM lease, the mailbox).
``root`` holds :class:`Config`, the whole; ``load`` reads, overrides and checks it; ``base``
has :class:`ConfigError` and the defaults that depend on running as root. Import every name
from ``actors.config``.
"""

from __future__ import annotations

from actors.config.base import (
    ConfigError,
    default_hooks_dir,
    default_libvirt_uri,
    default_state_dir,
    default_vm_log_dir,
)
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
from actors.config.host import (
    DEFAULT_FENCE_AGENTS,
    FencingConfig,
    HostConfig,
    LibvirtConfig,
    NetworkConfig,
    PolicyConfig,
)
from actors.config.load import (
    agent_run_dir,
    check,
    derive_run_dir,
    from_mapping,
    load,
    with_overrides,
)
from actors.config.migration import PEER_NAME, MigrationConfig, PeerConfig
from actors.config.root import Config
from actors.config.storage import MailboxConfig, SpmConfig, StorageConfig
from actors.config.vm import (
    COMMAND_PLACEHOLDERS,
    DEFAULT_APPS_COMMAND,
    DEFAULT_APPS_MATCH,
    DEFAULT_IMAGE_DIRS,
    GuestAgentConfig,
    ThinConfig,
    VmConfig,
)

__all__ = [
    "COMMAND_PLACEHOLDERS", "DEFAULT_APPS_COMMAND", "DEFAULT_APPS_MATCH",
    "DEFAULT_FENCE_AGENTS", "DEFAULT_IMAGE_DIRS", "PEER_NAME", "ApiConfig", "Config",
    "ConfigError", "CurveSection", "DaemonConfig", "DebugConfig", "EventsConfig",
    "FencingConfig", "GuestAgentConfig", "HostConfig", "JobsConfig", "LibvirtConfig",
    "MailboxConfig", "MetricsConfig", "MigrationConfig", "NetworkConfig", "PeerConfig",
    "PolicyConfig", "SpmConfig", "StorageConfig", "SupervisionConfig", "ThinConfig",
    "VmConfig", "agent_run_dir", "check", "default_hooks_dir", "default_libvirt_uri",
    "default_state_dir", "default_vm_log_dir", "derive_run_dir", "from_mapping", "load",
    "with_overrides",
]
