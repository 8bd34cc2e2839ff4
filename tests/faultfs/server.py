"""The faultfs process: ``python -m tests.faultfs SOURCE MOUNTPOINT --control PATH``.

Serves the control socket, then mounts SOURCE at MOUNTPOINT and runs the FUSE loop in the
foreground until the filesystem is unmounted (``umount MOUNTPOINT``) or the process gets
SIGTERM/SIGINT (libfuse unmounts then). With ``--exit-with-parent`` it detaches the mount
and exits when the process that started it dies (a test runner killed before its cleanup
could run), so a crashed test run leaves no mount behind. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import sys
import threading
import time
from pathlib import Path

import mfusepy

from tests.faultfs.control import ControlServer
from tests.faultfs.passthrough import FaultFS
from tests.faultfs.rules import RuleSet

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
MNT_DETACH = 2

PARENT_POLL = 0.5
"""Seconds between checks that the parent still lives (``--exit-with-parent``)."""

MAX_THREADS = 256
"""FUSE worker threads (libfuse's default is 10): enough for many callers held by hangs."""


def exit_with_parent(rules: RuleSet, mountpoint: str) -> None:
    """Once orphaned: release every hang, detach the mount and exit at once.

    Exiting closes the FUSE device, which ends the connection also for copies of the mount
    in other namespaces.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        log.warning("parent %d is gone: unmounting %s", parent, mountpoint)
        rules.clear()
        if _libc.umount2(mountpoint.encode(), MNT_DETACH) != 0:
            log.warning("umount %s: %s", mountpoint, os.strerror(ctypes.get_errno()))
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watch, name="faultfs-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faultfs", description=__doc__)
    parser.add_argument("source", help="the directory served")
    parser.add_argument("mountpoint")
    parser.add_argument("--control", required=True, help="the unix socket of the control server")
    parser.add_argument("--debug", action="store_true", help="libfuse's debug output")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="unmount and exit when the parent process dies")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(name)s: %(message)s")
    if not Path(args.source).is_dir():
        parser.error(f"{args.source} is not a directory")
    os.umask(0)  # the kernel already applied the caller's umask to the modes we get
    rules = RuleSet()
    ControlServer(args.control, rules).serve_in_background()
    if args.exit_with_parent:
        exit_with_parent(rules, os.path.realpath(args.mountpoint))
    log.info("serving %s at %s (control %s)", args.source, args.mountpoint, args.control)
    mfusepy.FUSE(FaultFS(args.source, rules), args.mountpoint, foreground=True,
                 debug=args.debug, allow_other=True, fsname="faultfs", subtype="faultfs",
                 max_threads=MAX_THREADS)

    log.info("unmounted %s", args.mountpoint)
    return 0
