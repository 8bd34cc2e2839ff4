"""CURVE encryption and ZAP authentication for endpoints that leave the host.

A server key pair (zmq certificate files, as ``zmq.auth.create_certificates`` writes them) and
a directory of authorised client public keys. pyzmq's ThreadAuthenticator answers ZAP
requests; an unknown client is refused and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurveConfig:
    server_secret_file: Path
    authorized_keys_dir: Path


@dataclass(frozen=True)
class ClientCurve:
    """What a client needs: its own key pair and the server's public key."""

    secret_file: Path
    server_public_file: Path


def generate_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``name.key`` (public) and ``name.key_secret`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    return Path(public), Path(secret)


def apply_server(sock: zmq.Socket[bytes], config: CurveConfig) -> None:
    public, secret = zmq.auth.load_certificate(str(config.server_secret_file))
    if secret is None:
        raise ValueError(f"{config.server_secret_file} holds no secret key")
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


def apply_client(sock: zmq.Socket[bytes], curve: ClientCurve) -> None:
    public, secret = zmq.auth.load_certificate(str(curve.secret_file))
    if secret is None:
        raise ValueError(f"{curve.secret_file} holds no secret key")
    server_public, _ = zmq.auth.load_certificate(str(curve.server_public_file))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public




class _ZapLog:
    """The authenticator's logger: refusals are warnings, the rest stays at debug level."""

    def __init__(self) -> None:
        self._log = logging.getLogger("vdsm.zap")

    def debug(self, msg: str, *args: object) -> None:
        refused = msg.startswith("DENIED") or (
            msg.startswith("ZAP reply") and args and args[0] not in (b"200", "200")
        )
        self._log.log(logging.WARNING if refused else logging.DEBUG, msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self._log.info(msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self._log.warning(msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self._log.error(msg, *args)

    def exception(self, msg: str, *args: object) -> None:
        self._log.exception(msg, *args)


def start_authenticator(context: zmq.Context[zmq.Socket[bytes]],
                        config: CurveConfig) -> ThreadAuthenticator:
    """Start ZAP for ``context``: only keys in ``authorized_keys_dir`` are let in."""
    if not config.authorized_keys_dir.is_dir():
        raise ValueError(f"authorized keys directory {config.authorized_keys_dir} is missing")
    auth = ThreadAuthenticator(context, log=_ZapLog())
    auth.start()
    auth.configure_curve(domain="*", location=str(config.authorized_keys_dir))
    return auth
