"""What the agent remembers of the network configuration, in ``<state_dir>/network/``.

- ``running.json``: the configuration the agent last committed, and the *boot marker* of the
  network namespace it was committed in (the kernel's boot id and the namespace's cookie,
  which the kernel never reuses while it runs). A marker that differs at start means the
  links are not the ones the agent configured: the host rebooted (or, in tests, the agent
  runs in a fresh namespace).
- ``safe.json``: the configuration ``Host.setSafeNetworkConfig`` made safe, restored at a
  boot; changes made after it and never made safe are dropped then.
- ``pending.json``: a change applied but not yet committed (waiting for connectivity to be
  confirmed). Found at start in the same boot, it is rolled back: an unconfirmed change never
  survives the agent that made it.

Each file is written atomically (a temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.host.network.model import NetConfig

log = logging.getLogger(__name__)

SO_NETNS_COOKIE = 71  # linux/socket.h, Linux 5.14+


def boot_marker() -> str:
    """This boot and this network namespace, as one string."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            cookie = int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8),
                                    "little")
        netns = f"cookie:{cookie}"
    except OSError:  # an older kernel: the namespace's inode (may be reused)
        netns = f"inode:{Path('/proc/self/ns/net').stat().st_ino}"
    return f"{boot}/{netns}"


@dataclass(frozen=True)
class Running:
    config: NetConfig
    marker: str


class NetStore:
    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "network"

    def _write(self, name: str, value: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / name
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(value, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.directory / name
        try:
            value = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("ignoring %s: %s", path, e)
            return None
        return value if isinstance(value, dict) else None

    def _config(self, name: str, value: dict[str, Any] | None) -> NetConfig | None:
        if value is None:
            return None
        try:
            return NetConfig.from_wire(value)
        except Exception as e:  # noqa: BLE001 - a damaged file is reported, never fatal
            log.error("ignoring the network configuration in %s: %s", name, e)
            return None

    def running(self) -> Running | None:
        value = self._read("running.json")
        config = self._config("running.json", value)
        if value is None or config is None:
            return None
        return Running(config, str(value.get("marker", "")))

    def save_running(self, config: NetConfig, marker: str) -> None:
        self._write("running.json", {**config.to_wire(), "marker": marker})

    def safe(self) -> NetConfig | None:
        return self._config("safe.json", self._read("safe.json"))

    def save_safe(self, config: NetConfig) -> None:
        self._write("safe.json", config.to_wire())

    def pending(self) -> tuple[NetConfig, str] | None:
        value = self._read("pending.json")
        config = self._config("pending.json", value)
        if value is None or config is None:
            return None
        return config, str(value.get("marker", ""))

    def save_pending(self, config: NetConfig, marker: str) -> None:
        self._write("pending.json", {**config.to_wire(), "marker": marker})

    def drop_pending(self) -> None:
        try:
            (self.directory / "pending.json").unlink()
        except FileNotFoundError:
            pass
