"""Endpoints: defaults, parsing, ipc socket permissions and the CURVE rule for tcp."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

IPC_DIR_MODE = 0o750
IPC_SOCKET_MODE = 0o660


def default_run_dir() -> Path:
    """``/run/vdsm`` for root; ``$XDG_RUNTIME_DIR/vdsm`` or ``/tmp/vdsm-<uid>`` otherwise."""
    if os.geteuid() == 0:
        return Path("/run/vdsm")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "vdsm"
    return Path(f"/tmp/vdsm-{os.geteuid()}")  # noqa: S108 - PROTOCOL.md's documented fallback


def default_api_endpoint() -> str:
    return f"ipc://{default_run_dir()}/api.sock"


def default_events_endpoint() -> str:
    return f"ipc://{default_run_dir()}/events.sock"


@dataclass(frozen=True)
class Endpoint:
    url: str
    transport: str
    address: str

    @property
    def ipc_path(self) -> Path | None:
        return Path(self.address) if self.transport == "ipc" else None

    @property
    def host(self) -> str | None:
        if self.transport != "tcp":
            return None
        host = self.address.rsplit(":", 1)[0]
        return host.strip("[]")

    def is_loopback(self) -> bool:
        """True for ipc, inproc and tcp endpoints bound to loopback addresses only."""
        if self.transport in ("ipc", "inproc"):
            return True
        host = self.host
        if host is None:
            return False
        if host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(
            ipaddress.ip_address(info[4][0]).is_loopback for info in infos
        )


def parse(url: str) -> Endpoint:
    transport, sep, address = url.partition("://")
    if not sep or transport not in ("ipc", "tcp", "inproc") or not address:
        raise ValueError(f"unsupported endpoint {url!r}: use ipc://PATH or tcp://HOST:PORT")
    if transport == "ipc" and not address.startswith("/"):
        raise ValueError(f"ipc endpoint {url!r} must name an absolute path")
    if transport == "tcp" and ":" not in address:
        raise ValueError(f"tcp endpoint {url!r} must name a port")
    return Endpoint(url, transport, address)


class InsecureEndpoint(ValueError):
    """A tcp endpoint that would be served without CURVE."""


def check_security(endpoint: Endpoint, *, curve: bool, insecure_tcp: bool) -> bool:
    """Refuse a tcp endpoint without CURVE; True if it is served in plain text by choice.

    Any local user can connect to a tcp endpoint, loopback included, and the agent runs as
    root: so every tcp endpoint needs CURVE, unless the operator explicitly allows plain
    text (``insecure_tcp``), and even then only on loopback. ipc endpoints are protected by
    file modes instead (see :func:`prepare_ipc`).
    """
    if endpoint.transport != "tcp" or curve:
        return False
    if not insecure_tcp:
        raise InsecureEndpoint(
            f"refusing to serve {endpoint.url} without CURVE: any local user can connect to "
            "a tcp endpoint, loopback included. Configure [curve] keys, or use an ipc:// "
            "endpoint, or (loopback only) set this endpoint's insecure_tcp = true"
        )
    if not endpoint.is_loopback():
        raise InsecureEndpoint(
            f"refusing to serve {endpoint.url} without CURVE: insecure_tcp allows loopback "
            "addresses only"
        )
    return True


def prepare_ipc(endpoint: Endpoint) -> None:
    """Create the ipc socket's directory with mode 0750 (and remove a stale socket)."""
    path = endpoint.ipc_path
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=IPC_DIR_MODE)
    os.chmod(path.parent, IPC_DIR_MODE)
    if path.is_socket():
        if _listening(path):
            raise OSError(errno.EADDRINUSE, f"another process is serving {endpoint.url}")
        path.unlink()  # stale: left by a process that died


def _listening(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def secure_ipc(endpoint: Endpoint) -> None:
    """After bind: the socket file gets mode 0660."""
    path = endpoint.ipc_path
    if path is not None and path.exists():
        os.chmod(path, IPC_SOCKET_MODE)
