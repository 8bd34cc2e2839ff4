"""The lease layer runs in the keeper process, whose renewal path must never stall: it may
import nothing but the standard library (and the error tree), and in particular no actors,
ZeroMQ, libvirt or logging."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN = ("pykka", "zmq", "libvirt", "msgpack", "pyudev", "prompt_toolkit", "logging",
             "actors.base", "actors.storage.probe")


def test_importing_the_lease_layer_pulls_in_nothing_heavy() -> None:
    code = ("import json, sys\n"
            "import actors.storage.lease.paxos, actors.storage.lease.delta\n"
            "import actors.storage.lease.observer, actors.storage.lease.aligned\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    modules = json.loads(out)
    heavy = [m for m in modules if m.split(".")[0] in FORBIDDEN or m in FORBIDDEN]
    assert heavy == []
    ours = {m for m in modules if m.startswith(("actors", "messaging"))}
    assert ours <= {"actors", "actors.storage", "messaging", "messaging.errors"} | {
        m for m in ours if m.startswith(("actors.storage.lease", "messaging.errors."))}
