"""vdsm-tool configure / is-configured: the identity (real files, real modes) and the libvirt
preparation (qemu.conf edits on a copy; the machine's own state read, never changed here:
tools/setup-host runs the real configure, and tests/tools/test_setup_host.py checks that a
second run changes nothing).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import zmq.auth

from actors.config import from_mapping
from actors.tool import identity, libvirtconf
from actors.tool.identity import Identity
from tests.harness import TOP

pytestmark = pytest.mark.timeout(60)
TOOL = TOP / ".venv" / "bin" / "vdsm-tool"


def ident(tmp: Path) -> Identity:
    config = from_mapping({"daemon": {"state_dir": str(tmp / "state")},
                           "curve": {"server_secret": str(tmp / "keys" / "host.key_secret"),
                                     "authorized_keys": str(tmp / "keys" / "authorized")}})
    return Identity.of(config)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_configure_makes_the_identity_once_with_safe_modes(tmp_path: Path) -> None:
    ids = ident(tmp_path)
    assert len(identity.problems(ids)) == 4
    changed = identity.ensure(ids)
    assert any("CURVE key pair" in c for c in changed)
    assert identity.problems(ids) == []
    assert mode(ids.secret_file) == 0o600 and mode(ids.secret_file.parent) == 0o700
    assert mode(ids.authorized_dir) == 0o700 and mode(ids.public_file) == 0o644
    pair = identity.read_pair(ids.secret_file)
    uuid_text = ids.uuid_file.read_text()
    assert identity.ensure(ids) == []  # idempotent: the same key, the same UUID
    assert identity.read_pair(ids.secret_file) == pair and ids.uuid_file.read_text() == (
        uuid_text)
    assert zmq.auth.load_certificate(ids.public_file) == (pair[0], None)


def test_unsafe_modes_are_reported_and_fixed_and_a_lost_public_key_remade(
        tmp_path: Path) -> None:
    ids = ident(tmp_path)
    identity.ensure(ids)
    pair = identity.read_pair(ids.secret_file)
    os.chmod(ids.secret_file, 0o644)
    os.chmod(ids.authorized_dir, 0o777)  # noqa: S103 (anyone could add a client key)
    ids.public_file.unlink()
    found = identity.problems(ids)
    assert any("0644" in p for p in found) and any("0777" in p for p in found)
    assert any("does not hold the public key" in p for p in found)
    identity.ensure(ids)
    assert identity.problems(ids) == []
    assert identity.read_pair(ids.secret_file) == pair
    assert mode(ids.secret_file) == 0o600 and mode(ids.authorized_dir) == 0o700


def test_a_broken_or_foreign_key_is_reported_never_replaced(tmp_path: Path) -> None:
    ids = ident(tmp_path)
    identity.ensure(ids)
    ids.secret_file.write_text('public-key = "x"\nsecret-key = "y"\n')
    assert any("never replaces a key" in p for p in identity.problems(ids))
    with pytest.raises(ValueError, match="holds no CURVE key pair"):
        identity.ensure(ids)
    assert ids.secret_file.read_text().startswith('public-key = "x"')
    os.chown(ids.authorized_dir, 1, 1)
    assert any("owned by uid 1" in p for p in identity.problems(ids))
    ids.authorized_dir.rmdir()
    ids.authorized_dir.symlink_to(tmp_path)
    assert any("symbolic link" in p for p in identity.problems(ids))


def test_the_cli_says_what_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "vdsmd.toml"
    config.write_text(f'[curve]\nserver_secret = "{tmp_path}/k/host.key_secret"\n'
                      f'authorized_keys = "{tmp_path}/k/authorized"\n')
    base = [str(TOOL), "--config", str(config), "--state-dir", str(tmp_path / "s")]

    def tool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60,
                              check=False)

    missing = tool("is-configured", "--module", "identity")
    assert missing.returncode == 1 and "missing: no CURVE key pair" in missing.stderr
    made = tool("configure", "--module", "identity")
    assert made.returncode == 0 and "configured: a CURVE key pair" in made.stdout
    again = tool("configure", "--module", "identity")
    assert again.returncode == 0 and again.stdout == "nothing to configure\n"
    assert tool("is-configured", "--module", "identity").returncode == 0
    config.write_text('[curve]\nserver_secret = "/x/host.pem"\nauthorized_keys = "/x/a"\n')
    assert "must end in .key_secret" in tool("is-configured").stderr


def test_qemu_conf_edits_are_idempotent_and_keep_the_rest() -> None:
    text = "# libvirt\n#user = \"qemu\"\nvnc_listen = \"0.0.0.0\"\ngroup=\"kvm\"\n"
    for key, value in libvirtconf.QEMU_SETTINGS:
        text = libvirtconf.set_setting(text, key, value)
    assert text.splitlines() == ["# libvirt", 'user = "root"', 'vnc_listen = "0.0.0.0"',
                                 'group = "root"', 'security_driver = "none"',
                                 "namespaces = [ ]"]
    again = text
    for key, value in libvirtconf.QEMU_SETTINGS:
        again = libvirtconf.set_setting(again, key, value)
    assert again == text
    assert libvirtconf.set_setting("a = 1", "b", "2") == "a = 1\nb = 2\n"


def test_a_console_log_handler_other_than_virtlogd_is_reported_and_replaced(
        tmp_path: Path) -> None:
    """Guests' serial logs are capped by virtlogd only while qemu.conf keeps libvirt's
    default stdio_handler ("logd"); a default (commented) line is left alone."""
    default = '# stdio_handler = "logd"\n#stdio_handler = "file"\nuser = "root"\n'
    assert libvirtconf.log_handlers(default) == []
    assert libvirtconf.keep_log_handler(default) == default
    unsafe = '#stdio_handler = "logd"\nuser = "root"\n  stdio_handler="file"\n'
    assert libvirtconf.log_handlers(unsafe) == ['"file"']
    fixed = libvirtconf.keep_log_handler(unsafe)
    assert fixed.splitlines() == ['#stdio_handler = "logd"', 'user = "root"',
                                  'stdio_handler = "logd"']
    assert libvirtconf.keep_log_handler(fixed) == fixed
    conf = tmp_path / "qemu.conf"
    for text, reported in ((unsafe, True), (fixed, False), (default, False)):
        conf.write_text(text)
        found = libvirtconf.problems(libvirtconf.LibvirtSetup(qemu_conf=conf, dirs=()))
        assert any("stdio_handler" in p and "not be capped" in p for p in found) == reported


@pytest.mark.root
@pytest.mark.libvirt
def test_this_machine_is_configured_for_libvirt() -> None:
    """tools/setup-host ran vdsm-tool configure before the tests: nothing is missing."""
    assert libvirtconf.problems(libvirtconf.LibvirtSetup()) == []
    missing = libvirtconf.problems(libvirtconf.LibvirtSetup(
        qemu_conf=Path("/nonexistent/qemu.conf"), dirs=(Path("/nonexistent"),)))
    assert "no directory /nonexistent" in missing
    assert "/nonexistent/qemu.conf does not say user = \"root\"" in missing
