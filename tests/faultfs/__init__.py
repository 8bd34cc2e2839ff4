"""faultfs: a fault-injecting FUSE passthrough filesystem for tests of shared storage.

A test puts the storage under test (a domain, a lease area, a mailbox) on a faultfs mount and
then makes chosen files fail, stall or hang, for real, as the kernel reports them to every
process that uses them: vdsmd, its lease keeper, qemu-img, ``dd``. Not part of the agent.

The server is its own process::

    python -m tests.faultfs SOURCE MOUNTPOINT --control PATH

It serves SOURCE at MOUNTPOINT through libfuse 3 (``mfusepy``, ctypes) with ``direct_io``:
every read and write reaches it uncached, so O_DIRECT reads and writes of 512 B and 4 KiB from
other processes work (the backing files are opened *without* O_DIRECT) and cost ~40 µs
(read) and ~95 µs (write) for 4 KiB here (``test_o_direct_cost`` logs them). Attribute
and entry caching are off, so a ``stat`` rule sees every ``stat`` and path lookup. It
supports open/create/read/write/truncate/fallocate/rename/unlink/link/mkdir/rmdir/readdir/
stat/chmod/chown/utimens/symlink/readlink/fsync/fsyncdir/statfs/access, files unlinked
while open, and files used as loop device backing files (``losetup`` over a file on the
mount; tested). Not supported: xattrs, ``mmap(MAP_SHARED)`` of a file on the mount (ENODEV
under ``direct_io``; MAP_PRIVATE works), rename flags (mfusepy drops them: RENAME_NOREPLACE
acts as a plain rename), and POSIX locks beyond the kernel's local ones.

Faults
------
A rule matches a glob relative to the mount (``fnmatch``: ``*`` also crosses ``/``, so
``"*/dom_md/metadata"`` is every domain's metadata), an operation class and optionally a
process (``pid``: that process and its descendants, e.g. one vdsmd of several sharing the
storage). Operation classes: ``read`` (read, readdir, readlink), ``write`` (write, truncate,
fallocate, chmod, chown, utimens), ``open`` (open, create), ``fsync`` (fsync, fsyncdir),
``stat`` (getattr, statfs, access), ``namespace`` (mkdir, rmdir, unlink, rename, symlink,
link, mknod), ``close`` (flush) and ``any``. Effects: ``eio`` (fail; ``errno`` picks
another error, e.g. ``"ENOSPC"``), ``delay`` (sleep ``seconds``, then do it), ``hang`` (block
until the rule is removed or ``clear()``). A caller held by a delay or hang sleeps in the
kernel uninterruptibly, like a process whose block device stopped answering: SIGKILL takes
effect only when the operation is released (this is what the kernel does once a FUSE request
reached its server). ``killable=True`` makes the held operation end with EINTR as soon as
its caller has a SIGKILL pending, so the caller dies (as on NFS, whose waits are killable).
``count=N`` applies a rule to the next N matching
operations only; ``probability=p`` to each with chance p. Rules are tried in the order added;
the first that applies decides. A change is in force for the next operation once the
:class:`FaultControl` call returned. ``clear()`` drops every rule and releases every hang
(and cuts every delay short) at once.

Use
---
The ``faultfs`` fixture (``tests/faultfs/plugin.py``, registered for the whole suite)::

    def test_something(faultfs):
        mountpoint, control, source = faultfs
        (mountpoint / "f").write_bytes(b"x" * 4096)
        rule = control.eio("f", "read")           # reads of f fail with EIO
        control.delay("*/ids", 1.5, "write")     # writes of any ids file take >= 1.5 s
        control.hang("*/leases", "any", pid=vdsmd_pid)  # that vdsmd's lease I/O hangs
        control.wait_blocked(1)                   # until something is held by a hang
        control.remove(rule)
        control.clear()

Outside pytest, :func:`faultfs_mount` (a context manager) does the same. The mount, the
server's log (``faultfs.log``) and the backing directory are under the given directory.
Should the test process die before its cleanup runs (SIGKILL), the server, started with
``--exit-with-parent``, sees its parent gone, releases every hang and unmounts itself.

Limits
------
- The kernel serializes O_DIRECT writes to one file (libfuse 3.14 cannot ask for parallel
  direct writes): while a write to a file is held by a hang, other processes' writes to
  *the same file* wait behind it, even with a ``pid`` rule that spares them. Reads, and
  writes to other files, are not held. Real shared storage seen from several hosts does not
  do that; a test of one host's stalled writes should use separate files per host, or
  expect it. A process waiting behind the held write sleeps uninterruptibly (the inode
  lock) until the hang is released or the server dies.
- A caller held by a hang is not killable unless its rule is ``killable`` (see above);
  killing the server ends every pending operation with ECONNABORTED/ENOTCONN.
- Mount namespaces created while the mount exists keep a copy of it (see
  :mod:`tests.faultfs.mounting`); cleanup kills the server so those copies answer ENOTCONN.
"""

from tests.faultfs.control import ControlError, FaultControl
from tests.faultfs.mounting import FaultFSMount, faultfs_mount

__all__ = ["ControlError", "FaultControl", "FaultFSMount", "faultfs_mount"]
