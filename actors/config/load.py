"""Loading and checking: a TOML file onto :class:`Config` (an unknown table or key, or a
value of the wrong type, is an error naming it), the flags over it, what no single section
can check, and the derived run directory."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from actors.config.base import ConfigError, default_state_dir
from actors.config.migration import PEER_NAME, PeerConfig
from actors.config.root import Config
from messaging import endpoints


def _coerce(section: str, key: str, kind: Any, value: Any) -> Any:
    where = f"[{section}] {key}"
    if kind is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(kind)[0]
        return tuple(_coerce(section, key, item, v) for v in value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {kind}")


def _section(cls: type[Any], name: str, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            names = ", ".join(sorted(known))
            raise ConfigError(f"[{name}] has no setting {key!r} (known: {names})")
    values = {}
    for key, value in table.items():
        kind = hints[key]
        if isinstance(kind, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        values[key] = _coerce(name, key, kind, value)
    return cls(**values)


def from_mapping(data: dict[str, Any]) -> Config:
    hints = typing.get_type_hints(Config)
    known = {f.name for f in dataclasses.fields(Config)} - {"given"}
    sections: dict[str, Any] = {}
    given = set()
    for name, table in data.items():
        if name not in known:
            raise ConfigError(f"unknown section [{name}] (known: {', '.join(sorted(known))})")
        if name == "peers":
            sections[name] = _peers(table)
        else:
            sections[name] = _section(hints[name], name, table)
        given |= {f"{name}.{key}" for key in table}
    return Config(**sections, given=frozenset(given))


def _peers(table: Any) -> dict[str, PeerConfig]:
    """``[peers.<name>]`` tables: each one peer, with its endpoint and public key."""
    if not isinstance(table, dict):
        raise ConfigError("[peers] must be a table of [peers.<name>] tables")
    peers = {}
    for name, peer in table.items():
        if PEER_NAME.fullmatch(name) is None:
            raise ConfigError(f"[peers.{name}]: a peer's name is letters, digits, '_.-'")
        if not isinstance(peer, dict):
            raise ConfigError(f"[peers] {name} must be a table [peers.{name}]")
        missing = {"endpoint", "public_key"} - set(peer)
        if missing:
            raise ConfigError(f"[peers.{name}] needs {', '.join(sorted(missing))}")
        peers[name] = _section(PeerConfig, f"peers.{name}", peer)
    return peers


def load(path: Path | None) -> Config:
    if path is None:
        return Config()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return from_mapping(data)


def check(config: Config) -> None:
    """What no single section can check: CURVE keys in pairs, every tcp endpoint secured."""
    curve = config.curve
    if curve.enabled and not curve.authorized_keys:
        raise ConfigError("[curve] server_secret needs authorized_keys too")
    if curve.authorized_keys and not curve.enabled:
        raise ConfigError("[curve] authorized_keys needs server_secret too")
    if config.peers and not curve.enabled:
        raise ConfigError("[peers] need [curve] server_secret: this host's key pair is its "
                          "identity when it calls a peer's agent")
    for name, url, insecure in (
        ("api", config.api_endpoint, config.api.insecure_tcp),
        ("events", config.events_endpoint, config.events.insecure_tcp),
    ):
        try:
            endpoints.check_security(endpoints.parse(url), curve=curve.enabled,
                                     insecure_tcp=insecure)
        except ValueError as e:
            raise ConfigError(f"[{name}] endpoint: {e}") from None


def with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``config`` with some settings replaced (flags win over the file)."""
    changes: dict[str, Any] = {}
    given = set(config.given)
    for name, settings in sections.items():
        values = {k: v for k, v in settings.items() if v is not None}
        if values:
            changes[name] = dataclasses.replace(getattr(config, name), **values)
            given |= {f"{name}.{key}" for key in values}
    return dataclasses.replace(config, **changes, given=frozenset(given))


def derive_run_dir(config: Config) -> Config:
    """Give an agent with its own state directory its own run directory, unless one was set.

    Two agents never share a state directory (each locks its own), so an agent started with
    another ``--state-dir`` than the default and no ``--run-dir`` gets
    ``<default run dir>/agents/<name>-<hash of the state dir>``: its sockets, mounts,
    storage links and the records of prepared volumes are its own, and it does not collide
    with the default agent's ``/run/vdsm`` (nor take its lock). The default agent keeps the
    default run directory.
    """
    if "daemon.run_dir" in config.given:
        return config
    state = config.daemon.state_dir.absolute()
    if state == default_state_dir().absolute():
        return config
    return dataclasses.replace(
        config, daemon=dataclasses.replace(config.daemon, run_dir=agent_run_dir(state)))


def agent_run_dir(state_dir: Path) -> Path:
    """The run directory :func:`derive_run_dir` gives the agent of ``state_dir``."""
    state = state_dir.absolute()
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", state.name)[:24] or "state"
    return endpoints.default_run_dir() / "agents" / f"{name}-{digest}"
