"""This agent's identity: its host UUID and its CURVE key pair, made once, kept safe.

The host UUID is ``<state_dir>/host-uuid`` (:func:`actors.hostuuid.host_uuid`, the
name the agent's host-id records carry). The key pair is the API's CURVE server key:
``[curve] server_secret`` when the configuration names one, else ``host.key_secret`` in
:func:`default_key_dir`, with the public half next to it (``host.key``) and the authorised
client keys in ``[curve] authorized_keys`` (else ``<key dir>/authorized``).

Made once: an existing key pair is never replaced (registration handed its public key to an
engine); a secret file that holds no valid key is reported, not overwritten. Safe modes:
the secret file 0600, the key directories 0700, everything owned by this user (root): a key
directory others can write to would let them add a client key.
"""

from __future__ import annotations

import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from actors.config import Config
from actors.hostuuid import host_uuid
from actors.storage import fileutil

DIR_MODE = 0o700
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
KEY_NAME = "host"


def default_key_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/etc/vdsm/keys")
    return Path.home() / ".config" / "vdsm" / "keys"


@dataclass(frozen=True)
class Identity:
    state_dir: Path
    secret_file: Path
    public_file: Path
    authorized_dir: Path

    @property
    def uuid_file(self) -> Path:
        return self.state_dir / "host-uuid"

    @classmethod
    def of(cls, config: Config) -> Identity:
        curve = config.curve
        if curve.server_secret:
            secret = Path(curve.server_secret)
            if not secret.name.endswith(".key_secret"):
                raise ValueError(f"[curve] server_secret {secret} must end in .key_secret "
                                 "(its public half is the .key file next to it)")
            public = secret.with_name(secret.name.removesuffix("_secret"))
        else:
            secret = default_key_dir() / f"{KEY_NAME}.key_secret"
            public = default_key_dir() / f"{KEY_NAME}.key"
        authorized = (Path(curve.authorized_keys) if curve.authorized_keys
                      else default_key_dir() / "authorized")
        return cls(config.daemon.state_dir, secret, public, authorized)


def certificate(public: bytes, secret: bytes | None) -> bytes:
    """A key file as ZeroMQ's tools write them (zmq.auth.load_certificate reads it)."""
    kind = "Secret" if secret else "Public"
    lines = [f"#   ZeroMQ CURVE {kind} Certificate (vdsm-tool configure)",
             "metadata", "curve", f'    public-key = "{public.decode("ascii")}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return ("\n".join(lines) + "\n").encode()


def read_pair(secret_file: Path) -> tuple[bytes, bytes]:
    """The key pair in ``secret_file``; ValueError unless it is a matching valid pair."""
    public, secret = zmq.auth.load_certificate(secret_file)
    if secret is None or len(secret) != 40 or len(public) != 40:
        raise ValueError(f"{secret_file} holds no CURVE key pair")
    if zmq.curve_public(secret) != public:
        raise ValueError(f"{secret_file}: its public key is not its secret key's")
    return public, secret


def public_key(identity: Identity) -> str:
    return read_pair(identity.secret_file)[0].decode("ascii")


def _unsafe(path: Path, *, directory: bool) -> str:
    """What is wrong with the ownership or mode of ``path`` ("" when nothing)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if directory != stat.S_ISDIR(st.st_mode):
        return f"{path} is not a {'directory' if directory else 'regular file'}"
    if st.st_uid != os.geteuid():
        return f"{path} is owned by uid {st.st_uid}, not {os.geteuid()}"
    allowed = DIR_MODE if directory else SECRET_MODE
    if stat.S_IMODE(st.st_mode) & ~allowed:
        return f"{path} has mode {stat.S_IMODE(st.st_mode):04o} (at most {allowed:04o})"
    return ""


def problems(identity: Identity) -> list[str]:
    """What ``configure`` would make or fix ([] when the identity is complete and safe)."""
    found: list[str] = []
    try:
        uuid.UUID(identity.uuid_file.read_text().strip())
    except (OSError, ValueError):
        found.append(f"no host UUID in {identity.uuid_file}")
    for directory in dict.fromkeys((identity.secret_file.parent, identity.authorized_dir)):
        if not directory.exists():
            found.append(f"no directory {directory}")
        elif why := _unsafe(directory, directory=True):
            found.append(why)
    if not identity.secret_file.exists():
        found.append(f"no CURVE key pair in {identity.secret_file}")
        return found
    if why := _unsafe(identity.secret_file, directory=False):
        found.append(why)
    try:
        public, _ = read_pair(identity.secret_file)
    except (OSError, ValueError) as e:
        found.append(f"{e} (move it away: vdsm-tool never replaces a key)")
        return found
    try:
        ok = zmq.auth.load_certificate(identity.public_file)[0] == public
    except (OSError, ValueError):
        ok = False
    if not ok:
        found.append(f"{identity.public_file} does not hold the public key of "
                     f"{identity.secret_file}")
    return found


def ensure(identity: Identity) -> list[str]:
    """Make what is missing and fix modes; returns what it changed. Never replaces a key."""
    changed: list[str] = []
    uuid_before = identity.uuid_file.exists()
    value = host_uuid(identity.state_dir)
    if not uuid_before:
        changed.append(f"host UUID {value} in {identity.uuid_file}")
    for directory in (identity.secret_file.parent, identity.authorized_dir):
        if not directory.exists():
            directory.mkdir(parents=True, mode=DIR_MODE)
            changed.append(f"made {directory}")
        st = directory.lstat()
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and \
                stat.S_IMODE(st.st_mode) & ~DIR_MODE:
            os.chmod(directory, DIR_MODE)
            changed.append(f"mode of {directory} set to {DIR_MODE:04o}")
    if not identity.secret_file.exists():
        public, secret = zmq.curve_keypair()
        _create_once(identity.secret_file, certificate(public, secret))
        changed.append(f"a CURVE key pair in {identity.secret_file}")
    st = identity.secret_file.lstat()
    if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and \
            stat.S_IMODE(st.st_mode) & ~SECRET_MODE:
        os.chmod(identity.secret_file, SECRET_MODE)
        changed.append(f"mode of {identity.secret_file} set to {SECRET_MODE:04o}")
    public, _ = read_pair(identity.secret_file)  # a bad key: ValueError, left for the user
    try:
        current = zmq.auth.load_certificate(identity.public_file)[0]
    except (OSError, ValueError):
        current = b""
    if current != public:
        fileutil.write_atomic(identity.public_file, certificate(public, None),
                              mode=PUBLIC_MODE)
        changed.append(f"the public key in {identity.public_file}")
    return changed


def _create_once(path: Path, data: bytes) -> None:
    """Write ``path`` (mode 0600) unless it exists: two concurrent runs make one key."""
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, SECRET_MODE)
    try:
        fileutil.write_synced(fd, data)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another run made it meanwhile: its key stays
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    fileutil.fsync_dir(path.parent)
