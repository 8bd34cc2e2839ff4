"""The operations in flight on one VM: a plain helper of :class:`~actors.vm.actor.VmActor`.

An operation's blocking part runs on a :class:`~actors.vm.guestcall.GuestCaller` thread with
a deadline; its outcome comes back to the actor as an :class:`OpDone` message (``notify``
only ``tell``s), and :meth:`InFlight.finish` then runs the operation's ``on_ok`` or
``on_error`` on the actor's thread and resolves the future the verb's caller waits on.

Used on the actor's thread only (not thread-safe). At most one operation of a kind runs at
a time (:meth:`InFlight.check_idle` raises ``VMBusy``); a call abandoned at its deadline
keeps its GuestCaller slot until qemu answers, so the next call of that kind then gets
``GuestCallBusy`` from the caller.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from actors.clock import Clock
from actors.host.libvirthandle import LibvirtHandle
from actors.vm.guestcall import GuestCaller
from messaging.errors import GuestCallTimeout, VMBusy, VMError

log = logging.getLogger(__name__)

CREATE = "VM.create"  # while a VM is being created, nothing else runs on it
INCOMING = "VM.migrationCreate"  # nor while an incoming VM is being prepared
EXCLUSIVE = frozenset({CREATE, INCOMING})


class OpFuture(Future[Any]):
    """The future a verb waits on, knowing by when its operation ends at the latest (its
    deadline, ``time.monotonic()`` seconds): the API derives the request's deadline from it."""

    deadline: float = 0.0


@dataclass(frozen=True)
class OpDone:
    """An operation ended (or missed its deadline): ``future`` holds the outcome."""

    op_id: int
    future: Future[Any]


@dataclass
class Op:
    name: str
    kind: str
    on_ok: Callable[[Any], Any]
    on_error: Callable[[BaseException], None] | None
    events_at_start: int  # the actor's count of lifecycle events when it started
    reply: OpFuture = field(default_factory=OpFuture)
    started: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)


class InFlight:
    def __init__(
        self,
        vm_id: str,
        notify: Callable[[OpDone], None],
        *,
        clock: Clock,
        libvirt: LibvirtHandle | None = None,
        who: str = "",
    ) -> None:
        self.vm_id = vm_id
        self.who = who or vm_id  # how log lines name the VM (id and name)
        self._notify = notify
        self._caller = GuestCaller(vm_id, clock=clock, libvirt=libvirt)
        self._ops: dict[int, Op] = {}
        self._ids = itertools.count(1)

    def submit(
        self,
        name: str,
        kind: str,
        *,
        timeout: float,
        work: Callable[[threading.Event], Any],
        on_ok: Callable[[Any], Any],
        on_error: Callable[[BaseException], None] | None = None,
        events_at_start: int = 0,
    ) -> OpFuture:
        """Start ``work(cancelled)`` on a caller thread; the future the verb waits on.

        ``cancelled`` is set when the operation missed its deadline (or the actor stopped):
        work that finishes late checks it to undo what it did (e.g. a late createXML).
        Raises ``GuestCallBusy`` when the previous call of ``kind`` is stuck.
        """
        op = Op(name, kind, on_ok, on_error, events_at_start)
        op.reply.deadline = time.monotonic() + timeout
        future = self._caller.submit(kind, lambda: work(op.cancelled), timeout=timeout,
                                     name=name)
        op_id = next(self._ids)
        self._ops[op_id] = op
        notify = self._notify
        future.add_done_callback(lambda f: notify(OpDone(op_id, f)))
        return op.reply

    def check_idle(self, *kinds: str) -> None:
        """VMBusy if an operation of one of ``kinds`` (or a create) is running."""
        for op in self._ops.values():
            if op.kind in kinds or op.name in EXCLUSIVE:
                raise VMBusy(vmID=self.vm_id, operation=op.name,
                             age=time.monotonic() - op.started)

    def running(self, *kinds: str) -> bool:
        return any(op.kind in kinds or op.name in EXCLUSIVE for op in self._ops.values())

    def finish(self, done: OpDone, before: Callable[[Op], None]) -> None:
        """Settle the operation of ``done``: ``before(op)``, then its on_ok/on_error, then
        its reply. Exceptions of on_ok fail the verb, never the actor."""
        op = self._ops.pop(done.op_id, None)
        if op is None:
            return
        error = done.future.exception()
        if isinstance(error, GuestCallTimeout):
            op.cancelled.set()
        before(op)
        if error is None:
            try:
                op.reply.set_result(op.on_ok(done.future.result()))
            except Exception as e:  # a bug in on_ok fails the verb, not the actor
                log.exception("VM %s: finishing %s failed", self.who, op.name)
                op.reply.set_exception(VMError(reason=f"{op.name} failed: {e!r}"))
            return
        log.warning("VM %s: %s failed: %s", self.who, op.name, error)
        try:
            if op.on_error is not None:
                op.on_error(error)
        finally:
            op.reply.set_exception(error)

    def close(self) -> None:
        """The actor stops: fail every waiting verb, refuse new calls."""
        self._caller.close()
        for op in self._ops.values():
            op.cancelled.set()
            if not op.reply.done():
                op.reply.set_exception(VMError(reason=f"VM {self.vm_id}: its actor stopped "
                                                      f"while {op.name} was running"))
        self._ops.clear()

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "operations": [{"name": op.name, "kind": op.kind,
                            "age": round(now - op.started, 3)} for op in self._ops.values()],
            "calls": self._caller.describe(),
        }
