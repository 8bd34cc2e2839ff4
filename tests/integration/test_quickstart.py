"""docs/quickstart.md, run as a newcomer would paste it: every bash block, in order, as one
script (``set -euo pipefail``), against a real vdsmd, libvirtd, a real guest and a local
storage directory. A failing step fails the test with the script's output. The VM's name
is unique per run (``$QS_VM``): libvirt's domain names are the host's, and two checkouts
may run this test on one machine at once."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import libvirt
import pytest

from tests.harness import TOP
from tests.vm.agent import destroy_owned

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt, pytest.mark.slow]

DOC = TOP / "docs" / "quickstart.md"
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def script() -> str:
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 8, "docs/quickstart.md lost its bash blocks"
    return "set -euo pipefail\n" + "\n".join(blocks)


def _kill(pid_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    qs = tmp_path / "qs"
    vm_name = f"quickstart-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "QS": str(qs), "QS_VM": vm_name, "PATH": f"{Path(sys.executable).parent}:"
           f"{os.environ.get('PATH', '')}"}
    env.pop("VDSM_API", None)
    env.pop("VDSM_EVENTS", None)
    try:
        done = subprocess.run(["bash", "-c", script()], cwd=TOP, env=env, capture_output=True,
                              text=True, timeout=280, check=False)
        log = (qs / "vdsmd.log").read_text(errors="replace")[-6000:] \
            if (qs / "vdsmd.log").exists() else ""
        assert done.returncode == 0, (f"quickstart failed ({done.returncode}):\n"
                                      f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}\n{log}")
        out = done.stdout
        listed = [line.split() for line in out.splitlines() if line.startswith(f"{vm_name} ")]
        assert listed and all("Up" in row for row in listed), out  # VM list, twice
        assert len(listed) == 2  # after the start and after the restore
        assert "vnc" in out  # the displayInfo of getStats
        events = [json.loads(line) for line in (qs / "events.jsonl").read_text().splitlines()]
        statuses = [e["payload"]["status"] for e in events
                    if e["topic"].startswith("|virt|VM_status|")]
        assert "Up" in statuses and statuses[-1] == "Down"
        tasks = [e["payload"] for e in events if e["topic"].startswith("|jobs|status|")]
        assert {t.get("verb") for t in tasks} >= {"Volume.create", "Image.delete"}
        # the hibernation and the restore: jobs, followed by --wait to their end
        assert {t.get("job_type") for t in tasks} >= {"hibernate", "restore"}
        for kind in ("hibernate", "restore"):
            # ... with the bytes of the memory image written, then read
            assert re.search(rf"^job \S+ {kind} of VM \S+: done, 100%, ([\d.]+ \w+) of \1$",
                             done.stderr, re.MULTILINE), done.stderr
        assert "Traceback" not in done.stderr
    finally:
        for pid in ("events.pid", "vdsmd.pid"):
            _kill(qs / pid)
        conn = libvirt.open("qemu:///system")
        try:
            destroy_owned(conn, str((qs / "state").resolve()))
        finally:
            conn.close()
