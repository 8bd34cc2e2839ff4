"""vdsm-tool configure and register against a minimal engine on loopback (tests/engine.py,
a test double for the engine: real sockets, real CURVE), and vdsmd as a real process
serving its API on loopback tcp with the key pair configure made.

Every endpoint is on 127.0.0.1: no packet leaves the machine.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq.auth

from messaging.client import CallTimeout, Client, ClientError
from messaging.curve import ClientCurve, generate_keys
from tests.engine import Engine
from tests.harness import TOP, Vdsmd, wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.root]

TOOL = TOP / ".venv" / "bin" / "vdsm-tool"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Host:
    """One host's files: vdsmd's config naming the keys configure makes, and its state."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.keys = tmp / "keys"
        self.authorized = self.keys / "authorized"
        self.state = tmp / "vdsmd" / "state"  # what tests.harness.Vdsmd passes vdsmd
        self.api = f"tcp://127.0.0.1:{_free_port()}"
        self.config = (f'[curve]\nserver_secret = "{self.keys}/host.key_secret"\n'
                       f'authorized_keys = "{self.authorized}"\nreload_interval = 0.2\n')
        self.config_file = tmp / "vdsmd.toml"
        self.config_file.write_text(self.config)

    def tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(TOOL), "--config", str(self.config_file), "--state-dir",
                               str(self.state), *args], capture_output=True, text=True,
                              timeout=120, check=False)

    def register(self, engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
        return self.tool("register", "--engine", engine.endpoint, "--api", self.api,
                         "--engine-fingerprint", engine.fingerprint, "--timeout", "30", *args)

    @property
    def uuid(self) -> str:
        return (self.state / "host-uuid").read_text().strip()

    @property
    def public_key(self) -> str:
        return zmq.auth.load_certificate(self.keys / "host.key")[0].decode("ascii")

    def pair(self) -> tuple[bytes, bytes]:
        public, secret = zmq.auth.load_certificate(self.keys / "host.key_secret")
        assert secret is not None
        return public, secret

    def authorized_keys(self) -> set[str]:
        return {p.name for p in self.authorized.glob("*.key")}


@pytest.fixture
def host(tmp_path: Path) -> Host:
    made = Host(tmp_path)
    done = made.tool("configure", "--module", "identity")
    assert done.returncode == 0, done.stderr
    assert made.tool("is-configured", "--module", "identity").returncode == 0
    return made


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = Engine(tmp_path / "engine")
    try:
        yield made
    finally:
        made.close()


def _ping(api: str, curve: ClientCurve) -> bool:
    try:
        with Client(api, timeout=2, curve=curve) as c:
            return bool(c.call("Host.ping"))
    except (CallTimeout, ClientError):
        return False


def test_an_approved_host_is_driven_by_the_engine_over_curve(tmp_path: Path, host: Host,
                                                             engine: Engine) -> None:
    # an operator key, to know when vdsmd serves (and as "another authorised key")
    op_public, op_secret = generate_keys(tmp_path / "operator", "operator")
    (host.authorized / "operator.key").write_bytes(op_public.read_bytes())
    _, stranger_secret = generate_keys(tmp_path / "stranger", "stranger")
    daemon = Vdsmd(tmp_path / "vdsmd", config=host.config)
    daemon.api = host.api
    try:
        daemon.start_process()
        operator = ClientCurve(op_secret, host.keys / "host.key")
        wait_for(lambda: _ping(host.api, operator), 60, 0.2, "vdsmd to answer the operator")

        # before registration the engine's key is refused at the handshake
        unregistered = ClientCurve(engine.secret_file, host.keys / "host.key")
        assert not _ping(host.api, unregistered)
        wait_for(lambda: f"key {engine.key} is not authorised" in daemon.log(), 30, 0.2,
                 "vdsmd to refuse the engine's key")

        # not approved yet: pending (exit 3), nothing authorised
        pending = host.register(engine)
        assert pending.returncode == 3, pending.stderr
        assert "has not approved host" in pending.stderr
        assert host.authorized_keys() == {"operator.key"}
        assert engine.seen[-1].parsed["hostUUID"] == host.uuid

        engine.approve(host.uuid)
        done = host.register(engine)
        assert done.returncode == 0, done.stderr
        assert f"engine key {engine.fingerprint} (as expected)" in done.stdout
        assert len(host.authorized_keys()) == 2
        announced = engine.hosts[host.uuid]
        assert announced["publicKey"] == host.public_key == engine.seen[-1].user
        assert announced["apiEndpoint"] == host.api
        assert announced["caps"]["cpuCores"] >= 1 and announced["caps"]["memMiB"] > 0
        assert announced["hostname"]

        # the engine drives the agent with the key registration gave it (once vdsmd re-read
        # its keys: [curve] reload_interval)
        curve = engine.host_curve(host.uuid)
        wait_for(lambda: _ping(announced["apiEndpoint"], curve), 60, 0.2,
                 "the engine's key to be let in")
        with Client(announced["apiEndpoint"], timeout=60, curve=curve) as c:
            caps = c.call("Host.getCapabilities")
        # one name for the host: what it registered is what its capabilities say
        assert caps["hostUUID"] == host.uuid == announced["hostUUID"]
        # the other authorised key still works; a stranger's does not
        assert _ping(host.api, operator)
        assert not _ping(host.api, ClientCurve(stranger_secret, host.keys / "host.key"))
        # registering again changes nothing
        engine.approve(host.uuid)
        again = host.register(engine)
        assert again.returncode == 0, again.stderr
        assert len(host.authorized_keys()) == 2
    finally:
        daemon.kill()


def test_replayed_spoofed_and_refused_registrations_get_nothing(tmp_path: Path, host: Host,
                                                               engine: Engine) -> None:
    engine.approve(host.uuid)
    assert host.register(engine).returncode == 0
    first = engine.seen[-1]
    key_file = next(host.authorized.glob("engine-*.key"))
    key_file.unlink()

    # the engine side: the recorded frame again, over the host's own key: a used nonce
    replay = engine.send_raw(first.frame, host.pair())
    assert replay["type"] == "refused" and "replayed" in replay["reason"]
    # ... over another key (an attacker who recorded it): not the connection's key
    _, secret = generate_keys(tmp_path / "attacker", "attacker")
    pair = zmq.auth.load_certificate(secret)
    assert pair[1] is not None
    spoof = engine.send_raw(first.frame, (pair[0], pair[1]))
    assert spoof["type"] == "refused" and "not the key of this CURVE" in spoof["reason"]

    # the host side: an old approval answered again is not this request's: nothing written
    engine.canned = first.answer
    stale = host.register(engine)
    assert stale.returncode == 1 and "another nonce" in stale.stderr, stale.stderr
    assert not host.authorized_keys()
    engine.canned = None

    # an engine with another key than the expected one: refused before registering
    count = len(engine.seen)
    wrong = host.tool("register", "--engine", engine.endpoint, "--api", host.api,
                      "--engine-fingerprint", "SHA256:" + "0" * 64)
    assert wrong.returncode == 1 and "nothing was changed" in wrong.stderr
    assert len(engine.seen) == count and not host.authorized_keys()

    # refused by the operator: exit 4, nothing written
    engine.refuse(host.uuid)
    refused = host.register(engine)
    assert refused.returncode == 4 and "operator refused" in refused.stderr
    assert not host.authorized_keys()


def test_register_refuses_what_an_engine_cannot_use(tmp_path: Path, host: Host,
                                                    engine: Engine) -> None:
    for api in ("ipc:///run/x.sock", "tcp://0.0.0.0:4000"):
        done = host.tool("register", "--engine", engine.endpoint, "--api", api)
        assert done.returncode == 1 and "the engine cannot reach" in done.stderr, done.stderr
    done = host.register(engine, "--hostname", "bad_name;x")
    assert done.returncode == 1 and "is not a DNS name" in done.stderr
    # an unreachable engine: a bounded wait, a clear error
    dead = f"tcp://127.0.0.1:{_free_port()}"
    done = host.tool("register", "--engine", dead, "--api", host.api, "--timeout", "1")
    assert done.returncode == 1 and "did not answer within 1 s" in done.stderr
    # not configured (no key pair): says so and contacts nobody
    (host.keys / "host.key_secret").unlink()
    done = host.register(engine)
    assert done.returncode == 1 and "run vdsm-tool configure" in done.stderr
    assert not engine.seen
    assert not host.authorized_keys()


def test_register_waits_for_the_approval(host: Host, engine: Engine) -> None:
    """--wait: the host asks again (a new nonce each time) until the operator approves."""
    proc = subprocess.Popen(
        [str(TOOL), "--config", str(host.config_file), "--state-dir", str(host.state),
         "register", "--engine", engine.endpoint, "--api", host.api, "--engine-fingerprint",
         engine.fingerprint, "--wait", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(engine.seen) >= 2, 60, 0.1, "two pending registrations")
        assert not host.authorized_keys()
        engine.approve(host.uuid)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "pending: waiting for the engine's approval" in out
        nonces = [s.parsed["nonce"] for s in engine.seen]
        assert len(set(nonces)) == len(nonces) >= 3
        assert len(host.authorized_keys()) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
