"""The shipped systemd unit. This machine has no systemd, so the unit is verified with
systemd-analyze only where it exists; its essentials are checked everywhere."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "vdsmd.service"


def test_unit_runs_vdsmd_and_stops_it_with_sigterm() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    service = parser["Service"]
    assert service["ExecStart"].split()[0].endswith("/vdsmd")
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "process"
    assert "libvirtd.service" in parser["Unit"]["After"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_unit_restarts_a_failed_agent_and_reloads_keys_with_sighup() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    service = parser["Service"]
    # vdsmd exits non-zero (70) when its root supervisor gives up: systemd must restart it
    assert service["Restart"] in ("on-failure", "always")
    assert "SuccessExitStatus" not in service or "70" not in service["SuccessExitStatus"]
    assert service["ExecReload"].split()[-2:] == ["-HUP", "$MAINPID"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine (no systemd here)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "vdsmd.service"
    # verify checks that ExecStart exists: point it at this venv's vdsmd
    vdsmd = shutil.which("vdsmd") or "/bin/true"
    unit.write_text(UNIT.read_text().replace("/usr/bin/vdsmd", vdsmd))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
