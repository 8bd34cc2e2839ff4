"""A LibvirtHandle over a test's own connection, standing in for the LibvirtActor's."""

from __future__ import annotations

from typing import Any

from actors.host.libvirthandle import Connection, LibvirtHandle


def handle_over(conn: Any, uri: str = "test:///given") -> LibvirtHandle:
    """A handle whose current connection is ``conn``; the handle never closes it (the test
    owns it)."""
    handle = LibvirtHandle(uri)
    handle.install(Connection(conn, 1, finalize=lambda: None))
    return handle
