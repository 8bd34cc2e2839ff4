"""What vdsmd tells a keeper when it starts it (JSON on the keeper's stdin)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAX_IPC_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


@dataclass(frozen=True)
class KeeperConfig:
    sp_uuid: str
    host_id: int
    owner: str  # this agent's host UUID, written into its host-id record
    ids_path: str  # the master domain's delta-lease area
    leases_path: str  # the master domain's lease area (the SPM lease is at offset 0)
    run_dir: str  # the keeper's own directory: fence file, sockets, pid files
    lease: float  # seconds a renewal keeps the host id (and so the SPM lease) valid
    renew_interval: float
    io_timeout: float
    agent_timeout: float  # no heartbeat from vdsmd this long: stop being SPM
    parent_pid: int = 0  # vdsmd: the keeper ends when it does
    kill_grace: float = 0.5  # how long a SIGKILL may take to end the writer
    max_hosts: int = 250
    auto_contend: bool = False
    journal_dir: str = ""  # the safety journal's directory ("" = no journal)
    writer: dict[str, Any] = field(default_factory=dict)  # the writer's own config

    @property
    def run(self) -> Path:
        return Path(self.run_dir)

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.run_dir}/k.sock"

    @property
    def fence_path(self) -> Path:
        return self.run / "fence"

    @property
    def margin(self) -> float:
        """How long before the lease's deadline the writer must be dead: one I/O (a write
        the writer already issued) plus the time a SIGKILL takes."""
        return self.io_timeout + self.kill_grace

    def writer_endpoint(self, lver: int) -> str:
        return f"ipc://{self.run_dir}/w{lver}.sock"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> KeeperConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the keeper's config is not a JSON object")
        config = cls(**data)
        longest = len(config.writer_endpoint(10**6).removeprefix("ipc://").encode())
        if longest > MAX_IPC_PATH:
            raise ValueError(f"the keeper's run dir {config.run_dir} is too long for unix "
                             f"sockets ({longest} > {MAX_IPC_PATH} bytes): use a shorter run dir")
        if config.lease <= config.margin + config.renew_interval + config.io_timeout:
            raise ValueError(f"lease {config.lease} s leaves no time to renew: it must exceed "
                             f"renew_interval + 2 x io_timeout + kill_grace")
        return config
