"""Calls that may hang on a stuck qemu, run off the caller's thread with a deadline.

A libvirt call that needs qemu's monitor blocks for as long as qemu does not answer: a
SIGSTOPped (or live-locked) qemu keeps ``dom.suspend()``, ``dom.blockStats()``,
``qemuMonitorCommand`` or the first ``getAllDomainStats`` over it waiting *forever* (measured
here: still blocked after 300 s; it returns ~10 ms after SIGCONT). While that call holds the
domain's job, other job-taking calls on the domain fail after libvirt's own 30 s wait with
``VIR_ERR_OPERATION_TIMEOUT`` ("cannot acquire state change lock"; turned into
:class:`GuestCallTimeout` here), ``getAllDomainStats`` without ``NOWAIT`` waits those 30 s and
then returns the domain's partial record, with ``NOWAIT`` it returns the partial record at
once, and job-free calls (``dom.info()``, ``dom.state()``, ``dom.XMLDesc()``) still answer at
once. ``dom.destroy()`` works on a stopped qemu but takes ~11.5 s (SIGTERM, a 10 s grace,
SIGKILL), and the stuck call then fails with "Unable to read from monitor".

:class:`GuestCaller` is a :class:`~actors.calls.BoundedCaller` with the VM errors: each call
runs on a thread of its own with a deadline on the shared clock, and resolves its future by
the deadline with the call's result, its exception, or :class:`GuestCallTimeout`. A call
still running at its deadline is *abandoned*: counted, logged, and left to finish whenever
qemu answers. A caller has at most ``max_outstanding`` calls in flight per *kind* (default
one), an abandoned one included; another call of that kind meanwhile fails at once with
:class:`GuestCallBusy`, so a stuck VM costs a bounded number of threads and nobody queues
behind it. One caller per VM; a host-wide sampler uses one with a larger ``max_outstanding``
for the bulk stats call (each stuck domain can trap one bulk call; later ones, made with
``NOWAIT``, skip that domain).

Given the :class:`~actors.host.libvirthandle.LibvirtHandle`, every call holds a lease on the
libvirt connection for as long as it runs (abandoned or not): the connection it uses is
never closed under it, and ``handle.get()`` on the call's thread is that connection.
"""

from __future__ import annotations

import time

import libvirt

from actors.calls import BoundedCaller, Call
from actors.clock import Clock
from actors.host.libvirthandle import LibvirtHandle
from messaging.errors import GuestCallBusy, GuestCallTimeout


class GuestCaller(BoundedCaller):
    """Runs the calls of one VM (``owner``), each on a thread, each with a deadline."""

    thread_prefix = "guestcall"

    def __init__(
        self,
        owner: str,
        *,
        clock: Clock,
        max_outstanding: int = 1,
        libvirt: LibvirtHandle | None = None,
    ) -> None:
        super().__init__(owner, clock=clock, max_outstanding=max_outstanding,
                         lease=libvirt.lease if libvirt is not None else None)

    def timeout_error(self, call: Call) -> Exception:
        return GuestCallTimeout(vmID=self.owner, call=call.name, timeout=call.timeout)

    def busy_error(self, call: str, kind: str, pending: Call) -> Exception:
        return GuestCallBusy(vmID=self.owner, call=call, kind=kind, pending=pending.name,
                             age=time.monotonic() - pending.started)

    def translate(self, call: Call, error: Exception) -> Exception:
        if isinstance(error, libvirt.libvirtError) and \
                error.get_error_code() == libvirt.VIR_ERR_OPERATION_TIMEOUT:
            # libvirt gave up waiting for the domain's job after its own 30 s.
            return GuestCallTimeout(vmID=self.owner, call=call.name,
                                    timeout=time.monotonic() - call.started)
        return error
