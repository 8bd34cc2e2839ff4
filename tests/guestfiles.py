"""The guest agent part of the test guest (see tests/guest.py): qemu-ga and what it reads.

qemu-ga comes from Debian's ``qemu-guest-agent`` package, a dynamically linked binary: the
builder copies it with the libraries ``ldd`` lists (glib, libudev, liburing, libnuma, pcre2,
libc and the loader) to the paths ``ldd`` names, so it runs as on a distribution. The guest
starts it from ``/init`` with ``vdsm.agent=1`` on the kernel command line. What its commands
read is made real here:

``/etc/os-release``
    ``guest-get-osinfo``.
``/var/run/utmp``
    one login record of user :data:`USER` on tty1 (``guest-get-users``).
``/sbin/shutdown``
    ``guest-shutdown`` runs ``/sbin/shutdown -h -P +0 MSG`` (``-r`` to reboot); busybox has
    none. The script logs ``VDSM-GUEST AGENT-SHUTDOWN <poweroff|reboot|halt> <args>`` on the
    console, exits 0 (qemu-ga reports success only then) and powers off or reboots a moment
    later.
``/usr/bin/dpkg-query``
    the package list (the agent's default ``apps_command`` asks ``dpkg-query`` where it
    exists): one ``name-version`` a line from ``/usr/share/vdsm-test/packages``. If
    ``/tmp/apps-mode`` says ``huge`` it prints 3 MB of text instead, ``binary`` 4 KiB of
    random bytes: bad input for the agent's bounds.
``/usr/bin/vdsm-desktop``
    stands in for the desktop commands (``loginctl ...``): logs ``VDSM-GUEST DESKTOP`` and
    each argument in brackets, for ``login`` also the SHA-256 of the first line of its
    stdin (the password: never the password itself); an argument ``nobody`` (or ending in
    ``=nobody``) makes it fail with status 3 and a message on stderr.

This module only makes contents (text, bytes, the ldd parse); tests/guest.py downloads,
runs the tools and writes the initramfs.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

AGENT_PACKAGE = "qemu-guest-agent"
AGENT_BINARY = "usr/sbin/qemu-ga"
USER = "alice"
LOGIN_TIME = 1_700_000_000
APPS_MODE_FILE = "/tmp/apps-mode"
PACKAGES_FILE = "usr/share/vdsm-test/packages"

OS_RELEASE = """\
PRETTY_NAME="vdsm test guest 1"
NAME="vdsm test guest"
ID=vdsm-test-guest
VERSION_ID="1"
VERSION="1 (busybox)"
"""

SHUTDOWN = r"""#!/bin/sh
# /sbin/shutdown of the vdsm test guest: qemu-ga's guest-shutdown runs
# `shutdown -h -P +0 MSG` (power off), `-r +0 MSG` (reboot) or `-h -H +0 MSG` (halt).
action=poweroff
for a in "$@"; do
    case "$a" in
        -r) action=reboot ;;
        -H) action=halt ;;
    esac
done
echo "VDSM-GUEST AGENT-SHUTDOWN $action $*" > /dev/console
(
    sleep 0.2
    sync
    echo "VDSM-GUEST POWERING-OFF" > /dev/console
    if [ "$action" = reboot ]; then reboot -f; else poweroff -f; fi
) </dev/null >/dev/null 2>&1 &
exit 0
"""

DPKG_QUERY = r"""#!/bin/sh
# The vdsm test guest's package query: one "name-version" a line.
case "$(cat @MODE@ 2>/dev/null)" in
    huge) yes 'a-package-name-that-goes-on-and-on-1.0' | head -c 3000000 ;;
    binary) head -c 4096 /dev/urandom ;;
    *) cat /@PACKAGES@ ;;
esac
"""

DESKTOP = r"""#!/bin/sh
# Stand-in for the desktop commands of the vdsm test guest: logs its arguments.
line="VDSM-GUEST DESKTOP"
for a in "$@"; do line="$line [$a]"; done
if [ "$1" = login ]; then
    IFS= read -r pw
    line="$line pw-sha256=$(printf '%s' "$pw" | sha256sum | cut -d' ' -f1)"
fi
echo "$line" > /dev/console
for a in "$@"; do
    case "$a" in
        nobody|*=nobody)
            echo "vdsm-desktop: user nobody has no session" >&2
            exit 3
            ;;
    esac
done
echo "vdsm-desktop: $1 done"
"""


def scripts() -> dict[str, str]:
    """The guest's scripts by path (no leading slash): part of the cache key."""
    return {
        "sbin/shutdown": SHUTDOWN,
        "usr/bin/dpkg-query": DPKG_QUERY.replace("@MODE@", APPS_MODE_FILE)
        .replace("@PACKAGES@", PACKAGES_FILE),
        "usr/bin/vdsm-desktop": DESKTOP,
    }


def packages(versions: dict[str, str]) -> str:
    """The package list the guest reports, from ``{name: version}``."""
    return "".join(f"{name}-{version}\n" for name, version in sorted(versions.items()))


def utmp_record(user: str = USER, line: str = "tty1", pid: int = 1,
                login: int = LOGIN_TIME) -> bytes:
    """One glibc ``struct utmp`` (x86_64, 384 bytes): a USER_PROCESS login record."""
    user_process = 7
    record = struct.pack(
        "<hxxi32s4s32s256shhiii16s20s",
        user_process, pid, line.encode(), line[-4:].encode(), user.encode(), b"",
        0, 0, 0, login, 0, b"", b"",
    )
    assert len(record) == 384
    return record


_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(\S+|not found)\s+\(0x[0-9a-f]+\)\s*$")
_LDD_MISSING = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$")


def parse_ldd(text: str) -> list[Path]:
    """The absolute paths of the libraries (and the loader) in ``ldd``'s output; the vDSO
    is skipped. Raises ``ValueError`` naming a library that ldd did not find."""
    paths: list[Path] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        missing = _LDD_MISSING.match(line)
        if missing:
            raise ValueError(f"{missing.group(1)} not found (install the package that has it)")
        m = _LDD_LINE.match(line)
        if m is None:
            raise ValueError(f"cannot read ldd's line {line!r}")
        path = m.group(2)
        if path.startswith("/"):
            paths.append(Path(path))
    return paths
