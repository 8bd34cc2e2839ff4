"""libvirt's errors go to the agent's log at a fitting level, never as raw lines on stderr.

libvirt's handler is process-wide, so each case runs in a fresh Python process against the
real libvirtd: the errors and stderr are libvirt's own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import TOP

pytestmark = [pytest.mark.timeout(60), pytest.mark.libvirt]

MISSING = "6f1b9e4a-4a4e-4c53-9c0c-2f5c1e0e7b11"
SCRIPT = f"""
import logging, sys
import libvirt
logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format="%(levelname)s %(message)s")
if sys.argv[1] == "handler":
    from actors.host import libvirterrors
    libvirterrors.register()
conn = libvirt.open("qemu:///system")
for call in (lambda: conn.lookupByUUIDString("{MISSING}"), lambda: conn.lookupByName("")):
    try:
        call()
    except libvirt.libvirtError as e:
        print("raised", e.get_error_code())
conn.close()
try:
    libvirt.open("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
except libvirt.libvirtError as e:
    print("raised", e.get_error_code())
"""


def run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=TOP, capture_output=True,
                          text=True, timeout=30, check=False)


def test_without_a_handler_libvirt_prints_raw_lines_on_stderr() -> None:
    done = run("default")
    assert done.returncode == 0, done.stderr
    assert "Domain not found" in done.stderr  # what the agent's log used to get


def test_the_handler_logs_expected_errors_at_debug_and_connection_errors_as_warnings() -> None:
    done = run("handler")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines.count("raised 42") == 2  # the callers still get every error
    not_found = [line for line in lines if "Domain not found" in line]
    assert len(not_found) == 2 and all(line.startswith("DEBUG ") for line in not_found)
    assert any(line.startswith("WARNING libvirt:") and "nonexistent" in line
               for line in lines), lines
