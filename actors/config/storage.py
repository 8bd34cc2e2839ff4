"""The storage sections: storage I/O and monitoring, the SPM lease, the mailbox."""

from __future__ import annotations

from dataclasses import dataclass

from actors.config.base import ConfigError


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
