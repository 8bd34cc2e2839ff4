"""Fixtures of the VM layer tests: a libvirt connection, domain cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import libvirt
import pytest

from tests.vm.helpers import qemu_pid


def _quiet(_opaque: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; the tests check the exceptions."""


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    libvirt.registerErrorHandler(_quiet, None)
    c = libvirt.open("qemu:///system")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def domains(conn: libvirt.virConnect) -> Iterator[list[libvirt.virDomain]]:
    """Append every domain a test makes: each is destroyed (and undefined) in teardown, its
    qemu continued first in case the test stopped it."""
    made: list[libvirt.virDomain] = []
    yield made
    for dom in made:
        with contextlib.suppress(libvirt.libvirtError, OSError, ValueError):
            os.kill(qemu_pid(dom), signal.SIGCONT)
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isPersistent():
                dom.undefine()

