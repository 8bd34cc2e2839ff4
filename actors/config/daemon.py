"""The daemon's own sections: process, API and events endpoints, CURVE, supervision,
jobs, metrics, debugging."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from actors.config.base import ConfigError, default_state_dir
from messaging import endpoints


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
class JobsConfig:
    keep_finished: float = 3600.0  # s a finished job stays listed (Host.getJobs)

    def __post_init__(self) -> None:
        if self.keep_finished < 0:
            raise ConfigError("[jobs] keep_finished must not be negative")

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
