"""Live migration and the peers (other hosts' agents) it talks to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from actors.config.base import ConfigError
from messaging import endpoints


@dataclass(frozen=True)
class MigrationConfig:
    """Live migration between hosts (docs/migration.md). ``{host}`` in the URIs is the
    destination's host, as its ``[peers.<name>] endpoint`` names it."""

    max_outgoing: int = 2  # migrations from this host at once; more wait in a queue
    max_incoming: int = 2  # migrations to this host at once; more are refused (retryable)
    downtime: int = 500  # ms: the longest pause of the guest at the switch-over (default)
    bandwidth: int = 0  # MiB/s a migration may use (default); 0: no limit
    max_time_per_gib: float = 64.0  # s per GiB of guest memory (at least 1) before timing out
    progress_interval: float = 1.0  # s between progress samples (migration, save, restore)
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
