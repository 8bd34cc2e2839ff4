"""A test bed of several hosts on one machine, for tests (and benchmarks) that need more
than one host: live migration now, networks and fencing later.

Each host is a network namespace plus a private mount namespace with its own virtlogd,
libvirtd (tcp on its address) and, once started, its own vdsmd (a real process, API and
events on tcp with CURVE). The hosts share one L2 segment (a bridge in a switch namespace)
and a directory, :attr:`Bed.shared`, seen at the same path by all of them (VM disks for
migration)::

    with Bed(tmp_path) as bed:                 # namespaces, network, keys, libvirtds
        a, b = bed.start_agents(b={"migration": {"max_incoming": 1}})
        a.call("VM.create", vmID=..., vmParams=...)   # over tcp + CURVE, from a's network
        with a.subscriber("|virt|") as sub: ...
        bed.host("b").domains()                 # b's libvirt, from the test process
    # everything is gone here, also when the block raised

In pytest, the ``bed`` fixture (:mod:`tests.testbed.fixtures`) yields a started two-host bed
and closes it after the test, whatever happened. See docs/testing.md.
"""

from tests.testbed.agent import BedAgent
from tests.testbed.bed import Bed
from tests.testbed.host import BedHost

__all__ = ["Bed", "BedAgent", "BedHost"]
