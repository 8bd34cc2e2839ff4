"""CURVE encryption and ZAP authentication for tcp endpoints (and ipc ones, if configured).

A server key pair (zmq certificate files, as ``zmq.auth.create_certificates`` writes them) and
a directory of authorised client public keys (``*.key`` files). pyzmq's ThreadAuthenticator
answers ZAP requests, asking :class:`AuthorizedKeys` about each CURVE handshake; an unknown
client is refused and logged (rate-limited, with its address and key).

The keys are re-read by :meth:`AuthorizedKeys.reload` (the daemon calls it on SIGHUP and when
the directory changes). ZAP only runs at a connection's handshake, so a removed key would keep
an open connection working; the API server therefore checks every request's ZAP user id (the
client's key) against the current keys, and the event publisher drops all its connections
when a key is removed, so that every subscriber goes through ZAP again.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from messaging.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

KEY_LENGTH = 40  # a 32-byte CURVE key in z85


_Z85 = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{" + str(KEY_LENGTH) + "}")


def is_key(text: str) -> bool:
    """True for a CURVE public key in z85 (40 characters of z85's alphabet: pyzmq's decoder
    raises KeyError, not ValueError, on a character outside it)."""
    return bool(_Z85.fullmatch(text)) and len(z85.decode(text)) == 32


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


@dataclass(frozen=True)
class KeyChange:
    """What a reload changed: the z85 public keys that came and went."""

    added: frozenset[str]
    removed: frozenset[str]


class AuthorizedKeys:
    """The authorised clients' public keys, read from a directory of ``*.key`` files.

    :meth:`allows` is called from the ZAP thread and the API socket thread; :meth:`reload`
    and :meth:`changed` from the daemon's main thread. A missing or unreadable directory
    authorises nobody (fail closed).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._keys: frozenset[str] = frozenset()
        self._signature: object = None

    def allows(self, key: str | bytes | None) -> bool:
        if not key:
            return False
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        with self._lock:
            return key in self._keys

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def changed(self) -> bool:
        """True if the directory looks different from what the last reload read (cheap)."""
        return _signature(self.directory) != self._signature

    def reload(self) -> KeyChange:
        """Re-read the directory; from now on only its keys are let in."""
        signature = _signature(self.directory)  # before reading: a change meanwhile is seen
        keys = _read_keys(self.directory)
        with self._lock:
            before, self._keys, self._signature = self._keys, keys, signature
        change = KeyChange(added=keys - before, removed=before - keys)
        log.info("authorised client keys in %s: %d (%d added, %d removed)", self.directory,
                 len(keys), len(change.added), len(change.removed))
        for key in sorted(change.removed):
            log.warning("client key %s is no longer authorised", key)
        return change


def _signature(directory: Path) -> object:
    """What the key files look like (names, inodes, sizes, times), to notice changes."""
    try:
        with os.scandir(directory) as entries:
            files = [(e.name, e.stat()) for e in entries if e.name.endswith(".key")]
    except OSError as e:
        return ("unreadable", e.errno)
    return sorted((name, st.st_ino, st.st_size, st.st_mtime_ns) for name, st in files)


def _read_keys(directory: Path) -> frozenset[str]:
    if not directory.is_dir():
        log.error("authorised keys directory %s is missing: no client is authorised",
                  directory)
        return frozenset()
    keys = set()
    try:
        files = sorted(directory.glob("*.key"))
    except OSError as e:
        log.error("cannot read %s: %s: no client is authorised", directory, e)
        return frozenset()
    for path in files:
        try:
            public, _ = zmq.auth.load_certificate(path)
            text = public.decode("ascii")
            if not is_key(text):
                raise ValueError(f"not a {KEY_LENGTH}-character z85 key")
        except (OSError, ValueError) as e:
            log.warning("ignoring %s: not a public key file (%s)", path, e)
            continue
        keys.add(text)
    return frozenset(keys)


class _ZapLog:
    """pyzmq's authenticator logs under ``vdsm.zap``; refusals are logged by the callback."""

    def __init__(self) -> None:
        self._log = logging.getLogger("vdsm.zap")

    def debug(self, msg: str, *args: object) -> None:
        self._log.debug(msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self._log.info(msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self._log.warning(msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self._log.error(msg, *args)

    def exception(self, msg: str, *args: object) -> None:
        self._log.exception(msg, *args)


class Authenticator(ThreadAuthenticator):
    """ZAP on its own thread: a CURVE client is let in when :attr:`keys` allows its key."""

    def __init__(self, context: zmq.Context[Any], keys: AuthorizedKeys) -> None:
        super().__init__(context, log=_ZapLog())
        self.keys = keys
        self._peer = "?"
        self._refused = RateLimitedLog(log, "refused CURVE clients")

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # Runs on the ZAP thread, one request at a time: remember who asks for the callback.
        self._peer = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials-provider hook: ``key`` is the client's public key in z85."""
        if self.keys.allows(key):
            return True
        self._refused("refused a CURVE client from %s: key %s is not authorised",
                      self._peer, key.decode("ascii", "replace"))
        return False


def start_authenticator(context: zmq.Context[Any], config: CurveConfig) -> Authenticator:
    """Start ZAP for ``context``: only keys in ``authorized_keys_dir`` are let in."""
    if not config.authorized_keys_dir.is_dir():
        raise ValueError(f"authorized keys directory {config.authorized_keys_dir} is missing")
    keys = AuthorizedKeys(config.authorized_keys_dir)
    keys.reload()
    auth = Authenticator(context, keys)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=auth)
    return auth
