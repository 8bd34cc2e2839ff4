"""Helpers of the VM layer tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from messaging.schema.vm import VM_PARAMS

QEMU_RUN_DIR = Path("/run/libvirt/qemu")
VM_ID = "8e1f6a7c-3b52-4d0e-9c39-1d8f0f5e6a21"


def validated(raw: dict[str, Any]) -> dict[str, Any]:
    """vmParams as the API hands them to a handler: checked, defaults filled in."""
    return VM_PARAMS.check(raw, "vmParams")


def raw_params(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"vmName": f"vmtest-{uuid.uuid4().hex[:8]}", "memSize": 128}
    params.update(overrides)
    return params


def qemu_pid(dom: libvirt.virDomain) -> int:
    return int((QEMU_RUN_DIR / f"{dom.name()}.pid").read_text().strip())


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def gone(dom: libvirt.virDomain) -> bool:
    try:
        return not dom.isActive()
    except libvirt.libvirtError:
        return True
