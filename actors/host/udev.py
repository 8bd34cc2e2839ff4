"""Device discovery: one actor owns a udev monitor and keeps the list of block devices.

The monitor runs on a thread the actor owns; each uevent becomes a message that refreshes
one entry of the cache, so ``Host.getDeviceList`` answers from memory and a device that
comes or goes (a LUN, a loop device being attached) shows without a rescan. Where udevd runs
the monitor listens to udev's processed events; without udevd (containers, this test
machine) it listens to the kernel's uevents directly. Reading a device's LVM label may hang
on a dead path, so it runs on a small bounded pool with a timeout, never on the actor thread.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyudev

from actors.base import ActorContext, SupervisedActor
from actors.host import blockdev

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0


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
    def __init__(self, monitor: pyudev.Monitor, on_event: Any) -> None:
        self._monitor = monitor
        self._on_event = on_event
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udev-monitor", daemon=True)

    def start(self) -> None:
        self._monitor.start()
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                device = self._monitor.poll(timeout=0.5)
            except OSError as e:
                log.warning("udev monitor: %s", e)
                continue
            if device is not None:
                self._on_event(device.action or "change", device.sys_path)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)


class UdevActor(SupervisedActor):
    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self._context: pyudev.Context | None = None
        self._monitor: _MonitorThread | None = None
        self._probes: ThreadPoolExecutor | None = None
        self._devices: dict[str, dict[str, Any]] = {}
        self._source = ""
        self._events = 0

    def setup(self) -> None:
        self._context = pyudev.Context()
        self._source = "udev" if udevd_running() else "kernel"
        monitor = pyudev.Monitor.from_netlink(self._context, source=self._source)
        monitor.filter_by("block")
        me = self.actor_ref
        self._monitor = _MonitorThread(monitor, lambda a, p: me.tell(_Uevent(a, p)))
        self._monitor.start()
        self._probes = ThreadPoolExecutor(2, thread_name_prefix="udev-probe")
        me.tell(_Rescan())

    def teardown(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
        if self._probes is not None:
            self._probes.shutdown(wait=False, cancel_futures=True)

    def devices(self) -> list[dict[str, Any]]:
        return [dict(self._devices[name]) for name in sorted(self._devices)]

    def describe(self) -> dict[str, Any]:
        return {"source": self._source, "devices": sorted(self._devices),
                "uevents": self._events}

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
        if "pvUUID" in entry or self._probes is None:
            return
        future = self._probes.submit(blockdev.read_lvm_label, entry["devpath"])
        try:
            pv = future.result(PROBE_TIMEOUT)
        except FutureTimeout:
            entry["status"] = "unreachable"
            return
        except OSError as e:
            log.debug("cannot read the label of %s: %s", entry["devpath"], e)
            return
        if pv:
            entry["pvUUID"] = pv
            entry["fsType"] = "LVM2_member"
