from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors.storage import mount
from actors.storage.mount import Connection, Connector
from messaging.errors import InvalidParams, StorageConnectionError
from tests.storage.helpers import is_mounted, loop_device, sh, sparse_file

MiB = 1 << 20


@pytest.mark.timeout(10)
def test_escape_is_one_reversible_component() -> None:
    assert mount.escape("/srv/data") == "_srv_data"
    assert mount.escape("server:/export/a_b%") == "server:_export_a%5Fb%25"
    assert mount.escape("/a_/b") != mount.escape("/a/_b")
    for bad in ("", ".", "..", "x" * 300):
        with pytest.raises(InvalidParams):
            mount.escape(bad)


@pytest.mark.timeout(10)
def test_parse_mounts_decodes_octal_escapes() -> None:
    text = ("/dev/loop0 /mnt/a\\040b ext4 rw,relatime 0 0\n"
            "srv:/x /mnt/n nfs4 rw,soft,timeo=600 0 0\n\n")
    entries = mount.parse_mounts(text)
    assert entries[0] == mount.MountEntry("/dev/loop0", "/mnt/a b", "ext4", ("rw", "relatime"))
    assert entries[1].fstype == "nfs4"
    assert "soft" in entries[1].options


@pytest.mark.timeout(10)
def test_connection_validation() -> None:
    with pytest.raises(InvalidParams, match="absolute"):
        Connection("localfs", "relative/dir")
    with pytest.raises(InvalidParams, match="host:/export"):
        Connection("nfs", "/just/a/path")
    with pytest.raises(InvalidParams, match="vfs_type"):
        Connection("posixfs", "/dev/x", vfs_type="ext4;rm")
    with pytest.raises(InvalidParams, match="whitespace"):
        Connection("posixfs", "/dev/x", mnt_options="ro, rw")
    with pytest.raises(InvalidParams, match="nfs_version"):
        Connection("nfs", "h:/e", nfs_version="5")
    conn = Connection.from_params("nfs", {"id": "1", "connection": "h:/e", "nfs_timeo": 50,
                                          "nfs_retrans": 0})
    assert (conn.nfs_timeo, conn.nfs_retrans) == (50, 0)
    assert conn.vfs_type == "nfs"


@pytest.mark.timeout(10)
def test_nfs_command_line(tmp: Path) -> None:
    connector = Connector(tmp / "mnt")
    conn = Connection("nfs", "server.example:/exports/data", nfs_version="4.2", nfs_timeo=100,
                      nfs_retrans=3, mnt_options="noatime")
    assert connector.mount_command(conn) == [
        "mount", "-t", "nfs", "-o", "soft,nosharecache,timeo=100,retrans=3,vers=4.2,noatime",
        "server.example:/exports/data", str(tmp.resolve() / "mnt" / "server.example:_exports_data"),
    ]


@pytest.mark.timeout(60)
def test_nfs_mount_failure_is_a_clear_error(tmp: Path) -> None:
    # Loopback with nothing listening: the attempt never leaves this machine.
    connector = Connector(tmp / "mnt", timeout=20)
    conn = Connection("nfs", "127.0.0.1:/nothing", nfs_version="4.2", nfs_timeo=10,
                      nfs_retrans=1, mnt_options="retry=0")
    started = time.monotonic()
    with pytest.raises(StorageConnectionError) as info:
        connector.connect(conn)
    assert time.monotonic() - started < 30
    assert info.value.code == 210
    assert "127.0.0.1:/nothing" in info.value.message
    assert not connector.path(conn).exists()  # the mount point was removed
    connector.disconnect(conn)  # nothing connected: nothing to do


@pytest.mark.timeout(10)
def test_localfs_link_is_idempotent(tmp: Path) -> None:
    data = tmp / "data"
    data.mkdir()
    connector = Connector(tmp / "mnt")
    conn = Connection("localfs", str(data))
    path = connector.connect(conn)
    assert path.is_symlink()
    assert path.resolve() == data
    assert connector.connect(conn) == path
    assert connector.is_connected(conn)
    connector.disconnect(conn)
    connector.disconnect(conn)
    assert not path.exists()
    with pytest.raises(StorageConnectionError, match="not a directory"):
        connector.connect(Connection("localfs", str(tmp / "missing")))


@pytest.mark.timeout(60)
def test_posixfs_ext4_on_loop(tmp: Path) -> None:
    image = sparse_file(tmp / "fs.img", 32 * MiB)
    connector = Connector(tmp / "mnt")
    with loop_device(image) as device:
        sh("mkfs.ext4", "-q", device, timeout=60)
        conn = Connection("posixfs", device, vfs_type="ext4", mnt_options="noatime")
        path = connector.path(conn)
        try:
            assert connector.connect(conn) == path
            assert is_mounted(path)
            entry = connector.mounted(conn)
            assert entry is not None
            assert entry.fstype == "ext4"
            assert "noatime" in entry.options
            assert connector.connect(conn) == path  # idempotent
            assert connector.is_connected(conn)
            (path / "file").write_text("x")
            other = Connection("posixfs", device + "x", vfs_type="ext4")
            assert connector.path(other) != path
        finally:
            connector.disconnect(conn)
        assert not is_mounted(path)
        assert not path.exists()
        connector.disconnect(conn)  # idempotent


@pytest.mark.timeout(60)
def test_posixfs_bad_filesystem_type(tmp: Path) -> None:
    image = sparse_file(tmp / "blank.img", 8 * MiB)
    connector = Connector(tmp / "mnt", timeout=20)
    with loop_device(image) as device:
        conn = Connection("posixfs", device, vfs_type="ext4")
        with pytest.raises(StorageConnectionError) as info:
            connector.connect(conn)
        assert "mount" in info.value.message
        assert not connector.path(conn).exists()
