"""The guest agent (qemu-ga) of a real TCG guest, through vdsmd's API, events and stats.

One guest runs the QEMU guest agent (tests/guestfiles.py), with an ext4 disk mounted on
/mnt: its info reaches the stats, the desktop verbs run their commands in it, freeze stops
its writes until thaw, the balloon moves its MemTotal, its memory use shows; its agent is
killed and stopped (verbs refuse, or end by their deadline; reboots fall back to the power
button and the next boot's agent is noticed), and finally powers the guest off. The test talks
to the guest directly (``guest-exec`` through libvirt) only to play the guest's side: to
allocate memory, start a writer, kill or stop its agent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import pytest

from messaging.client import Subscriber
from tests import guest as g
from tests import guestfiles
from tests.harness import Vdsmd, next_event, wait_for
from tests.vm import agent as a

pytestmark = pytest.mark.libvirt
MIB = 1 << 20
SECRET = "s3cret pass; $(touch /tmp/pw) 'quoted'"
DESKTOP = "/usr/bin/vdsm-desktop"
AGENT_SETTINGS = {
    "timeout": 2.0, "info_interval": 1.0, "apps_interval": 1.0, "command_timeout": 10.0,
    "shutdown_timeout": 10.0, "apps_match": ["qemu-guest-agent-*", "busybox-*"],
    "desktop_lock": [DESKTOP, "lock"],
    "desktop_logoff": [DESKTOP, "logoff"],
    "desktop_logoff_user": [DESKTOP, "logoff", "--user={username}"],
    "desktop_login": [DESKTOP, "login", "{domain}", "{username}"],
}


@pytest.fixture
def ga_agent(tmp_path: Path, hooks_dir: Path, conn: libvirt.virConnect) -> Iterator[Vdsmd]:
    daemon = Vdsmd(tmp_path / "vdsmd", config=a.config(hooks_dir, guest_agent=AGENT_SETTINGS,
                                                         stats_interval=1.0))
    with a.started(conn, daemon):
        yield daemon


def guest_exec(conn: libvirt.virConnect, vm_id: str, *argv: str, wait: bool = True,
               timeout: float = 30.0) -> tuple[int, str]:
    """Run ``argv`` in the guest through its agent (as the guest's own user would); with
    ``wait``, its exit status and output."""
    dom = conn.lookupByUUIDString(vm_id)

    def command(name: str, args: dict[str, Any]) -> Any:
        text = libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": name,
                                                              "arguments": args}), 10, 0)
        return json.loads(text)["return"]

    pid = command("guest-exec", {"path": argv[0], "arg": list(argv[1:]),
                                 "capture-output": wait})["pid"]
    if not wait:
        return 0, ""
    deadline = time.monotonic() + timeout
    while True:
        status = command("guest-exec-status", {"pid": pid})
        if status["exited"]:
            out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
            return status.get("exitcode", -1), out
        assert time.monotonic() < deadline, f"{argv} did not exit"
        time.sleep(0.1)


def stats(agent: Vdsmd, vm_id: str) -> dict[str, Any]:
    return a.status(agent, vm_id)


def wait_stats(agent: Vdsmd, vm_id: str, check: Any, what: str,
               timeout: float = 60.0) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        current = stats(agent, vm_id)
        return current if check(current) else None

    result: dict[str, Any] = wait_for(found, timeout, interval=0.2, what=what)
    return result


def mem_total(conn: libvirt.virConnect, vm_id: str) -> int:
    """The guest's MemTotal (KiB), as the guest sees it."""
    _, out = guest_exec(conn, vm_id, "/bin/sh", "-c", "head -1 /proc/meminfo")
    return int(out.split()[1])


def ticks(serial: Path, offset: int) -> list[int]:
    """The writer's ticks logged after ``offset``."""
    with serial.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [int(line.split()[2]) for line in text.splitlines()
            if line.startswith("VDSM-GUEST TICK ")]


def agent_events(sub: Subscriber, vm_id: str, wanted: str, timeout: float = 60) -> None:
    """Until a VM_status event of ``vm_id`` says its agent is ``wanted``."""
    next_event(sub, lambda _t, p: p.get("vmID") == vm_id and p.get("guestAgent") == wanted,
               timeout)


def drain_agent_state(sub: Subscriber, vm_id: str, quiet: float = 2.0) -> str | None:
    """Read the queued VM_status events of ``vm_id`` until none came for ``quiet`` seconds
    (at most 200 of them); the agent state the last of them named."""
    last = None
    for _ in range(200):
        event = sub.receive(quiet)
        if event is None:
            return last
        if event[1].get("vmID") == vm_id and "guestAgent" in event[1]:
            last = event[1]["guestAgent"]
    raise AssertionError("VM_status events kept coming")


@pytest.mark.timeout(400)
def test_guest_agent_info_desktop_freeze_memory_and_failures(
    ga_agent: Vdsmd, guest_image: g.GuestImage, conn: libvirt.virConnect, tmp_path: Path,
) -> None:
    agent = ga_agent
    disk = tmp_path / "fs.img"
    with disk.open("wb") as f:
        f.truncate(32 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(disk)], check=True, timeout=60)
    vm_id = a.new_id()
    params = a.guest_params(guest_image, drives=[{"path": str(disk)}],
                            kernelArgs=g.kernel_cmdline("idle", agent=1, mount=1))
    with agent.subscriber(f"|virt|VM_status|{vm_id}") as sub:
        wait_for(lambda: agent.call("Host.ping"), 5)
        agent.call("VM.create", vmID=vm_id, vmParams=params)
        serial = a.serial_log(agent, vm_id)
        g.wait_for_marker(serial, g.MARKER_MOUNTED, a.BOOT_TIMEOUT)
        g.wait_for_marker(serial, g.MARKER_AGENT_STARTED, a.BOOT_TIMEOUT)

        # --- the agent appears: an event, then the guest's own view in the stats --------
        agent_events(sub, vm_id, "responsive")
        info = wait_stats(agent, vm_id, lambda s: "appsList" in s and "memoryStats" in s,
                          "guest info and memory stats")
        assert info["guestAgent"] == "responsive"
        assert info["guestAgentVersion"].startswith("7.2")
        assert info["guestFQDN"] == "vdsm-guest"
        assert info["guestOs"].endswith("-cloud-amd64")
        assert info["guestOsInfo"]["distribution"] == "vdsm test guest"
        assert info["username"] == guestfiles.USER
        assert info["guestUsers"] == [{"name": guestfiles.USER, "domain": "",
                                       "loginTime": float(guestfiles.LOGIN_TIME)}]
        lo = next(nic for nic in info["netIfaces"] if nic["name"] == "lo")
        assert lo["inet"] == ["127.0.0.1"] and lo["inet6"] == ["::1"]
        assert info["guestIPs"] == ""  # loopback only
        mnt = next(d for d in info["disksUsage"] if d["path"] == "/mnt")
        assert mnt["fs"] == "ext4" and 0 < mnt["used"] < mnt["total"] < 32 * MIB
        assert info["guestTimezone"] == {"zone": "UTC", "offset": 0}
        assert any(app.startswith("qemu-guest-agent-1:7.2") for app in info["appsList"])
        assert any(app.startswith("busybox-") for app in info["appsList"])
        assert not any(app.startswith("linux-image-") for app in info["appsList"])
        assert 0 < info["memUsage"] < 100
        assert info["memoryStats"]["mem_total"] > 64 * 1024
        assert info["balloonInfo"]["balloon_max"] == 128 * 1024
        # the same guest info in Host.getAllVmStats (from the same board, no guest call)
        listed = next(s for s in agent.call("Host.getAllVmStats") if s["vmID"] == vm_id)
        assert listed["guestAgent"] == "responsive"
        assert (listed["guestFQDN"], listed["username"]) == ("vdsm-guest", guestfiles.USER)
        assert listed["guestOsInfo"] == info["guestOsInfo"]
        for key in ("guestOs", "guestUsers", "netIfaces", "guestIPs", "disksUsage",
                    "guestTimezone", "appsList", "memoryStats", "balloonInfo"):
            assert key in listed, key

        # --- desktop verbs: their commands run in the guest, argv as given ----------------
        assert agent.call("VM.desktopLock", vmID=vm_id) is True
        g.wait_for_marker(serial, f"{g.MARKER_DESKTOP} [lock]", 10)
        hostile = "bob; touch /tmp/pwned $(touch /tmp/pwned2) `touch /tmp/pwned3`"
        assert agent.call("desktopLogin", vmID=vm_id, domain="corp{username}",
                          username=hostile, password=SECRET) is True
        digest = hashlib.sha256(SECRET.encode()).hexdigest()
        g.wait_for_marker(serial, f"{g.MARKER_DESKTOP} [login] [corp{{username}}] "
                                  f"[{hostile}] pw-sha256={digest}", 10)
        rc, _ = guest_exec(conn, vm_id, "/bin/sh", "-c",
                           "test -e /tmp/pwned -o -e /tmp/pwned2 -o -e /tmp/pwned3 "
                           "-o -e /tmp/pw")
        assert rc == 1, "a client's value ran as a shell command in the guest"
        assert agent.call("VM.desktopLogoff", vmID=vm_id, force=True) is True
        g.wait_for_marker(serial, f"{g.MARKER_DESKTOP} [logoff]", 10)
        failed = a.error(lambda: agent.call("VM.desktopLogoff", vmID=vm_id, username="nobody"))
        assert failed.code == 5
        assert "exited with status 3" in failed.message
        assert "user nobody has no session" in failed.message
        assert "--user=nobody" in failed.message
        for bad in ({"username": "-rf"}, {"username": "x\ny"}, {"username": ""},
                    {"domain": "-d"}, {"password": "a\nb"}):
            fields = {"domain": "", "username": "u", "password": "p", **bad}
            refused = a.error(lambda f=fields: agent.call("VM.desktopLogin", vmID=vm_id, **f))
            assert refused.code == -32602, (bad, refused)
            assert "p\nb" not in refused.message and SECRET not in refused.message

        # --- replies the agent refuses: too long, not text; the rest goes on -------------
        for mode, reason in (("huge", "longer than"), ("binary", "not UTF-8")):
            guest_exec(conn, vm_id, "/bin/sh", "-c", f"echo {mode} > {guestfiles.APPS_MODE_FILE}")
            wait_stats(agent, vm_id, lambda s: "appsList" not in s, f"appsList refused ({mode})")
            wait_for(lambda r=reason: r in agent.log_path.read_text(errors="replace"), 30)
            assert stats(agent, vm_id)["guestFQDN"] == "vdsm-guest"
        guest_exec(conn, vm_id, "/bin/rm", guestfiles.APPS_MODE_FILE)
        wait_stats(agent, vm_id, lambda s: "appsList" in s, "appsList back")

        # --- freeze: a write in the guest waits until thaw (or until the forced thaw) -----
        guest_exec(conn, vm_id, "/bin/sh", "-c",
                   "n=0; while [ ! -e /tmp/stop-writer ]; do n=$((n + 1)); "
                   "echo $n >> /mnt/ticks && echo \"VDSM-GUEST TICK $n\" > /dev/console; "
                   "sleep 0.2; done", wait=False)
        g.wait_for_marker(serial, "VDSM-GUEST TICK 2", 30)
        # The writer logs a tick every 0.2 s; the serial log may lag a little behind the
        # guest, so a freeze shows as no new tick over a whole second (under load a slow
        # guest can only make this pass wrongly, never fail wrongly).
        for thaw_by_verb in (True, False):
            assert agent.call("VM.freeze", vmID=vm_id,
                              thawAfter=3600 if thaw_by_verb else 3) is True
            time.sleep(1.0)
            frozen_at = max(ticks(serial, 0))
            if thaw_by_verb:
                # Frozen: the agent refuses what needs the filesystems, at once.
                refused = a.error(lambda: agent.call("VM.desktopLock", vmID=vm_id))
                assert refused.code == 5 and "frozen" in refused.message
                time.sleep(1.0)
                assert max(ticks(serial, 0)) == frozen_at, "a write went through a freeze"
                assert agent.call("VM.thaw", vmID=vm_id) is True
            wait_for(lambda n=frozen_at: max(ticks(serial, 0)) >= n + 2, 30,
                     what="writes after the thaw")
        described = agent.call("Actors.inspect", path=f"/vms/{vm_id}")
        assert described["detail"]["guestAgent"]["forcedThaws"] == 1
        guest_exec(conn, vm_id, "/bin/touch", "/tmp/stop-writer")

        # --- memory: memUsage follows an allocation in the guest; the balloon -------------
        before = stats(agent, vm_id)["memUsage"]
        guest_exec(conn, vm_id, "/bin/sh", "-c", "dd if=/dev/zero of=/tmp/hog bs=1M count=40")
        wait_stats(agent, vm_id, lambda s: s["memUsage"] >= before + 20, "memUsage up")
        guest_exec(conn, vm_id, "/bin/rm", "/tmp/hog")
        wait_stats(agent, vm_id, lambda s: s["memUsage"] <= before + 10, "memUsage down")
        total = mem_total(conn, vm_id)
        assert agent.call("VM.setBalloonTarget", vmID=vm_id, target=96 * 1024) is True
        wait_for(lambda: mem_total(conn, vm_id) <= total - 24 * 1024, 30,
                 what="the guest's MemTotal to shrink")
        # The guest's balloon statistics come on their own period: wait for one sampled
        # after the shrink as well as for the balloon's size.
        ballooned = wait_stats(agent, vm_id,
                               lambda s: s["balloonInfo"]["balloon_cur"] == 96 * 1024
                               and s.get("memoryStats", {}).get("mem_total", total)
                               <= total - 24 * 1024,
                               "balloon_cur and the guest's statistics")
        assert ballooned["balloonInfo"]["balloon_target"] == 96 * 1024
        too_much = a.error(lambda: agent.call("VM.setBalloonTarget", vmID=vm_id,
                                              target=129 * 1024))
        assert too_much.code == -32602
        assert agent.call("VM.setBalloonTarget", vmID=vm_id, target=128 * 1024) is True
        wait_for(lambda: mem_total(conn, vm_id) >= total - 1024, 30,
                 what="the guest's MemTotal back")

        # --- the agent is killed: the stats say so, verbs refuse at once ------------------
        guest_exec(conn, vm_id, "/bin/sh", "-c", "sleep 0.3; kill -9 $(pidof qemu-ga)",
                   wait=False)
        g.wait_for_marker(serial, g.MARKER_AGENT_EXITED, 30)
        wait_stats(agent, vm_id, lambda s: s["guestAgent"] == "disconnected", "disconnected")
        # Consume the events queued so far: an older "responsive" would otherwise be taken
        # for the new boot's agent below. The last says the agent stopped answering, with
        # the state of that moment: "disconnected", or "unresponsive" when a refresh timed
        # out on the dying agent before its port closed (CI saw that: events come when the
        # agent starts or stops answering; the later change shows in the stats).
        assert drain_agent_state(sub, vm_id) in ("unresponsive", "disconnected")
        gone = a.error(lambda: agent.call("VM.desktopLock", vmID=vm_id))
        assert gone.code == 5 and "disconnected" in gone.message
        # A reboot without an agent goes to the power button (libvirt restarts the guest
        # once it powered off); the agent of the new boot is noticed and answers.
        offset = serial.stat().st_size
        assert agent.call("VM.reboot", vmID=vm_id, delay=120) is True
        g.wait_for_marker(serial, g.MARKER_ACPI_SHUTDOWN, 30, offset=offset)
        g.wait_for_marker(serial, g.MARKER_AGENT_STARTED, a.BOOT_TIMEOUT, offset=offset)
        agent_events(sub, vm_id, "responsive")
        assert stats(agent, vm_id)["status"] == "Up"
        wait_stats(agent, vm_id, lambda s: s["guestAgent"] == "responsive", "agent back")

        # --- reboot through the agent -------------------------------------------------
        offset = serial.stat().st_size
        assert agent.call("VM.reboot", vmID=vm_id, delay=120) is True
        g.wait_for_marker(serial, f"{g.MARKER_AGENT_SHUTDOWN} reboot", 30, offset=offset)
        g.wait_for_marker(serial, g.MARKER_AGENT_STARTED, a.BOOT_TIMEOUT, offset=offset)
        assert stats(agent, vm_id)["status"] == "Up"
        wait_stats(agent, vm_id, lambda s: s["guestAgent"] == "responsive", "agent back")

        # --- an agent that never answers: verbs end by their deadline, ACPI takes over -----
        guest_exec(conn, vm_id, "/bin/sh", "-c", "sleep 0.3; kill -STOP $(pidof qemu-ga)",
                   wait=False)
        time.sleep(0.6)
        for verb in ("VM.desktopLock", "VM.freeze"):
            late = a.error(lambda v=verb: agent.call(v, vmID=vm_id))
            assert late.code == 5, (verb, late)  # the agent's own bound, not a wire timeout
        assert stats(agent, vm_id)["guestAgent"] == "unresponsive"
        assert agent.call("Host.getAllVmStats")[0]["vmID"] == vm_id
        # The reboot goes to the power button: the guest powers off, libvirt restarts it.
        offset = serial.stat().st_size
        assert agent.call("VM.reboot", vmID=vm_id, delay=120) is True
        g.wait_for_marker(serial, g.MARKER_ACPI_SHUTDOWN, 30, offset=offset)
        g.wait_for_marker(serial, g.MARKER_AGENT_STARTED, a.BOOT_TIMEOUT, offset=offset)
        wait_stats(agent, vm_id, lambda s: s["guestAgent"] == "responsive", "agent back")
        assert stats(agent, vm_id)["status"] == "Up"

        # --- shutdown through the agent ----------------------------------------------------
        offset = serial.stat().st_size
        assert agent.call("VM.shutdown", vmID=vm_id, delay=120, message="bye") is True
        g.wait_for_marker(serial, f"{g.MARKER_AGENT_SHUTDOWN} poweroff", 30, offset=offset)
        down = a.wait_status(agent, vm_id, "Down")
        assert down["exitReason"] == "shutdown"
        assert "guestAgent" not in down
    assert g.MARKER_ACPI_SHUTDOWN.encode() not in serial.read_bytes()[offset:]
    assert SECRET not in agent.log_path.read_text(errors="replace")
    assert SECRET not in json.dumps(agent.call("Actors.inspect", path=f"/vms/{vm_id}"))
    assert SECRET not in serial.read_text(errors="replace")
    assert agent.call("VM.destroy", vmID=vm_id) is True
