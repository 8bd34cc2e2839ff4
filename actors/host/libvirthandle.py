"""The libvirt connection as every thread of the agent sees it: leased, never pulled away.

A libvirt connection is used from many threads at once (VM operations, the stats sampler,
host verbs, recovery), and some of their calls are *abandoned* at a deadline while still
running inside libvirt. Closing a connection under such a call is a use-after-free in
libvirt's client (measured: ``virConnectClose`` with two calls in flight left "Object ...
(<NULL-class>) is not a virObjectLockable instance" behind). So nobody closes a connection
that is in use:

- every use of the connection is a **lease**: ``with handle.lease() as conn:`` counts the
  call in flight on that connection; ``handle.get()`` on the leasing thread is that same
  connection (re-entrant: nested leases share it);
- when the connection goes down or is given up, the :class:`LibvirtActor
  <actors.host.libvirtconn.LibvirtActor>` **retires** it: no new lease gets it (they get
  ``LibvirtUnavailable``, code 101), and it is really closed (its ``finalize``: events
  deregistered, ``close()``) on a throwaway ``libvirt-close`` thread only once its last
  lease has been returned; a call stuck forever keeps it open forever: leaking one
  connection beats a segfault;
- while libvirtd does not answer (a **stall**, seen by the actor's probe) new leases are
  refused with ``LibvirtUnavailable`` at once, while the connection itself is kept;
- a lease that ends in an error on a connection that is no longer alive
  (``isAlive()``, a local check) reports it (``on_dead``), so a close that libvirt never
  announced still leads to a reconnect.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import libvirt

from messaging.errors import LibvirtUnavailable

log = logging.getLogger(__name__)

DeadReport = Callable[[int, str], None]  # (serial, reason)


@dataclass(eq=False)
class Connection:
    """One libvirt connection and the calls in flight on it."""

    conn: libvirt.virConnect
    serial: int
    finalize: Callable[[], None]  # deregisters what the actor registered, then closes
    opened: float = field(default_factory=time.monotonic)
    leases: int = 0
    retired: str = ""  # why it was retired; empty while it is the current connection
    retired_at: float = 0.0
    closing: bool = False


class LibvirtHandle:
    """The current connection and the retired ones still in use. Thread-safe."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._current: Connection | None = None
        self._retired: list[Connection] = []
        self._reason = "not connected yet"
        self._stalled = ""  # why new leases are refused while the connection is kept
        self._local = threading.local()
        self._on_dead: DeadReport | None = None
        self._closers: list[threading.Thread] = []

    # --- for the calls ----------------------------------------------------------------------

    @contextlib.contextmanager
    def lease(self) -> Iterator[libvirt.virConnect]:
        """The current connection, not closed before the block ends.

        Raises ``LibvirtUnavailable`` when there is none or libvirtd does not answer."""
        held: Connection | None = getattr(self._local, "held", None)
        if held is not None:  # nested: this thread holds a lease already
            yield held.conn
            return
        entry = self._acquire()
        self._local.held = entry
        try:
            yield entry.conn
        except Exception as e:
            self._check_alive(entry, e)
            raise
        finally:
            self._local.held = None
            self._release(entry)

    @contextlib.contextmanager
    def probe_lease(self, serial: int) -> Iterator[libvirt.virConnect]:
        """A lease on connection ``serial`` even while it is stalled: for the actor's probe,
        which finds out whether libvirtd answers again."""
        with self._lock:
            entry = self._current
            if entry is None or entry.serial != serial:
                raise LibvirtUnavailable(reason=f"connection {serial} is gone")
            entry.leases += 1
        self._local.held = entry
        try:
            yield entry.conn
        finally:
            self._local.held = None
            self._release(entry)

    def get(self) -> libvirt.virConnect:
        """The connection this thread leased. Only valid inside :meth:`lease`."""
        held: Connection | None = getattr(self._local, "held", None)
        if held is None:
            raise RuntimeError("LibvirtHandle.get() outside a lease")
        return held.conn

    def check(self) -> None:
        """Raise ``LibvirtUnavailable`` (with the reason) if a lease would be refused now."""
        with self._lock:
            self._refusal()

    @property
    def connected(self) -> bool:
        """Whether a lease would be granted now."""
        with self._lock:
            return self._current is not None and not self._stalled

    def translate(self, error: libvirt.libvirtError) -> BaseException:
        """A libvirtError on a connection that is no longer alive is ``LibvirtUnavailable``
        (whatever its code: "client socket is closed" is an internal error); any other is
        itself. Call it inside the lease that got the error."""
        held: Connection | None = getattr(self._local, "held", None)
        if held is not None and not is_alive(held.conn):
            return LibvirtUnavailable(reason=str(error))
        translated: BaseException = error
        return translated

    # --- for the libvirt actor --------------------------------------------------------------

    def watch(self, on_dead: DeadReport) -> None:
        """``on_dead(serial, reason)`` when a lease finds its connection dead (any thread)."""
        self._on_dead = on_dead

    def install(self, entry: Connection) -> None:
        """``entry`` becomes the current connection (a previous one, left by an actor that
        died before retiring it, is retired first)."""
        if self._current is not None:
            self.retire("replaced by a new connection")
        with self._lock:
            self._current = entry
            self._stalled = ""
            self._reason = ""

    def stall(self, reason: str) -> None:
        """Refuse new leases (``reason``) but keep the connection."""
        with self._lock:
            self._stalled = reason

    def unstall(self) -> None:
        with self._lock:
            self._stalled = ""

    def retire(self, reason: str) -> None:
        """No new lease gets the current connection; close it once its leases are back."""
        with self._lock:
            entry, self._current = self._current, None
            self._reason = reason
            self._stalled = ""
            if entry is None:
                return
            entry.retired = reason or "retired"
            entry.retired_at = time.monotonic()
            self._retired.append(entry)
            close_now = entry.leases == 0
        log.info("libvirt connection %d retired (%s); %d calls in flight on it",
                 entry.serial, entry.retired, entry.leases)
        if close_now:
            self._close(entry)

    def unavailable(self, reason: str) -> None:
        """Why leases are refused while there is no connection (a failed connect)."""
        with self._lock:
            self._reason = reason

    def join_closers(self, timeout: float) -> None:
        """Wait (bounded) for the closes in progress (the agent is stopping)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._closers):
            thread.join(max(0.0, deadline - time.monotonic()))

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            current = self._current
            return {
                "serial": current.serial if current else None,
                "inFlight": current.leases if current else 0,
                "stalled": self._stalled,
                "retired": [
                    {"serial": e.serial, "reason": e.retired, "inFlight": e.leases,
                     "closing": e.closing, "age": round(now - e.retired_at, 3)}
                    for e in self._retired
                ],
            }

    # --- inside -----------------------------------------------------------------------------

    def _acquire(self) -> Connection:
        with self._lock:
            entry = self._refusal()
            entry.leases += 1
            return entry

    def _refusal(self) -> Connection:
        """The current connection if a lease may have it; else LibvirtUnavailable. Locked."""
        entry = self._current
        if entry is None:
            raise LibvirtUnavailable(reason=self._reason or "not connected")
        if self._stalled:
            raise LibvirtUnavailable(reason=self._stalled)
        return entry

    def _release(self, entry: Connection) -> None:
        with self._lock:
            entry.leases -= 1
            close_now = bool(entry.retired) and entry.leases == 0 and not entry.closing
        if close_now:
            self._close(entry)

    def _close(self, entry: Connection) -> None:
        """Finalize ``entry`` on a thread of its own (closing may wait for libvirtd)."""
        with self._lock:
            if entry.closing:
                return
            entry.closing = True

        def run() -> None:
            try:
                entry.finalize()
            except Exception:
                log.exception("closing libvirt connection %d failed", entry.serial)
            with self._lock:
                if entry in self._retired:
                    self._retired.remove(entry)
            log.info("libvirt connection %d closed", entry.serial)

        thread = threading.Thread(target=run, name=f"libvirt-close-{entry.serial}", daemon=True)
        self._closers = [t for t in self._closers if t.is_alive()] + [thread]
        thread.start()

    def _check_alive(self, entry: Connection, error: Exception) -> None:
        if entry.retired or is_alive(entry.conn):
            return
        reason = f"the connection died: {error}"
        log.warning("libvirt connection %d is dead (%s)", entry.serial, error)
        if self._on_dead is not None:
            self._on_dead(entry.serial, reason)


def is_alive(conn: libvirt.virConnect) -> bool:
    """``isAlive()``: a local check of the client's socket, no RPC."""
    try:
        return bool(conn.isAlive() == 1)
    except (libvirt.libvirtError, TypeError, AttributeError):  # closed: no C object left
        return False
