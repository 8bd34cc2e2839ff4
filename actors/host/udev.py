"""Device discovery: one actor owns a udev monitor and keeps the list of block devices.

The monitor runs on a thread the actor owns; each uevent becomes a message that refreshes
one entry of the cache, so ``Host.getDeviceList`` answers from memory and a device that
comes or goes (a LUN, a loop device being attached) shows without a rescan. Where udevd runs
the monitor listens to udev's processed events; without udevd (containers, this test
machine) it listens to the kernel's uevents directly. Reading a device's LVM label may hang
on a dead path, so it runs on a daemon thread joined with a timeout (at most two may be
stuck at once), and happens once per device identity, not on every uevent.
"""

from __future__ import annotations

import logging
import select
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import pyudev

from actors.base import ActorContext, SupervisedActor
from actors.host import blockdev
from messaging.wakepipe import WakePipe

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
MAX_STUCK_PROBES = 2


@dataclass(frozen=True)
class _Uevent:
    action: str
    sys_path: str


@dataclass(frozen=True)
class _Rescan:
    pass


def udevd_running() -> bool:
    return Path("/run/udev/control").exists()


class _MonitorThread:
    """Waits, with no timeout, for the monitor's socket or the wake-up pipe that ``stop``
    writes: an idle host's thread sleeps until a uevent comes (a timeout would wake it a few
    times a second for nothing)."""

    def __init__(self, monitor: pyudev.Monitor, on_event: Any) -> None:
        self._monitor = monitor
        self._on_event = on_event
        self._stopping = threading.Event()
        self._wake = WakePipe()
        self._thread = threading.Thread(target=self._run, name="udev-monitor", daemon=True)

    @property
    def native_id(self) -> int | None:
        return self._thread.native_id

    def start(self) -> None:
        self._monitor.start()
        self._thread.start()

    def _run(self) -> None:
        socket = self._monitor.fileno()
        waiter = select.poll()
        waiter.register(socket, select.POLLIN)
        waiter.register(self._wake.fd, select.POLLIN)
        while not self._stopping.is_set():
            try:
                ready = {fd for fd, _ in waiter.poll()}
                if self._wake.fd in ready:
                    self._wake.drain()
                if socket not in ready or self._stopping.is_set():
                    continue
                device = self._monitor.poll(timeout=0)
            except OSError as e:
                log.warning("udev monitor: %s", e)
                self._stopping.wait(0.5)  # a socket error: no busy loop while it lasts
                continue
            if device is not None:
                self._on_event(device.action or "change", device.sys_path)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.wake()
        self._thread.join(5)
        if not self._thread.is_alive():
            self._wake.close()


class UdevActor(SupervisedActor):
    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self._context: pyudev.Context | None = None
        self._monitor: _MonitorThread | None = None
        self._stuck: list[threading.Thread] = []
        # PV label per (devname, capacity, backing file): a device is read once per identity,
        # not on every uevent (an open loop device turns `losetup -d` into a deferred detach).
        self._labels: dict[tuple[str, int, str], str | None] = {}
        self._devices: dict[str, dict[str, Any]] = {}
        self._source = ""
        self._events = 0

    def setup(self) -> None:
        self._context = pyudev.Context()
        self._source = "udev" if udevd_running() else "kernel"
        monitor = pyudev.Monitor.from_netlink(self._context, source=self._source)
        monitor.filter_by("block")
        me = self.actor_ref

        def post(action: str, path: str) -> None:
            try:
                me.tell(_Uevent(action, path))
            except pykka.ActorDeadError:
                pass  # stopping: the monitor thread ends with the actor

        self._monitor = _MonitorThread(monitor, post)
        self._monitor.start()
        me.tell(_Rescan())

    def teardown(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()

    def devices(self) -> list[dict[str, Any]]:
        return [dict(self._devices[name]) for name in sorted(self._devices)]

    def describe(self) -> dict[str, Any]:
        return {"source": self._source, "devices": sorted(self._devices),
                "uevents": self._events,
                "stuckProbes": sum(1 for t in self._stuck if t.is_alive())}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Uevent):
            self._events += 1
            self._refresh(message.action, message.sys_path)
            return None
        if isinstance(message, _Rescan):
            assert self._context is not None
            for device in self._context.list_devices(subsystem="block"):
                self._refresh("add", device.sys_path, publish=False)
            return None
        return super().on_receive(message)

    def _refresh(self, action: str, sys_path: str, *, publish: bool = True) -> None:
        assert self._context is not None
        name = sys_path.rsplit("/", 1)[-1]
        entry = None
        if action != "remove":
            try:
                device = pyudev.Devices.from_sys_path(self._context, sys_path)
            except pyudev.DeviceNotFoundError:
                device = None
            if device is not None and blockdev.is_candidate(device):
                entry = blockdev.describe(device)
                self._probe_pv(entry)
        previous = self._devices.get(name)
        if entry is None:
            if previous is None:
                return
            del self._devices[name]
            change = "remove"
        else:
            self._devices[name] = entry
            change = "add" if previous is None else "change"
            if previous == entry:
                return
        log.info("block device %s: %s", name, change)
        if publish:
            self.ctx.runtime.events.publish(
                f"|host|block_device|{name}",
                {"devname": name, "action": change,
                 "capacity": entry["capacity"] if entry else 0},
            )

    def _probe_pv(self, entry: dict[str, Any]) -> None:
        if "pvUUID" in entry:
            return
        key = (entry["devname"], entry["capacity"], entry.get("backingFile", ""))
        if key not in self._labels:
            label = self._read_label(entry)
            if label is _UNREACHABLE:
                entry["status"] = "unreachable"
                return
            self._labels = {k: v for k, v in self._labels.items() if k[0] != key[0]}
            self._labels[key] = label if isinstance(label, str) else None
        pv = self._labels[key]
        if pv:
            entry["pvUUID"] = pv
            entry["fsType"] = "LVM2_member"

    def _read_label(self, entry: dict[str, Any]) -> object:
        """The PV UUID, None, or _UNREACHABLE. The read runs on a daemon thread joined with a
        timeout, so a dead path can neither block this actor nor vdsmd's exit."""
        self._stuck = [t for t in self._stuck if t.is_alive()]
        if len(self._stuck) >= MAX_STUCK_PROBES:
            return _UNREACHABLE
        outcome: list[object] = []

        def read() -> None:
            try:
                outcome.append(blockdev.read_lvm_label(entry["devpath"]))
            except OSError as e:
                log.debug("cannot read the label of %s: %s", entry["devpath"], e)
                outcome.append(None)

        thread = threading.Thread(target=read, name="udev-probe", daemon=True)
        thread.start()
        thread.join(PROBE_TIMEOUT)
        if not outcome:
            self._stuck.append(thread)
            log.warning("reading the label of %s did not return within %gs",
                        entry["devpath"], PROBE_TIMEOUT)
            return _UNREACHABLE
        return outcome[0]


_UNREACHABLE = object()
