"""Builder of a tiny real test guest: Debian's cloud kernel plus a busybox initramfs.

The guest boots in about two seconds under TCG and does one job chosen on the kernel
command line (see :func:`kernel_cmdline`):

``vdsm.mode=idle``
    load the virtio modules, print ``VDSM-GUEST READY`` on the serial console, then sleep
    forever. An ACPI power-button press (``virDomain.shutdown()``) powers it off.
``vdsm.mode=write vdsm.mib=N [vdsm.chunk=C] [vdsm.fill=zero|ones] [vdsm.sleep=S]``
    write N MiB of zeros (or of 0xff bytes with ``vdsm.fill=ones``, which no zero detection
    can skip) to ``/dev/vda`` with O_DIRECT, in chunks of C MiB (default 4), printing
    ``VDSM-GUEST WRITE-PROGRESS <mib>`` after each chunk (and sleeping S seconds, fractions
    allowed: a bounded write rate), then ``VDSM-GUEST WRITE-DONE N``
    or ``VDSM-GUEST WRITE-FAILED rc=<rc> at=<mib>``; then power off. With
    ``error_policy='stop'`` the domain pauses on ENOSPC and the write goes on after resume.
    With ``vdsm.below=M`` it first prints ``VDSM-GUEST READY`` and writes only once its
    ``MemTotal`` is below M MiB: the host opens this gate by shrinking the balloon
    (``setMemory``), so a test knows that nothing was written before it said so. With
    ``vdsm.hold=1`` it stays up after ``WRITE-DONE`` (writing nothing more) instead of
    powering off.
``vdsm.mode=read [vdsm.mib=N]``
    read ``/dev/vda`` (all of it, or its first N MiB) with O_DIRECT and print
    ``VDSM-GUEST READ-DONE <sha256> <bytes>`` or ``VDSM-GUEST READ-FAILED rc=<rc>``; power off.
``vdsm.mode=poweroff``
    print ``VDSM-GUEST BOOTED mode=poweroff`` and power off at once.
``vdsm.mode=count [vdsm.ballast=N]``
    hold N MiB of 0xff bytes in RAM (none by default: memory a migration must really move,
    unlike zero pages), print ``VDSM-GUEST READY``, then ``VDSM-GUEST COUNT <boot> <n>``
    five times a second forever, ``n`` counting up from 1 and ``<boot>`` the first 8
    characters of the kernel's boot id: a guest that keeps counting with the same boot id
    across a live migration was not rebooted (see :func:`counts`).
``vdsm.mode=busy``
    print ``VDSM-GUEST READY`` and keep its vCPU busy (a shell loop) until powered off.
``vdsm.mode=writeloop [vdsm.chunk=C]``
    write zeros to ``/dev/vda`` with O_DIRECT, C MiB (default 4) at a time, over and over
    (from the start again at its end), after ``VDSM-GUEST READY``; until powered off (a
    failed write prints ``VDSM-GUEST WRITE-FAILED`` and powers off).
``vdsm.mode=alloc vdsm.mib=N [vdsm.chunk=C] [vdsm.reserve=R] [vdsm.below=M]``
    allocate N MiB of memory the guest cannot reclaim (files on a ramfs), C MiB (default 4)
    at a time, each only while its ``MemAvailable`` stays above R MiB (default 24): a guest
    whose balloon took its memory waits until it gets memory back. With ``vdsm.below``, it
    first waits until its ``MemTotal`` is below M MiB (a balloon shrank it) and prints
    ``VDSM-GUEST ALLOC-SHRUNK <MemTotal MiB>``. Prints ``VDSM-GUEST READY`` first,
    ``VDSM-GUEST ALLOC-PROGRESS <mib>`` after each step and ``VDSM-GUEST ALLOC-DONE N`` at
    the end, then holds the memory until powered off.

In every mode, ``vdsm.agent=1`` starts the QEMU guest agent (qemu-ga, see
tests/guestfiles.py) on its virtio-serial port and prints ``VDSM-GUEST AGENT-STARTED
pid=<pid>``; when it exits the guest prints ``VDSM-GUEST AGENT-EXITED rc=<rc>`` (it comes
back with the next boot). ``vdsm.mount=1`` mounts the ext4
filesystem of ``/dev/vda`` on ``/mnt`` (``VDSM-GUEST MOUNTED /mnt``) before the mode runs.
The guest's host name is ``vdsm-guest``; the virtio balloon driver is loaded.

Every mode prints ``VDSM-GUEST BOOTED mode=<mode>`` once its modules are loaded, and
``VDSM-GUEST POWERING-OFF`` just before it powers off. Power off is ``poweroff -f``
(reboot(2) with POWER_OFF): the domain must have ``<features><acpi/></features>``, or the
guest only halts and the domain keeps running.

The kernel comes from the package that the ``linux-image-cloud-amd64`` meta package depends
on (``apt-get download``); busybox from ``busybox-static`` (installed, else downloaded).
The result is cached, keyed by kernel release and a hash of the init script and module list.

This module imports nothing from pytest; ``python -m tests.guest [--cache DIR]`` builds the
guest and prints its paths.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import fcntl
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests import guestfiles

log = logging.getLogger(__name__)

CACHE_ENV = "VDSM_TEST_GUEST_CACHE"
DEFAULT_CACHE_DIR = Path("/var/cache/vdsm-test-guest")
META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"

# Bump when the layout of a cache entry or the way it is built changes.
BUILD_FORMAT = "2"

# Loaded in this order by /init; all must be present in the kernel package.
REQUIRED_MODULES: tuple[str, ...] = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "virtio_console",  # the guest agent's virtio-serial port
    "virtio_balloon",  # memory statistics and the balloon target
)
# The ACPI power button and the event interface, so that an ACPI shutdown request
# (virDomain.shutdown()) powers the guest off. Loaded if present; not fatal if missing.
OPTIONAL_MODULES: tuple[str, ...] = ("button", "evdev")

MARKER_PREFIX = "VDSM-GUEST"
MARKER_BOOTED = f"{MARKER_PREFIX} BOOTED"
MARKER_READY = f"{MARKER_PREFIX} READY"
MARKER_COUNT = f"{MARKER_PREFIX} COUNT"
MARKER_WRITE_PROGRESS = f"{MARKER_PREFIX} WRITE-PROGRESS"
MARKER_WRITE_DONE = f"{MARKER_PREFIX} WRITE-DONE"
MARKER_WRITE_GATE = f"{MARKER_PREFIX} WRITE-GATE"
MARKER_WRITE_FAILED = f"{MARKER_PREFIX} WRITE-FAILED"
MARKER_READ_DONE = f"{MARKER_PREFIX} READ-DONE"
MARKER_READ_FAILED = f"{MARKER_PREFIX} READ-FAILED"
MARKER_POWERING_OFF = f"{MARKER_PREFIX} POWERING-OFF"
MARKER_POWEROFF_FAILED = f"{MARKER_PREFIX} POWEROFF-FAILED"
MARKER_ACPI_SHUTDOWN = f"{MARKER_PREFIX} ACPI-SHUTDOWN"
MARKER_AGENT_STARTED = f"{MARKER_PREFIX} AGENT-STARTED"
MARKER_AGENT_EXITED = f"{MARKER_PREFIX} AGENT-EXITED"
MARKER_AGENT_SHUTDOWN = f"{MARKER_PREFIX} AGENT-SHUTDOWN"
MARKER_MOUNTED = f"{MARKER_PREFIX} MOUNTED"
MARKER_DESKTOP = f"{MARKER_PREFIX} DESKTOP"
MARKER_ALLOC_SHRUNK = f"{MARKER_PREFIX} ALLOC-SHRUNK"
MARKER_ALLOC_PROGRESS = f"{MARKER_PREFIX} ALLOC-PROGRESS"
MARKER_ALLOC_DONE = f"{MARKER_PREFIX} ALLOC-DONE"
MARKER_KERNEL_PANIC = "Kernel panic"

MODES = frozenset({"idle", "write", "read", "poweroff", "count", "busy", "writeloop", "alloc"})
# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can fail and
# panic ("IO-APIC + timer doesn't work"); the guest does not need it.
BASE_CMDLINE = "console=ttyS0 quiet panic=-1 no_timer_check"

APT_TIMEOUT = 300.0
DPKG_TIMEOUT = 180.0
TOOL_TIMEOUT = 60.0
LOCK_TIMEOUT = 900.0

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.,:/+=-]+$")


class GuestBuildError(RuntimeError):
    """The test guest could not be built; the message names the failing command."""


class GuestFailed(RuntimeError):
    """The guest printed a failure marker (or the kernel panicked) on its serial console."""


@dataclasses.dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path


# --------------------------------------------------------------------------------------------
# The guest's /init
# --------------------------------------------------------------------------------------------

_INIT_TEMPLATE = r"""#!/bin/busybox sh
# /init of the vdsm test guest (generated by tests/guest.py; format @FORMAT@)
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "@PREFIX@ $*"; }
hang() { while :; do sleep 3600; done; }
meminfo() { awk -v k="$1:" '$1 == k { print int($2 / 1024) }' /proc/meminfo; }
off() {
    sync
    say POWERING-OFF
    poweroff -f
    sleep 10
    say POWEROFF-FAILED
    hang
}

mode=idle
mib=
chunk=4
fill=zero
ballast=0
pause=
agent=
mnt=
reserve=24
below=
hold=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vdsm.mode=*) mode="${arg#vdsm.mode=}" ;;
        vdsm.mib=*) mib="${arg#vdsm.mib=}" ;;
        vdsm.chunk=*) chunk="${arg#vdsm.chunk=}" ;;
        vdsm.fill=*) fill="${arg#vdsm.fill=}" ;;
        vdsm.ballast=*) ballast="${arg#vdsm.ballast=}" ;;
        vdsm.sleep=*) pause="${arg#vdsm.sleep=}" ;;
        vdsm.agent=*) agent="${arg#vdsm.agent=}" ;;
        vdsm.mount=*) mnt="${arg#vdsm.mount=}" ;;
        vdsm.reserve=*) reserve="${arg#vdsm.reserve=}" ;;
        vdsm.below=*) below="${arg#vdsm.below=}" ;;
        vdsm.hold=*) hold="${arg#vdsm.hold=}" ;;
    esac
done
hostname vdsm-guest
ifconfig lo 127.0.0.1 up 2>/dev/null

for m in @REQUIRED@; do
    insmod "/lib/modules/$m.ko" || say MODULE-FAILED "$m"
done
for m in @OPTIONAL@; do
    if [ -f "/lib/modules/$m.ko" ]; then
        insmod "/lib/modules/$m.ko" || say MODULE-FAILED "$m"
    fi
done

# An ACPI power-button press (virDomain.shutdown) powers the guest off.
for d in /sys/class/input/event*; do
    [ -e "$d/device/name" ] || continue
    [ "$(cat "$d/device/name")" = "Power Button" ] || continue
    ev="/dev/input/${d##*/}"
    [ -c "$ev" ] || continue
    # Open the event device first, then say so: a press before the reader opened it would
    # be lost (and a loaded host runs the background reader late).
    (exec 3<"$ev"; : > /tmp/acpi-listening; dd of=/dev/null bs=24 count=1 <&3 2>/dev/null
     say ACPI-SHUTDOWN; off) &
    n=0
    while [ ! -e /tmp/acpi-listening ] && [ "$n" -lt 100 ]; do n=$((n + 1)); sleep 0.05; done
done

wait_vda() {
    n=0
    while [ ! -b /dev/vda ]; do
        n=$((n + 1))
        [ "$n" -gt 100 ] && return 1
        sleep 0.1
    done
    return 0
}

is_number() {
    case "$1" in
        ''|*[!0-9]*) return 1 ;;
    esac
    return 0
}

# The guest agent on its virtio-serial port (no udev: find the port by its name).
agent_port() {
    n=0
    while :; do
        for p in /sys/class/virtio-ports/*; do
            if [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ]; then
                echo "/dev/${p##*/}"
                return 0
            fi
        done
        n=$((n + 1))
        [ "$n" -gt 100 ] && return 1
        sleep 0.1
    done
}
run_agent() {
    if ! port=$(agent_port); then
        say AGENT-FAILED no-port
        return
    fi
    qemu-ga -m virtio-serial -p "$port" -t /var/run </dev/null >/dev/null 2>&1 &
    pid=$!
    say AGENT-STARTED "pid=$pid"
    wait "$pid"
    say AGENT-EXITED "rc=$?"
}
if [ "$mnt" = 1 ]; then
    if wait_vda && mount -t ext4 /dev/vda /mnt; then
        say MOUNTED /mnt
    else
        say MOUNT-FAILED /mnt
    fi
fi
[ "$agent" = 1 ] && run_agent &

say BOOTED "mode=$mode"

case "$mode" in
idle)
    say READY
    hang
    ;;
poweroff)
    off
    ;;
count)
    boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id)
    if is_number "$ballast" && [ "$ballast" -gt 0 ]; then
        tr '\000' '\377' </dev/zero | head -c "$((ballast * 1048576))" >/tmp/ballast
    fi
    say READY
    n=0
    while :; do
        n=$((n + 1))
        say COUNT "$boot" "$n"
        sleep 0.2
    done
    ;;
busy)
    say READY
    while :; do :; done
    ;;
writeloop)
    if ! is_number "$chunk" || [ "$chunk" -eq 0 ]; then
        say WRITE-FAILED rc=badarg "chunk=$chunk"
        off
    fi
    if ! wait_vda; then
        say WRITE-FAILED rc=nodev at=0
        off
    fi
    size=$(( $(blockdev --getsize64 /dev/vda) / 1048576 ))
    if [ "$size" -lt "$chunk" ]; then
        say WRITE-FAILED rc=small "size=$size"
        off
    fi
    say READY
    pos=0
    while :; do
        if ! dd if=/dev/zero of=/dev/vda bs=1M count="$chunk" seek="$pos" oflag=direct \
                conv=notrunc 2>/tmp/dd.err; then
            say WRITE-FAILED rc=1 "at=$pos"
            cat /tmp/dd.err
            off
        fi
        pos=$((pos + chunk))
        [ $((pos + chunk)) -gt "$size" ] && pos=0
    done
    ;;
alloc)
    if ! is_number "$mib" || ! is_number "$chunk" || [ "$chunk" -eq 0 ] \
            || ! is_number "$reserve" || { [ -n "$below" ] && ! is_number "$below"; }; then
        say ALLOC-FAILED rc=badarg "mib=$mib chunk=$chunk reserve=$reserve below=$below"
        off
    fi
    mkdir -p /hog && mount -t ramfs ramfs /hog
    say READY
    if [ -n "$below" ]; then
        while [ "$(meminfo MemTotal)" -ge "$below" ]; do sleep 0.5; done
        say ALLOC-SHRUNK "$(meminfo MemTotal)"
    fi
    got=0
    while [ "$got" -lt "$mib" ]; do
        n=$chunk
        [ "$n" -gt $((mib - got)) ] && n=$((mib - got))
        if [ $(($(meminfo MemAvailable) - n)) -lt "$reserve" ]; then
            sleep 0.5
            continue
        fi
        dd if=/dev/zero of="/hog/$got" bs=1M count="$n" 2>/dev/null
        got=$((got + n))
        say ALLOC-PROGRESS "$got"
    done
    say ALLOC-DONE "$mib"
    hang
    ;;
write)
    if ! is_number "$mib" || ! is_number "$chunk" || [ "$chunk" -eq 0 ]; then
        say WRITE-FAILED rc=badarg "mib=$mib" "chunk=$chunk"
        off
    fi
    case "$fill" in
        zero|ones) ;;
        *) say WRITE-FAILED rc=badarg "fill=$fill"; off ;;
    esac
    if ! wait_vda; then
        say WRITE-FAILED rc=nodev at=0
        off
    fi
    if [ -n "$below" ]; then
        if ! is_number "$below"; then
            say WRITE-FAILED rc=badarg "below=$below"
            off
        fi
        say READY
        while [ "$(meminfo MemTotal)" -ge "$below" ]; do sleep 0.2; done
        say WRITE-GATE "$(meminfo MemTotal)"
    fi
    done_mib=0
    while [ "$done_mib" -lt "$mib" ]; do
        n=$chunk
        left=$((mib - done_mib))
        [ "$n" -gt "$left" ] && n=$left
        if [ "$fill" = ones ]; then
            # 0xff bytes: allocated even where zero detection would skip zeros
            tr '\000' '\377' </dev/zero | dd of=/dev/vda bs=1M count="$n" \
                seek="$done_mib" iflag=fullblock oflag=direct conv=notrunc 2>/tmp/dd.err
        else
            dd if=/dev/zero of=/dev/vda bs=1M count="$n" seek="$done_mib" \
                oflag=direct conv=notrunc 2>/tmp/dd.err
        fi
        rc=$?
        if [ "$rc" -ne 0 ]; then
            say WRITE-FAILED "rc=$rc" "at=$done_mib"
            cat /tmp/dd.err
            off
        fi
        done_mib=$((done_mib + n))
        say WRITE-PROGRESS "$done_mib"
        [ -n "$pause" ] && sleep "$pause"
    done
    say WRITE-DONE "$mib"
    [ "$hold" = 1 ] && hang
    off
    ;;
read)
    if [ -n "$mib" ] && ! is_number "$mib"; then
        say READ-FAILED rc=badarg "mib=$mib"
        off
    fi
    if ! wait_vda; then
        say READ-FAILED rc=nodev
        off
    fi
    count=
    [ -n "$mib" ] && count="count=$mib"
    sum=$( { dd if=/dev/vda bs=1M $count iflag=direct 2>/tmp/dd.err; echo $? >/tmp/dd.rc; } \
        | sha256sum)
    rc=$(cat /tmp/dd.rc)
    if [ "$rc" -ne 0 ]; then
        say READ-FAILED "rc=$rc"
        cat /tmp/dd.err
        off
    fi
    # busybox dd prints no byte count here: work it out from the device size.
    bytes=$(blockdev --getsize64 /dev/vda)
    if [ -n "$mib" ] && [ "$bytes" -gt $((mib * 1048576)) ]; then
        bytes=$((mib * 1048576))
    fi
    say READ-DONE "${sum%% *}" "$bytes"
    off
    ;;
*)
    say UNKNOWN-MODE "$mode"
    off
    ;;
esac
"""


def init_script() -> str:
    """Return the text of the guest's /init."""
    return (
        _INIT_TEMPLATE.replace("@FORMAT@", BUILD_FORMAT)
        .replace("@PREFIX@", MARKER_PREFIX)
        .replace("@REQUIRED@", " ".join(REQUIRED_MODULES))
        .replace("@OPTIONAL@", " ".join(OPTIONAL_MODULES))
    )


def _content_digest() -> str:
    h = hashlib.sha256()
    h.update(BUILD_FORMAT.encode())
    h.update(b"\0")
    h.update(init_script().encode())
    h.update(b"\0")
    h.update(" ".join(REQUIRED_MODULES + OPTIONAL_MODULES).encode())
    for path, text in sorted(guestfiles.scripts().items()):
        h.update(b"\0" + path.encode() + b"\0" + text.encode())
    h.update(b"\0" + guestfiles.OS_RELEASE.encode() + b"\0" + guestfiles.utmp_record())
    h.update(b"\0" + guestfiles.AGENT_PACKAGE.encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _run(
    cmd: Sequence[str], *, timeout: float, cwd: Path | None = None, hint: str = ""
) -> subprocess.CompletedProcess[str]:
    shown = shlex.join(cmd)
    log.debug("running %s", shown)
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as e:
        raise GuestBuildError(f"command `{shown}` failed: {cmd[0]} not found") from e
    except subprocess.TimeoutExpired as e:
        raise GuestBuildError(f"command `{shown}` timed out after {timeout:.0f} s") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        extra = f" ({hint})" if hint else ""
        raise GuestBuildError(
            f"command `{shown}` failed with exit code {proc.returncode}{extra}:\n{tail}"
        )
    return proc


def resolve_kernel_package() -> str:
    """Return the versioned kernel package that ``linux-image-cloud-amd64`` depends on."""
    proc = _run(
        ["apt-cache", "depends", "--important", META_PACKAGE],
        timeout=TOOL_TIMEOUT,
        hint="are the package lists there? run `apt-get update`",
    )
    pattern = re.compile(r"^\s*\|?Depends:\s*(linux-image-\d\S*-cloud-amd64)\s*$")
    for line in proc.stdout.splitlines():
        m = pattern.match(line)
        if m:
            return m.group(1)
    raise GuestBuildError(
        f"command `apt-cache depends --important {META_PACKAGE}` named no "
        f"linux-image-*-cloud-amd64 package (run `apt-get update`?); output:\n{proc.stdout}"
    )


def _apt_download(package: str, dest: Path) -> Path:
    _run(
        # Running as root, apt would drop to the _apt user, who cannot write into our
        # private temp dir: download as ourselves.
        ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package],
        timeout=APT_TIMEOUT,
        cwd=dest,
        hint="no network or no package lists?",
    )
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if len(debs) != 1:
        raise GuestBuildError(
            f"`apt-get download {package}` left {len(debs)} matching .deb files in {dest}"
        )
    return debs[0]


def _dpkg_extract(deb: Path, dest: Path) -> None:
    _run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=DPKG_TIMEOUT)


def _busybox_installed() -> Path | None:
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", BUSYBOX_PACKAGE],
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    path = Path("/bin/busybox")
    if proc.returncode == 0 and proc.stdout.strip() == "install ok installed" and path.is_file():
        return path
    return None


def _busybox_binary(workdir: Path) -> Path:
    installed = _busybox_installed()
    if installed is not None:
        return installed
    log.info("%s is not installed; downloading it", BUSYBOX_PACKAGE)
    dl = workdir / "busybox-deb"
    dl.mkdir()
    deb = _apt_download(BUSYBOX_PACKAGE, dl)
    root = workdir / "busybox-root"
    _dpkg_extract(deb, root)
    path = root / "bin" / "busybox"
    if not path.is_file():
        raise GuestBuildError(f"{deb.name} has no /bin/busybox")
    return path


# --------------------------------------------------------------------------------------------
# Kernel modules
# --------------------------------------------------------------------------------------------


def _find_module(modroot: Path, name: str) -> Path | None:
    """Find ``name`` under lib/modules/<release>/kernel, as .ko, .ko.xz, .ko.zst or .ko.gz."""
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        found = sorted(modroot.rglob(f"{name}{suffix}"))
        if found:
            return found[0]
    # Module files may spell '_' as '-' (e.g. virtio-rng.ko).
    alt = name.replace("_", "-")
    if alt != name:
        return _find_module(modroot, alt)
    return None


def _module_bytes(path: Path) -> bytes:
    """Return the module uncompressed: busybox insmod loads only plain ELF modules."""
    data = path.read_bytes()
    name = path.name
    if name.endswith(".ko"):
        return data
    if name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if name.endswith(".ko.zst"):
        proc = subprocess.run(
            ["zstd", "-d", "-c", "-q", str(path)],
            capture_output=True,
            timeout=TOOL_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise GuestBuildError(
                f"command `zstd -d -c -q {path}` failed with exit code {proc.returncode}: "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout
    raise GuestBuildError(f"unknown module format: {path}")


# --------------------------------------------------------------------------------------------
# cpio (newc) writer
# --------------------------------------------------------------------------------------------


class _Cpio:
    """Write a cpio "newc" archive, the format the kernel unpacks as an initramfs.

    Written here rather than by cpio(1) so that device nodes (/dev/console) can be added
    without mknod privileges and the archive is reproducible (mtime 0, fixed owners).
    """

    def __init__(self, out: io.BufferedIOBase) -> None:
        self._out = out
        self._ino = 0

    def _entry(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        *,
        nlink: int = 1,
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,  # uid
            0,  # gid
            nlink,
            0,  # mtime
            len(data),
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # check
        )
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + encoded)
        self._pad(len(header) + len(encoded))
        self._out.write(data)
        self._pad(len(data))

    def _pad(self, n: int) -> None:
        self._out.write(b"\0" * (-n % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0, nlink=1)


def _write_initramfs(
    dest: Path,
    busybox: bytes,
    modules: dict[str, bytes],
    init: str,
    extra: dict[str, tuple[bytes, int]],
) -> None:
    """``extra``: more files by path (no leading slash), with their permission bits."""
    base = ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root",
            "lib", "lib/modules", "mnt", "etc", "var", "var/run")
    parents = {str(parent) for name in extra for parent in Path(name).parents
               if str(parent) != "."}
    with dest.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        cpio = _Cpio(gz)
        for d in sorted(set(base) | parents, key=lambda d: (d.count("/"), d)):
            cpio.directory(d)
        for name, (data, perm) in sorted(extra.items()):
            cpio.file(name, data, perm)
        cpio.char_device("dev/console", 5, 1)
        cpio.file("bin/busybox", busybox, 0o755)
        for name, data in modules.items():
            cpio.file(f"lib/modules/{name}.ko", data)
        cpio.file("init", init.encode(), 0o755)
        cpio.close()


def _deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"], timeout=TOOL_TIMEOUT).stdout.strip()


def _agent_files(work: Path) -> tuple[dict[str, tuple[bytes, int]], dict[str, str]]:
    """The guest agent's files for the initramfs (see tests/guestfiles.py), and the
    versions of the packages they came from."""
    dl = work / "agent-deb"
    dl.mkdir()
    deb = _apt_download(guestfiles.AGENT_PACKAGE, dl)
    root = work / "agent-root"
    _dpkg_extract(deb, root)
    binary = root / guestfiles.AGENT_BINARY
    if not binary.is_file():
        raise GuestBuildError(f"{deb.name} has no /{guestfiles.AGENT_BINARY}")
    try:
        libraries = guestfiles.parse_ldd(_run(["ldd", str(binary)], timeout=TOOL_TIMEOUT).stdout)
    except ValueError as e:
        raise GuestBuildError(f"`ldd {binary}`: {e}") from None
    files: dict[str, tuple[bytes, int]] = {
        guestfiles.AGENT_BINARY: (binary.read_bytes(), 0o755)}
    for library in libraries:  # the loader included, at the path the binary names
        files[str(library).lstrip("/")] = (library.resolve().read_bytes(), 0o755)
    for path, text in guestfiles.scripts().items():
        files[path] = (text.encode(), 0o755)
    files["etc/os-release"] = (guestfiles.OS_RELEASE.encode(), 0o644)
    files["var/run/utmp"] = (guestfiles.utmp_record(), 0o644)
    busybox = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", BUSYBOX_PACKAGE], capture_output=True, text=True,
        timeout=TOOL_TIMEOUT, check=False, stdin=subprocess.DEVNULL,
    ).stdout.strip() or "unknown"
    versions = {guestfiles.AGENT_PACKAGE: _deb_version(deb), "busybox": busybox}
    return files, versions


# --------------------------------------------------------------------------------------------
# Cache and build
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else DEFAULT_CACHE_DIR


def _image_in(entry: Path) -> GuestImage | None:
    image = GuestImage(kernel=entry / "vmlinuz", initrd=entry / "initrd.img")
    if image.kernel.is_file() and image.initrd.is_file():
        return image
    return None


def _newest_cached(cache_dir: Path, digest: str) -> GuestImage | None:
    """Any complete cache entry with this content digest, newest first (offline fallback)."""
    try:
        entries = [p for p in cache_dir.glob(f"*-{digest}") if p.is_dir()]
    except OSError:
        return None
    for entry in sorted(entries, key=lambda p: p.stat().st_mtime, reverse=True):
        image = _image_in(entry)
        if image is not None:
            return image
    return None


@contextlib.contextmanager
def _locked(lock_path: Path, timeout: float) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise GuestBuildError(
                        f"another builder held {lock_path} for more than {timeout:.0f} s"
                    ) from e
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _build_into(staging: Path, package: str, release: str, digest: str) -> None:
    work = staging / "work"
    work.mkdir()
    deb = _apt_download(package, work)
    root = work / "root"
    _dpkg_extract(deb, root)

    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise GuestBuildError(f"{deb.name}: expected one /boot/vmlinuz-*, found {kernels}")
    modroots = sorted((root / "lib" / "modules").glob("*/kernel"))
    if not modroots:
        modroots = sorted((root / "usr" / "lib" / "modules").glob("*/kernel"))
    if len(modroots) != 1:
        raise GuestBuildError(f"{deb.name}: expected one lib/modules/*/kernel, found {modroots}")
    modroot = modroots[0]

    modules: dict[str, bytes] = {}
    sources: dict[str, str] = {}
    for name in REQUIRED_MODULES + OPTIONAL_MODULES:
        path = _find_module(modroot, name)
        if path is None:
            if name in REQUIRED_MODULES:
                raise GuestBuildError(f"{deb.name}: module {name} not found under {modroot}")
            log.warning("%s: optional module %s not found", deb.name, name)
            continue
        modules[name] = _module_bytes(path)
        sources[name] = str(path.relative_to(root))

    busybox = _busybox_binary(work).read_bytes()
    extra, versions = _agent_files(work)
    versions[f"linux-image-{release}"] = deb.name.split("_")[1]
    extra[guestfiles.PACKAGES_FILE] = (guestfiles.packages(versions).encode(), 0o644)

    shutil.copyfile(kernels[0], staging / "vmlinuz")
    _write_initramfs(staging / "initrd.img", busybox, modules, init_script(), extra)
    manifest = {
        "package": package,
        "deb": deb.name,
        "release": release,
        "kernel": kernels[0].name,
        "digest": digest,
        "modules": sources,
        "packages": versions,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(work)
    for p in (staging / "vmlinuz", staging / "initrd.img", staging / "manifest.json"):
        p.chmod(0o644)
    # mkdtemp makes 0700; QEMU may run as another user than the builder.
    staging.chmod(0o755)


def build_guest(cache_dir: Path | None = None) -> GuestImage:
    """Build (or find in the cache) the test guest's kernel and initramfs.

    ``cache_dir`` defaults to ``$VDSM_TEST_GUEST_CACHE`` or ``/var/cache/vdsm-test-guest``.
    Safe against concurrent builders (an flock serialises them, and each entry appears by an
    atomic rename). If the package lists cannot name the kernel package, a cached build of
    the same init script is used; with no such build, :class:`GuestBuildError` is raised.
    """
    cache = (cache_dir if cache_dir is not None else default_cache_dir()).absolute()
    digest = _content_digest()
    try:
        package = resolve_kernel_package()
    except GuestBuildError:
        fallback = _newest_cached(cache, digest)
        if fallback is not None:
            log.warning("cannot resolve the kernel package; using cached %s", fallback.kernel)
            return fallback
        raise

    release = package.removeprefix("linux-image-")
    entry = cache / f"{release}-{digest}"
    image = _image_in(entry)
    if image is not None:
        return image

    try:
        cache.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as e:
        raise GuestBuildError(f"cannot create the guest cache {cache}: {e}") from e
    with _locked(cache / ".lock", LOCK_TIMEOUT):
        image = _image_in(entry)  # built by another builder while we waited
        if image is not None:
            return image
        # Under the lock, leftovers of builders that died are ours to remove.
        for stale in cache.glob(".build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        log.info("building test guest %s into %s", release, entry)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            _build_into(staging, package, release, digest)
            try:
                staging.rename(entry)
            except OSError as e:
                # Another builder (without our lock, e.g. on another host sharing the
                # cache) got there first: theirs is as good as ours.
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    image = _image_in(entry)
    if image is None:
        raise GuestBuildError(f"built the test guest but {entry} is incomplete")
    return image


# --------------------------------------------------------------------------------------------
# Helpers for tests
# --------------------------------------------------------------------------------------------


def kernel_cmdline(mode: str, **kw: int | str) -> str:
    """Kernel command line selecting the guest's ``mode``; ``kw`` become ``vdsm.<key>=<v>``.

    >>> kernel_cmdline("write", mib=16)
    'console=ttyS0 quiet panic=-1 no_timer_check vdsm.mode=write vdsm.mib=16'
    """
    if mode not in MODES:
        raise ValueError(f"unknown guest mode {mode!r}; expected one of {sorted(MODES)}")
    parts = [BASE_CMDLINE, f"vdsm.mode={mode}"]
    for key, value in kw.items():
        text = str(value)
        if not _TOKEN_RE.match(key) or not _TOKEN_RE.match(text):
            raise ValueError(f"bad guest parameter {key}={text!r}")
        parts.append(f"vdsm.{key}={text}")
    return " ".join(parts)


def _log_lines(serial_log: Path, offset: int) -> list[str]:
    try:
        with serial_log.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return []
    return [line.strip("\r") for line in data.decode(errors="replace").split("\n")]


def _matches(line: str, marker: str) -> bool:
    """``marker`` matches a line that starts with it followed by the end or a space."""
    return line.startswith(marker) and line[len(marker) : len(marker) + 1] in ("", " ")


def wait_for_marker(
    serial_log: Path,
    marker: str,
    timeout: float,
    *,
    fail_markers: Sequence[str] = (MARKER_KERNEL_PANIC,),
    offset: int = 0,
    interval: float = 0.05,
) -> str:
    """Poll ``serial_log`` until a line starts with ``marker``; return that line.

    Lines are matched as a whole-word prefix: ``VDSM-GUEST WRITE-DONE 16`` matches a line
    ``VDSM-GUEST WRITE-DONE 16`` but not ``... WRITE-DONE 160``. ``fail_markers`` are
    searched anywhere in a line and raise :class:`GuestFailed` at once; ``offset`` skips the
    bytes of earlier boots in an appended log. Raises :class:`TimeoutError` after
    ``timeout`` seconds; both errors carry the last lines of the log.
    """
    deadline = time.monotonic() + timeout
    while True:
        lines = _log_lines(serial_log, offset)
        for line in lines:
            for bad in fail_markers:
                if bad in line:
                    raise GuestFailed(
                        f"guest failed ({bad!r}) while waiting for {marker!r} in "
                        f"{serial_log}:\n{_tail(lines)}"
                    )
            if _matches(line.lstrip(), marker):
                return line.strip()
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"no {marker!r} in {serial_log} after {timeout:.1f} s; last lines:\n{_tail(lines)}"
            )
        time.sleep(interval)


def counts(serial_log: Path, offset: int = 0) -> list[tuple[str, int]]:
    """The ``(boot id, n)`` of every ``VDSM-GUEST COUNT`` line of a ``count`` guest's log,
    in order (from byte ``offset`` on; a partial last line is skipped)."""
    found = []
    for line in _log_lines(serial_log, offset)[:-1]:  # the last one is not complete yet
        parts = line.strip().split()
        if len(parts) == 4 and " ".join(parts[:2]) == MARKER_COUNT and parts[3].isdigit():
            found.append((parts[2], int(parts[3])))
    return found


def _tail(lines: list[str], n: int = 20) -> str:
    shown = [line for line in lines if line.strip()][-n:]
    return "\n".join(f"  | {line}" for line in shown) if shown else "  (log is empty or absent)"


def domain_xml(
    name: str,
    uuid: str,
    guest: GuestImage,
    mode_cmdline: str,
    serial_log: Path,
    *,
    memory_mib: int = 128,
    disk: Path | None = None,
    disk_type: str = "file",
    disk_format: str = "raw",
) -> str:
    """A minimal TCG domain booting ``guest``; only for testing the builder itself."""
    if disk_type not in ("file", "block"):
        raise ValueError(f"disk_type must be 'file' or 'block', not {disk_type!r}")
    if disk_format not in ("raw", "qcow2"):
        raise ValueError(f"disk_format must be 'raw' or 'qcow2', not {disk_format!r}")
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "uuid").text = uuid
    ET.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(dom, "vcpu").text = "1"
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(guest.kernel)
    ET.SubElement(os_el, "initrd").text = str(guest.initrd)
    ET.SubElement(os_el, "cmdline").text = mode_cmdline
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "destroy"
    ET.SubElement(dom, "on_crash").text = "destroy"
    devices = ET.SubElement(dom, "devices")
    if disk is not None:
        disk_el = ET.SubElement(devices, "disk", type=disk_type, device="disk")
        ET.SubElement(disk_el, "driver", name="qemu", type=disk_format)
        source_attr = "file" if disk_type == "file" else "dev"
        ET.SubElement(disk_el, "source", {source_attr: str(disk)})
        ET.SubElement(disk_el, "target", dev="vda", bus="virtio")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(serial_log), append="on")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.guest", description="Build the vdsm test guest and print its paths."
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help=f"cache directory (default: ${CACHE_ENV} or {DEFAULT_CACHE_DIR})",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    started = time.monotonic()
    try:
        image = build_guest(args.cache)
    except GuestBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"kernel={image.kernel}")
    print(f"initrd={image.initrd}")
    print(f"seconds={time.monotonic() - started:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
