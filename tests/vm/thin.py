"""Helpers of the thin-provisioning tests and bench: real guests writing to thin volumes.

A thin volume is a sparse cow volume of a loop domain (a qcow2 inside a file of fixed size
exposed as a loop device), created small with ``initialSize``. The test guest writes 0xff
bytes to it with O_DIRECT (``vdsm.fill=ones``: no zero detection can skip them); afterwards
:func:`check_written` reads the volume back on the host with ``qemu-io`` and verifies every
byte of the range the guest wrote.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from messaging.client import Subscriber
from tests import guest as g
from tests.vm import agent as a

MiB = 1 << 20
EXTENDED = "|storage|volume_extended|"
VM_STATUS = "|virt|VM_status|"


def thin_settings(**thin: Any) -> str:
    """A ``[thin]`` table (the others as given)."""
    lines = ["[thin]", *(f"{k} = {_toml(v)}" for k, v in thin.items())]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def ids(sp: str, sd: str, img: str, vol: str) -> dict[str, str]:
    return {"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol}


def drive(volume: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A VM drive on the volume (a cow virtio disk)."""
    return {"poolID": volume["storagepoolID"], "domainID": volume["storagedomainID"],
            "imageID": volume["imageID"], "volumeID": volume["volumeID"], "format": "cow",
            "iface": "virtio", **extra}


def writer_params(image: g.GuestImage, volume: dict[str, str], mib: int, *, chunk: int = 4,
                  sleep: float | None = None, below: int | None = None,
                  hold: bool = False, **extra: Any) -> dict[str, Any]:
    """vmParams of a guest that writes ``mib`` MiB of 0xff bytes to the volume, ``chunk``
    MiB per dd, sleeping ``sleep`` s after each chunk (a bounded rate), then powers off.
    With ``below`` it writes nothing until the test shrinks its balloon so that its
    ``MemTotal`` is below that many MiB (:data:`tests.guest.MARKER_WRITE_GATE`); with
    ``hold`` it stays up once done, writing nothing more."""
    args: dict[str, Any] = {"mib": mib, "chunk": chunk, "fill": "ones"}
    if sleep is not None:
        args["sleep"] = sleep
    if below is not None:
        args["below"] = below
    if hold:
        args["hold"] = 1
    return a.guest_params(image, "write", drives=[drive(volume, **extra)],
                          kernelArgs=g.kernel_cmdline("write", **args))


def check_written(call: Callable[..., Any], volume: dict[str, str], mib: int) -> None:
    """Every byte of the volume's first ``mib`` MiB is 0xff, as the guest wrote it (the VM
    is gone: the volume is prepared for the API and read with qemu-io)."""
    prepared = call("Image.prepare", **volume)
    try:
        out = subprocess.run(
            ["qemu-io", "-r", "-f", "qcow2", "-c", f"read -P 0xff 0 {mib}M", prepared["path"]],
            capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0 and "fail" not in out.stdout.lower(), \
            f"the data differs: {out.stdout[-2000:]} {out.stderr[-2000:]}"
        assert f"read {mib * MiB}/{mib * MiB} bytes" in out.stdout, out.stdout
    finally:
        assert call("Image.teardown", **volume) is True


class Events:
    """Collects the events of a subscriber until told to stop reading."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def drain(self, until: Callable[[], bool], timeout: float) -> None:
        """Read events until ``until()`` holds (checked between events) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met within {timeout:g} s; events: "
                                   f"{self.seen[-20:]}")
            event = self.sub.receive(min(left, 0.5))
            if event is not None:
                self.seen.append(event)

    def extensions(self, vol: str) -> list[dict[str, Any]]:
        return [p for t, p in self.seen if t == f"{EXTENDED}{vol}"]

    def statuses(self, vm_id: str) -> list[dict[str, Any]]:
        return [p for t, p in self.seen if t == f"{VM_STATUS}{vm_id}"]

    def enospc_pauses(self, vm_id: str) -> int:
        return sum(1 for p in self.statuses(vm_id)
                   if p["status"] == "Paused" and p.get("pauseCode") == "ENOSPC")
