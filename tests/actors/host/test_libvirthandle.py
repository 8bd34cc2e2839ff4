"""LibvirtHandle: leases on real libvirt connections. A retired connection is closed only
once its last lease is back; a stalled one refuses new leases but lets the probe through; a
lease that finds its connection dead reports it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from actors.host.libvirthandle import Connection, LibvirtHandle
from messaging.errors import LibvirtUnavailable
from tests.harness import wait_for
from tests.privlibvirt import PrivateLibvirtd

pytestmark = pytest.mark.timeout(60)


class Closes:
    """Finalizers that record which connection was closed, and close it for real."""

    def __init__(self) -> None:
        self.closed: list[int] = []
        self.conns: list[libvirt.virConnect] = []

    def entry(self, serial: int, uri: str = "test:///default") -> Connection:
        conn = libvirt.open(uri)
        self.conns.append(conn)

        def finalize() -> None:
            self.closed.append(serial)
            conn.close()

        return Connection(conn, serial, finalize)


@pytest.fixture
def closes() -> Iterator[Closes]:
    record = Closes()
    yield record
    for conn in record.conns:
        if conn._o is not None:  # not closed by a finalizer
            conn.close()


def test_a_retired_connection_is_closed_only_when_its_last_lease_is_back(
    closes: Closes,
) -> None:
    handle = LibvirtHandle("test:///default")
    handle.install(closes.entry(1))
    entered, leave = threading.Event(), threading.Event()
    seen: list[libvirt.virConnect] = []

    def stuck_call() -> None:
        with handle.lease() as conn:
            with handle.lease() as nested:  # nested leases share the connection
                seen.extend([conn, nested, handle.get()])
            entered.set()
            leave.wait(30)
            conn.getLibVersion()  # still usable: nobody closed it under us

    thread = threading.Thread(target=stuck_call)
    thread.start()
    try:
        assert entered.wait(10)
        assert seen[0] is seen[1] is seen[2]
        handle.retire("libvirtd has not answered for 15 s")
        assert not handle.connected
        with pytest.raises(LibvirtUnavailable) as e, handle.lease():
            pass
        assert e.value.code == 101 and "15 s" in e.value.message
        detail = handle.describe()["retired"]
        assert [(r["serial"], r["inFlight"]) for r in detail] == [(1, 1)]
        assert closes.closed == []
        handle.install(closes.entry(2))  # the reconnect
        with handle.lease() as conn:
            assert conn.getLibVersion() > 0
    finally:
        leave.set()
        thread.join(10)
    wait_for(lambda: closes.closed == [1], 10, what="the retired connection to be closed")
    wait_for(lambda: handle.describe()["retired"] == [], 10)
    assert handle.connected


def test_an_idle_connection_is_closed_when_retired(closes: Closes) -> None:
    handle = LibvirtHandle("test:///default")
    handle.install(closes.entry(1))
    handle.retire("the agent is stopping")
    handle.join_closers(10)
    assert closes.closed == [1]


def test_a_stalled_connection_refuses_leases_but_not_the_probe(closes: Closes) -> None:
    handle = LibvirtHandle("test:///default")
    handle.install(closes.entry(1))
    handle.stall("libvirtd has not answered for 6 s")
    with pytest.raises(LibvirtUnavailable, match="6 s"):
        handle.check()
    with pytest.raises(LibvirtUnavailable), handle.lease():
        pass
    with handle.probe_lease(1) as conn:
        assert conn.getLibVersion() > 0
    with pytest.raises(LibvirtUnavailable), handle.probe_lease(2):
        pass  # a probe of another connection
    handle.unstall()
    with handle.lease() as conn:
        assert conn.getLibVersion() > 0
    assert closes.closed == []


def test_get_outside_a_lease_is_a_bug(closes: Closes) -> None:
    handle = LibvirtHandle("test:///default")
    handle.install(closes.entry(1))
    with pytest.raises(RuntimeError, match="outside a lease"):
        handle.get()


@pytest.mark.libvirt
@pytest.mark.root
def test_a_lease_that_finds_its_connection_dead_reports_it(
    tmp_path: Path, closes: Closes,
) -> None:
    private = PrivateLibvirtd(tmp_path / "libvirt")
    private.start()
    try:
        handle = LibvirtHandle(private.uri)
        reports: list[tuple[int, str]] = []
        handle.watch(lambda serial, reason: reports.append((serial, reason)))
        handle.install(closes.entry(7, private.uri))
        with handle.lease() as conn:
            assert conn.getLibVersion() > 0
        assert reports == []
        private.kill()
        with pytest.raises(LibvirtUnavailable), handle.lease() as conn:
            try:
                conn.getLibVersion()
            except libvirt.libvirtError as e:
                # Whatever libvirt's code for it, a dead connection is 101.
                raise handle.translate(e) from e
        assert [serial for serial, _ in reports] == [7]
        assert "died" in reports[0][1]
    finally:
        private.kill()
