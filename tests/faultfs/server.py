"""The faultfs process: ``python -m tests.faultfs SOURCE MOUNTPOINT --control PATH``.

Serves the control socket, then mounts SOURCE at MOUNTPOINT and runs the FUSE loop in the
foreground until the filesystem is unmounted (``umount MOUNTPOINT``) or the process gets
SIGTERM/SIGINT (libfuse unmounts then). Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import mfusepy

from tests.faultfs.control import ControlServer
from tests.faultfs.passthrough import FaultFS
from tests.faultfs.rules import RuleSet

log = logging.getLogger(__name__)

MAX_THREADS = 256
"""FUSE worker threads (libfuse's default is 10): enough for many callers held by hangs."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faultfs", description=__doc__)
    parser.add_argument("source", help="the directory served")
    parser.add_argument("mountpoint")
    parser.add_argument("--control", required=True, help="the unix socket of the control server")
    parser.add_argument("--debug", action="store_true", help="libfuse's debug output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(name)s: %(message)s")
    if not Path(args.source).is_dir():
        parser.error(f"{args.source} is not a directory")
    os.umask(0)  # the kernel already applied the caller's umask to the modes we get
    rules = RuleSet()
    ControlServer(args.control, rules).serve_in_background()
    log.info("serving %s at %s (control %s)", args.source, args.mountpoint, args.control)
    mfusepy.FUSE(FaultFS(args.source, rules), args.mountpoint, foreground=True,
                 debug=args.debug, allow_other=True, fsname="faultfs", subtype="faultfs",
                 max_threads=MAX_THREADS)

    log.info("unmounted %s", args.mountpoint)
    return 0
