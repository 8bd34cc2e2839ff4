from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors import config

pytestmark = pytest.mark.timeout(30)


def test_defaults_follow_protocol_md() -> None:
    cfg = config.Config()
    assert cfg.api_endpoint == "ipc:///run/vdsm/api.sock"
    assert cfg.events_endpoint == "ipc:///run/vdsm/events.sock"
    assert cfg.daemon.state_dir == Path("/var/lib/vdsm")
    assert cfg.libvirt.uri == "qemu:///system"


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "v.toml"
    path.write_text('[api]\nendpoint = "tcp://127.0.0.1:4444"\nworkers = 4\n'
                    '[storage]\nmonitor_interval = 1\n[daemon]\nstate_dir = "/tmp/s"\n')
    cfg = config.load(path)
    assert cfg.api_endpoint == "tcp://127.0.0.1:4444"
    assert cfg.api.workers == 4
    assert cfg.storage.monitor_interval == 1.0
    assert cfg.daemon.state_dir == Path("/tmp/s")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nope]\na = 1\n", "unknown section"),
        ("[api]\nbogus = 1\n", "no setting 'bogus'"),
        ("[api]\nworkers = 'many'\n", "expected an integer"),
        ("[debug]\nfault_injection = 1\n", "true or false"),
        ("not toml [", "not valid TOML"),
        ("[mailbox]\nidle_poll_interval = 0\n", "idle_poll_interval must be within"),
        ("[mailbox]\nidle_poll_interval = 11\n", "idle_poll_interval must be within"),
        ("[spm]\nio_timeout = 0\n", r"\[spm\] io_timeout must be positive"),
        ("[spm]\nlease_time = -3\n", r"\[spm\] lease_time must be positive"),
        ("[spm]\nlease_time = 10\n", "lease_time must exceed renew_interval"),
        ("[spm]\nheartbeat_interval = 5\n", "agent_timeout must be more than two"),
        ("[spm]\nmax_hosts = 0\n", "max_hosts must be within"),
        ("[spm]\nwriter_workers = 0\n", "writer_workers must be at least 1"),
        ("[spm]\nauto_contend = 'yes'\n", "true or false"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "v.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "absent.toml")


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "v.toml"
    path.write_text('[api]\nendpoint = "ipc:///a"\n')
    cfg = config.with_overrides(config.load(path), api={"endpoint": "ipc:///b", "workers": None})
    assert cfg.api_endpoint == "ipc:///b"
    assert cfg.api.workers == 16


def test_the_shipped_example_holds_the_defaults() -> None:
    example = Path(__file__).resolve().parents[2] / "contrib" / "vdsmd.toml"
    assert config.load(example) == config.Config()


def test_the_shipped_example_documents_every_setting_with_its_default() -> None:
    import dataclasses
    import tomllib

    example = Path(__file__).resolve().parents[2] / "contrib" / "vdsmd.toml"
    defaults = config.Config()
    documented: dict[str, dict[str, object]] = {}
    section = ""
    for line in example.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            documented[section] = {}
        elif line.startswith("# ") and " = " in line and section:
            text = line[2:].split("  #", 1)[0].strip()
            documented[section].update(tomllib.loads(text))
    for field in dataclasses.fields(defaults):
        if field.name == "given":
            continue  # which settings were given: not a setting
        values = getattr(defaults, field.name)
        if not dataclasses.is_dataclass(values):  # [peers]: named tables, none by default
            assert field.name in documented, f"[{field.name}] is not in contrib/vdsmd.toml"
            continue
        for setting in dataclasses.fields(values):
            assert setting.name in documented.get(field.name, {}), \
                f"[{field.name}] {setting.name} is not in contrib/vdsmd.toml"
            shown = documented[field.name][setting.name]
            actual = getattr(values, setting.name)
            if isinstance(actual, tuple):
                actual = [str(item) for item in actual]  # a TOML list
            assert str(shown) == str(actual) or shown == actual, \
                f"[{field.name}] {setting.name}: example says {shown!r}, default is {actual!r}"


def test_peers_are_named_tables_with_an_endpoint_and_a_key() -> None:
    import tomllib

    text = """
[curve]
server_secret = "/k/me.key_secret"
authorized_keys = "/k/authorized"
[peers.hostb]
endpoint = "tcp://192.0.2.12:54321"
public_key = "/k/hostb.key"
[peers.hostc]
endpoint = "tcp://[2001:db8::3]:54321"
public_key = "/k/hostc.key"
"""
    cfg = config.from_mapping(tomllib.loads(text))
    config.check(cfg)
    assert cfg.peers["hostb"] == config.PeerConfig("tcp://192.0.2.12:54321",
                                                   Path("/k/hostb.key"))
    assert cfg.peers["hostb"].host == "192.0.2.12" and cfg.peers["hostc"].host == "[2001:db8::3]"


@pytest.mark.parametrize(("text", "error"), [
    ('[peers.b]\nendpoint = "tcp://h:1"\n', "needs public_key"),
    ('[peers.b]\nendpoint = "ipc:///x"\npublic_key = "/k"\n', "must be tcp"),
    ('[peers.b]\nendpoint = "tcp://h"\npublic_key = "/k"\n', "must name a port"),
    ('[peers.b]\nendpoint = "tcp://h:1"\npublic_key = "k"\n', "not absolute"),
    ('[peers.b]\nendpoint = "tcp://h:1"\npublic_key = "/k"\nx = 1\n', "no setting 'x'"),
    ('[peers."a b"]\nendpoint = "tcp://h:1"\npublic_key = "/k"\n', "a peer's name"),
    ('[peers]\nb = 1\n', "must be a table"),
    ('[migration]\nmax_outgoing = 0\n', "at least 1"),
    ('[migration]\nlibvirt_uri = "qemu+tls://{dst}/system"\n', "only {host}"),
    ('[migration]\nconnect_timeout = 0\n', "must be positive"),
])
def test_bad_peers_and_migration_settings_are_refused(text: str, error: str) -> None:
    import tomllib

    with pytest.raises(config.ConfigError, match=re.escape(error)):
        config.from_mapping(tomllib.loads(text))


def test_peers_need_this_hosts_own_key() -> None:
    import tomllib

    cfg = config.from_mapping(tomllib.loads(
        '[peers.b]\nendpoint = "tcp://h:1"\npublic_key = "/k"\n'))
    with pytest.raises(config.ConfigError, match="need \\[curve\\] server_secret"):
        config.check(cfg)
