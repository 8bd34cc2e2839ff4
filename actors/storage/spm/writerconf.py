"""What the keeper tells the writer when it starts it (JSON on the writer's stdin)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class WriterConfig:
    sp_uuid: str
    master_sd: str
    host_id: int
    mnt_root: str  # where vdsmd connects storage (the writer finds domains there)
    links_dir: str
    file_preallocation: str = "falloc"
    workers: int = 4
    io_timeout: float = 5.0  # mailbox slot writes
    mail_hosts: int = 64  # mailbox slots served
    prepared_dir: str = ""  # this host's records of prepared volumes (deletions check them)
    lock_timeout: float = 20.0  # an image's lock (shared with vdsmd's prepares)
    lver: int = 0  # set by the keeper for each writer it starts
    endpoint: str = ""
    fence_path: str = ""
    keeper_pid: int = 0
    journal_dir: str = ""
    log_level: str = "INFO"

    def for_lease(self, *, lver: int, endpoint: str, fence_path: str, keeper_pid: int,
                  journal_dir: str) -> WriterConfig:
        return replace(self, lver=lver, endpoint=endpoint, fence_path=fence_path,
                       keeper_pid=keeper_pid, journal_dir=journal_dir)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WriterConfig:
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> WriterConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the writer's config is not a JSON object")
        return cls.from_dict(data)
