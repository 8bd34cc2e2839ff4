"""KSM (kernel samepage merging) through ``/sys/kernel/mm/ksm``: plain reads and writes.

``ksmd`` merges identical pages of processes that asked for it (qemu marks guest memory
MADV_MERGEABLE). Its knobs: ``run`` (0 stop, 1 run, 2 stop and unmerge every shared page),
``pages_to_scan`` (pages per wake-up), ``sleep_millisecs`` (between wake-ups) and
``merge_across_nodes`` (NUMA; the kernel refuses a change while pages are shared: EBUSY).
Its counters: ``pages_shared`` (distinct shared pages), ``pages_sharing`` (pages merged into
them: the memory saved), ``full_scans``.

Reads are cheap local files and run on the owning actor's thread; writes go through a
:class:`~actors.calls.BoundedCaller` thread (``run = 2`` unmerges everything before it
returns, which can take a while on a busy host).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from messaging.errors import HostSettingError

SYSFS = Path("/sys/kernel/mm/ksm")
KNOBS = ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes")
COUNTERS = ("pages_shared", "pages_sharing", "full_scans")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class KsmSettings:
    """Knobs to write; None leaves one as it is."""

    run: int | None = None
    pages_to_scan: int | None = None
    sleep_millisecs: int | None = None
    merge_across_nodes: int | None = None

    def items(self) -> list[tuple[str, int]]:
        return [(k, v) for k in KNOBS if (v := getattr(self, k)) is not None]


@dataclass(frozen=True)
class KsmState:
    """What sysfs says (a knob or counter the kernel lacks reads as None)."""

    run: int | None
    pages_to_scan: int | None
    sleep_millisecs: int | None
    merge_across_nodes: int | None
    pages_shared: int | None
    pages_sharing: int | None
    full_scans: int | None


class KsmSysfs:
    def __init__(self, root: Path = SYSFS) -> None:
        self.root = root

    @property
    def available(self) -> bool:
        return (self.root / "run").exists()

    def read(self) -> KsmState:
        values = {name: self._read(name) for name in (*KNOBS, *COUNTERS)}
        return KsmState(**values)

    def _read(self, name: str) -> int | None:
        # O_NONBLOCK: harmless on sysfs, and whatever else sits there cannot stall the reader
        try:
            fd = os.open(self.root / name, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            return int(os.read(fd, 64).strip())
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)

    def write(self, settings: KsmSettings) -> KsmState:
        """Write the knobs (blocking: on a caller thread). A change of merge_across_nodes
        while pages are shared unmerges them first (``run = 2``), as the kernel requires,
        then restores ``run`` unless ``settings`` sets it. HostSettingError names the knob
        the kernel refused."""
        if not self.available:
            raise HostSettingError(what="KSM", reason=f"{self.root} does not exist (a kernel "
                                                      "without CONFIG_KSM)")
        items = settings.items()
        merge = settings.merge_across_nodes
        if merge is not None and merge != self._read("merge_across_nodes"):
            run = self._read("run")
            if self._read("pages_shared"):
                self._write("run", 2)
            self._write("merge_across_nodes", merge)
            if settings.run is None and run is not None and run != 2:
                self._write("run", run)
            items = [(k, v) for k, v in items if k != "merge_across_nodes"]
        for name, value in items:
            self._write(name, value)
        return self.read()

    def _write(self, name: str, value: int) -> None:
        try:
            (self.root / name).write_text(f"{value}\n")
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            if e.errno == errno.EBUSY and name == "merge_across_nodes":
                reason += " (pages are still shared)"
            raise HostSettingError(what=f"KSM {name}={value}", reason=reason) from e


def saved_pages(state: KsmState) -> int:
    """Bytes KSM saves: every page merged into a shared one."""
    return (state.pages_sharing or 0) * PAGE_SIZE


# --- ksmd's CPU time --------------------------------------------------------------------------


def find_ksmd(proc: Path = Path("/proc")) -> int | None:
    """The pid of the ksmd kernel thread (None if there is none)."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "ksmd":
                return int(entry.name)
        except OSError:
            continue
    return None


def cpu_ticks(pid: int, proc: Path = Path("/proc")) -> int | None:
    """utime + stime of ``pid`` in clock ticks (None if it is gone)."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[11]) + int(fields[12])
