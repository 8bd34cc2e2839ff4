"""vdsmd as a real process: one agent per directory, and an exit when the root gives up."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from actors import config
from messaging import endpoints
from messaging.client import Client
from tests.harness import Vdsmd, running_vdsmd, wait_for

pytestmark = pytest.mark.timeout(180)

EXIT_FATAL = 70
FATAL_CONFIG = ("[debug]\nfault_injection = true\n"
                "[supervision]\nmax_restarts = 1\nwithin = 60\nbackoff_initial = 0.01\n")


# --- one agent per run dir and per state dir ------------------------------------------


@pytest.mark.parametrize("flag", ["--run-dir", "--state-dir"])
def test_a_second_agent_on_a_directory_in_use_is_refused(tmp_path: Path, flag: str) -> None:
    with running_vdsmd(tmp_path / "first") as first:
        shared = first.workdir / ("run" if flag == "--run-dir" else "state")
        # its own endpoints, but the first agent's directory
        second = Vdsmd(tmp_path / "second", extra_args=(flag, str(shared)))
        try:
            second.start_process()
            assert second.proc is not None
            assert second.proc.wait(30) == 1
            assert (f"vdsmd cannot start: {shared} is in use by another vdsmd "
                    f"(pid {first.pid}): give each agent its own {flag}") in _log(second)
        finally:
            second.kill()
        assert first.call("Host.ping") is True
        assert (shared / "vdsmd.lock").read_text() == f"{first.pid}\n"


def test_agents_with_their_own_state_dirs_share_nothing_by_default(tmp_path: Path) -> None:
    """Two agents with different --api and --state-dir and no --run-dir: each gets a run
    dir of its own (sockets, mounts and links, the lock), none lands in the default one."""
    agents = [Vdsmd(tmp_path / name, own_run_dir=False) for name in ("a", "b")]
    runs = [config.agent_run_dir(agent.state_dir) for agent in agents]
    default_mnt = endpoints.default_run_dir() / "storage" / "mnt"
    before = set(default_mnt.iterdir()) if default_mnt.is_dir() else set()
    try:
        for agent in agents:
            agent.start()  # the second one used to be refused: the default run dir was taken
        assert runs[0] != runs[1]
        for agent, run in zip(agents, runs, strict=True):
            assert run.parent == endpoints.default_run_dir() / "agents"
            assert (run / "vdsmd.lock").read_text() == f"{agent.pid}\n"
            data = agent.workdir / "data"
            data.mkdir()
            result = agent.call("StoragePool.connectStorageServer",
                                storagepoolID="00000000-0000-0000-0000-000000000000",
                                domainType="localfs",
                                connectionParams=[{"id": "1", "connection": str(data)}])
            assert result[0]["status"] == 0
            links = list((run / "storage" / "mnt").iterdir())
            assert [link.resolve() for link in links] == [data.resolve()]
            assert f"run dir {run}" in agent.log()
        after = set(default_mnt.iterdir()) if default_mnt.is_dir() else set()
        assert after == before
    finally:
        for agent in agents:
            try:
                agent.stop(timeout=30)
            finally:
                agent.kill()
        for run in runs:
            shutil.rmtree(run, ignore_errors=True)


def test_the_run_dir_is_derived_only_when_not_given(tmp_path: Path) -> None:
    default = config.Config()
    assert config.derive_run_dir(default).daemon.run_dir == endpoints.default_run_dir()
    own = config.with_overrides(default, daemon={"state_dir": tmp_path / "s1"})
    derived = config.derive_run_dir(own)
    assert derived.daemon.run_dir == config.agent_run_dir(tmp_path / "s1")
    assert derived.api_endpoint == f"ipc://{derived.daemon.run_dir}/api.sock"
    other = config.derive_run_dir(config.with_overrides(default,
                                                        daemon={"state_dir": tmp_path / "s2"}))
    assert other.daemon.run_dir != derived.daemon.run_dir
    given = config.with_overrides(own, daemon={"run_dir": tmp_path / "run"})
    assert config.derive_run_dir(given).daemon.run_dir == tmp_path / "run"
    path = tmp_path / "vdsmd.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}/s3"\nrun_dir = "{tmp_path}/r3"\n')
    assert config.derive_run_dir(config.load(path)).daemon.run_dir == tmp_path / "r3"


def test_a_killed_agents_lock_does_not_block_its_restart(tmp_path: Path) -> None:
    daemon = Vdsmd(tmp_path / "d")
    try:
        daemon.start()
        daemon.kill()  # SIGKILL: no clean-up, the lock files stay
        assert (daemon.workdir / "run" / "vdsmd.lock").exists()
        assert (daemon.state_dir / "vdsmd.lock").exists()
        daemon.start()
        assert daemon.call("Host.ping") is True
        assert (daemon.state_dir / "vdsmd.lock").read_text() == f"{daemon.pid}\n"
    finally:
        daemon.kill()


# --- escalation past the root ends the process ----------------------------------------


def _running(client: Client, path: str, restarts: int = 0) -> bool:
    """``path`` runs again after ``restarts`` restarts (a crash is a message: not at once)."""
    return any(a["path"] == path and a["state"] == "running" and a["restarts"] == restarts
               for a in client.call("Actors.list"))


def test_a_subsystem_given_up_by_the_root_ends_the_process(tmp_path: Path) -> None:
    daemon = Vdsmd(tmp_path / "d", config=FATAL_CONFIG)
    try:
        daemon.start()
        assert daemon.proc is not None
        with daemon.client(timeout=10) as c:
            c.call("Actors.crash", {"path": "/host", "reason": "first"})
            # restarted once (max_restarts = 1)...
            wait_for(lambda: _running(c, "/host", restarts=1), 60, what="/host restarted")
            # ... and given up the second time: the root has no parent to escalate to
            c.call("Actors.crash", {"path": "/host", "reason": "second"})
        status = daemon.proc.wait(120)
        assert status == EXIT_FATAL
        log = _log(daemon)
        assert "vdsmd cannot go on: the root supervisor gave up: /host failed" in log
        assert "second" in log.split("vdsmd cannot go on")[1]
        assert "vdsmd stopped" in log  # stopped what it could on the way out
        assert f"vdsmd exits with status {EXIT_FATAL}" in log
    finally:
        daemon.kill()


def test_a_crashed_root_ends_the_process(tmp_path: Path) -> None:
    daemon = Vdsmd(tmp_path / "d", config=FATAL_CONFIG)
    try:
        daemon.start()
        assert daemon.proc is not None
        daemon.call("Actors.crash", path="/", reason="root drill")
        assert daemon.proc.wait(120) == EXIT_FATAL
        log = _log(daemon)
        assert "vdsmd cannot go on: the root supervisor failed" in log
        assert "root drill" in log.split("vdsmd cannot go on")[1]
        assert "vdsmd stopped" in log
    finally:
        daemon.kill()


def test_a_leaf_given_up_keeps_the_process(tmp_path: Path) -> None:
    """Only escalations past the root are fatal: a host service given up is not."""
    with running_vdsmd(tmp_path / "d", config=FATAL_CONFIG) as daemon, \
            daemon.client(timeout=10) as c:
        for restarts, reason in enumerate(("one", "two")):
            wait_for(lambda n=restarts: _running(c, "/host/stats", n), 60,  # type: ignore[misc]
                     what="/host/stats running")
            c.call("Actors.crash", {"path": "/host/stats", "reason": reason})
        wait_for(lambda: "giving up on /host/stats" in _log(daemon), 30, what="the give-up")
        assert c.call("Host.ping") is True
        assert daemon.proc is not None and daemon.proc.poll() is None


def _log(daemon: Vdsmd) -> str:
    """The whole log (``Vdsmd.log`` keeps the tail only; DEBUG lines are many)."""
    try:
        return daemon.log_path.read_text(errors="replace")
    except OSError:
        return ""
