"""vdsmd as a real process: tcp endpoints need CURVE, and CURVE keys change while it runs.

Every endpoint here is on loopback: no packet leaves the machine.
"""

from __future__ import annotations

import re
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from messaging.client import CallTimeout, Client, ClientError, Subscriber
from messaging.curve import ClientCurve, generate_keys
from tests.harness import Vdsmd, running_vdsmd, wait_for

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tcp_daemon(workdir: Path, config: str) -> Vdsmd:
    daemon = Vdsmd(workdir, config=config)
    daemon.api = f"tcp://127.0.0.1:{_free_port()}"
    daemon.events = f"tcp://127.0.0.1:{_free_port()}"
    return daemon


def test_loopback_tcp_without_curve_is_refused_at_start(tmp_path: Path) -> None:
    for which in ("api", "events"):
        daemon = Vdsmd(tmp_path / which)
        url = f"tcp://127.0.0.1:{_free_port()}"
        setattr(daemon, which, url)
        try:
            daemon.start_process()
            assert daemon.proc is not None
            assert daemon.proc.wait(30) == 2
            assert f"[{which}] endpoint: refusing to serve {url} without CURVE" in _log(daemon)
        finally:
            daemon.kill()


def test_non_loopback_endpoint_without_curve_is_refused(tmp_path: Path) -> None:
    for config in ("", "[api]\ninsecure_tcp = true\n"):
        daemon = Vdsmd(tmp_path / f"d{len(config)}", config=config)
        daemon.api = "tcp://0.0.0.0:54321"
        with pytest.raises(RuntimeError, match="without CURVE"):
            daemon.start(timeout=20)
        daemon.kill()


def test_insecure_loopback_tcp_starts_and_warns_at_every_start(tmp_path: Path) -> None:
    config = "[api]\ninsecure_tcp = true\n[events]\ninsecure_tcp = true\n"
    daemon = _tcp_daemon(tmp_path / "d", config)
    for start in (1, 2):
        try:
            daemon.start()  # pings over plain tcp
            assert daemon.call("Host.ping") is True
        finally:
            assert daemon.stop(timeout=30) == 0
        log = _log(daemon)
        for url in (daemon.api, daemon.events):
            lines = [line for line in log.splitlines() if "INSECURE" in line and url in line]
            assert len(lines) == start, lines
            assert all(" WARNING " in line for line in lines)


@dataclass
class Keys:
    authorized: Path
    server_public: Path
    server_secret: Path
    secrets: dict[str, Path]
    publics: dict[str, Path]

    def curve(self, name: str) -> ClientCurve:
        return ClientCurve(self.secrets[name], self.server_public)

    def z85(self, name: str) -> str:
        return self.publics[name].read_text().split('"')[1]

    def config(self, extra: str = "") -> str:
        return (f'[curve]\nserver_secret = "{self.server_secret}"\n'
                f'authorized_keys = "{self.authorized}"\n{extra}'
                "[debug]\nfault_injection = true\n"
                "[supervision]\nmax_restarts = 1000\nbackoff_initial = 0.01\n")


def _keys(tmp_path: Path) -> Keys:
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    server_public, server_secret = generate_keys(tmp_path / "keys", "server")
    secrets, publics = {}, {}
    for name in ("alice", "bob", "stranger"):
        publics[name], secrets[name] = generate_keys(tmp_path / name, name)
    for name in ("alice", "bob"):
        (authorized / f"{name}.key").write_bytes(publics[name].read_bytes())
    return Keys(authorized, server_public, server_secret, secrets, publics)


def _start_curve_daemon(daemon: Vdsmd, keys: Keys) -> None:
    """Vdsmd.start pings without keys: start by hand and ping with them."""
    daemon.start_process()
    wait_for(lambda: _curve_ping(daemon, keys.curve("alice")), 30, what="CURVE ping")


def _curve_ping(daemon: Vdsmd, curve: ClientCurve) -> bool:
    assert daemon.proc is not None
    if daemon.proc.poll() is not None:
        raise RuntimeError(f"vdsmd exited with {daemon.proc.returncode}:\n{_log(daemon)}")
    try:
        with Client(daemon.api, timeout=1, curve=curve) as c:
            return bool(c.call("Host.ping"))
    except CallTimeout:
        return False


def test_curve_endpoints_admit_only_authorised_keys(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    daemon = _tcp_daemon(tmp_path / "d", keys.config())
    try:
        _start_curve_daemon(daemon, keys)
        with Client(daemon.api, timeout=2) as c, pytest.raises(CallTimeout):
            c.call("Host.ping")
        # which end notices the mismatch first is a race: either line may come
        wait_for(lambda: re.search(rf"(without CURVE .*|during the handshake) on the API "
                                   rf"endpoint {re.escape(daemon.api)}", _log(daemon)), 10,
                 what="the plain-text client's refusal in the log")
        with Client(daemon.api, timeout=2, curve=keys.curve("stranger")) as c, \
                pytest.raises(CallTimeout):
            c.call("Host.ping")
        with Subscriber(daemon.events, ["|actors|"], curve=keys.curve("bob")) as sub:
            _crash_until_received(daemon, keys, [sub], "first")
        log = _log(daemon)
        assert f"key {keys.z85('stranger')} is not authorised" in log
        assert "127.0.0.1" in log
    finally:
        daemon.kill()


def test_a_removed_key_is_cut_off_on_sighup(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    daemon = _tcp_daemon(tmp_path / "d", keys.config("reload_interval = 0.0\n"))
    try:
        _start_curve_daemon(daemon, keys)
        with Client(daemon.api, timeout=10, curve=keys.curve("alice")) as alice, \
                Client(daemon.api, timeout=10, curve=keys.curve("bob")) as bob, \
                Subscriber(daemon.events, ["|actors|"], curve=keys.curve("alice")) as alice_sub, \
                Subscriber(daemon.events, ["|actors|"], curve=keys.curve("bob")) as bob_sub:
            assert alice.call("Host.ping") is True
            _crash_until_received(daemon, keys, [alice_sub, bob_sub], "before")
            (keys.authorized / "alice.key").unlink()
            assert alice.call("Host.ping") is True  # no reload without SIGHUP here
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: _refused(alice), 20, what="alice refused on her connection")
            assert bob.call("Host.ping") is True
            wait_for(lambda: "dropped every event subscriber" in _log(daemon), 20,
                     what="the event subscribers dropped")
            _crash_until_received(daemon, keys, [bob_sub], "after")
            while (event := alice_sub.receive(0)) is not None:
                assert "after" not in event[1].get("reason", ""), "a removed key got events"
        with Client(daemon.api, timeout=2, curve=keys.curve("alice")) as again, \
                pytest.raises(CallTimeout):
            again.call("Host.ping")
        assert "SIGHUP: reloading the authorised client keys" in _log(daemon)
        assert f"client key {keys.z85('alice')} is no longer authorised" in _log(daemon)
        assert daemon.stop(timeout=30) == 0
    finally:
        daemon.kill()


def test_the_keys_directory_is_watched(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    daemon = _tcp_daemon(tmp_path / "d", keys.config("reload_interval = 0.2\n"))
    try:
        _start_curve_daemon(daemon, keys)
        with Client(daemon.api, timeout=10, curve=keys.curve("bob")) as bob:
            assert bob.call("Host.ping") is True
            (keys.authorized / "bob.key").unlink()
            wait_for(lambda: _refused(bob), 20, what="bob refused without a signal")
        assert "the authorised keys directory changed" in _log(daemon)
    finally:
        daemon.kill()


def test_sighup_without_curve_keeps_the_daemon_running(tmp_path: Path) -> None:
    with running_vdsmd(tmp_path / "d") as daemon:
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: no [curve] keys to reload" in _log(daemon), 20,
                 what="the SIGHUP to be handled")
        assert daemon.proc.poll() is None
        assert daemon.call("Host.ping") is True


def _refused(client: Client) -> bool:
    try:
        client.call("Host.ping")
    except ClientError as e:
        assert e.code == 105, e
        assert "not authorised" in e.message
        return True
    return False


def _crash_until_received(daemon: Vdsmd, keys: Keys, subs: list[Subscriber],
                          tag: str) -> None:
    """Crash /host/stats (fault injection) until every sub got a failure tagged ``tag``.

    PUB drops what it sends before a subscriber is connected: so crash again until seen.
    """
    waiting = list(subs)
    with Client(daemon.api, timeout=10, curve=keys.curve("bob")) as c:
        def all_received() -> bool:
            if _state(c, "/host/stats") == "running":
                c.call("Actors.crash", {"path": "/host/stats", "reason": tag})
            for sub in list(waiting):
                event = sub.receive(0.2)
                while event is not None:
                    if tag in str(event[1].get("reason", "")):
                        waiting.remove(sub)
                        break
                    event = sub.receive(0)
            return not waiting

        wait_for(all_received, 60, interval=0.0, what=f"events tagged {tag}")


def _state(client: Client, path: str) -> str | None:
    for actor in client.call("Actors.list"):
        if actor["path"] == path:
            return str(actor["state"])
    return None


def _log(daemon: Vdsmd) -> str:
    """The whole log (``Vdsmd.log`` keeps the tail only; DEBUG lines are many)."""
    try:
        return daemon.log_path.read_text(errors="replace")
    except OSError:
        return ""
