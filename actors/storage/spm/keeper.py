"""The lease keeper process: ``python -m actors.storage.spm.keeper`` (started by vdsmd).

One keeper per connected pool. Its main thread owns the PAIR socket to vdsmd and decides; the
renewal thread (:mod:`~actors.storage.spm.renewer`) renews the host id; acquisitions and
releases of the SPM lease run on a short-lived thread each; the fencer
(:mod:`~actors.storage.spm.fencer`) kills the writer when the lease runs out. Every other
thread only reports to the main loop (a queue plus a wake-up pipe in its poller).

Messages from vdsmd (msgpack maps): ``{"op": "hb"}`` every heartbeat interval,
``{"op": "acquire"}``, ``{"op": "release"}``, ``{"op": "shutdown"}``. The keeper pushes
``{"ev": "state", ...}`` (see :meth:`Keeper.snapshot`) on every change and after every
renewal. See docs/spm.md.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from actors.storage.spm import fence as fences
from actors.storage.spm import procutil
from actors.storage.spm.fencer import Fencer
from actors.storage.spm.journal import BackgroundJournal
from actors.storage.spm.keeperconf import KeeperConfig
from actors.storage.spm.leaseops import DEAD, LeaseHeld, LeaseOps
from actors.storage.spm.libops import LibLeaseOps
from actors.storage.spm.renewer import HostIdState, Renewer
from actors.storage.spm.writerconf import WriterConfig
from actors.storage.spm.writerproc import WriterProcess
from messaging.wakepipe import WakePipe

log = logging.getLogger("vdsm-keeper")

FREE, CONTEND, SPM = "Free", "Contend", "SPM"
MAX_MESSAGE = 64 * 1024


class Keeper:
    def __init__(self, config: KeeperConfig, ops: LeaseOps, *, fast_first: bool) -> None:
        self.config = config
        self.ops = ops
        self.status = FREE
        self.lver = 0
        self.reason = ""
        self.releasing = False
        self.attempts = 0  # acquisitions asked for; vdsmd matches outcomes to its asks
        self.pending_acquire = False
        self.writer: WriterProcess | None = None
        self.last_hb = time.monotonic()
        self.stopping = threading.Event()
        self.exit_code = 0
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._wakeup = WakePipe()
        self.fence = fences.FenceWriter(config.fence_path, config.host_id)
        self.journal = (BackgroundJournal(Path(config.journal_dir), config.host_id)
                        if config.journal_dir else None)
        self.fencer = Fencer(lambda pgid, late: self._post("fenced", pgid, late))
        self.renewer = Renewer(ops, renew_interval=config.renew_interval,
                               on_change=lambda st: self._post("hostid", st),
                               fast_first=fast_first, writer_dead=self._writer_dead)
        self._sock: zmq.Socket[bytes] | None = None

    # --- plumbing ----------------------------------------------------------------------

    def _post(self, *event: Any) -> None:
        self._inbox.put(event)
        self._wakeup.wake()

    def _writer_dead(self) -> bool:
        writer = self.writer
        return writer is None or writer.exited

    def _send(self, message: dict[str, Any]) -> None:
        if self._sock is None:
            return
        try:
            self._sock.send(msgpack.packb(message), zmq.NOBLOCK)
        except zmq.Again:
            pass  # vdsmd is not reading (stopped?): the next push carries the state anyway

    def snapshot(self) -> dict[str, Any]:
        host = self.renewer.state
        leader = host.leader
        if self.status == SPM:  # this keeper's own acquisition: newer than the last read of
            spm_id, spm_lver = self.config.host_id, self.lver  # the leader record
        else:
            spm_id = leader.owner if leader and leader.held else -1
            spm_lver = leader.lver if leader else -1
        return {
            "ev": "state", "pid": os.getpid(), "spUUID": self.config.sp_uuid,
            "hostId": {"state": host.state, "generation": host.generation,
                       "renewals": host.renewals, "failures": host.failures,
                       "lastRenewal": host.last_renewal, "error": host.error},
            "deadline": host.deadline, "liveHosts": list(host.live_hosts),
            "observingSince": host.observing_since, "observedAt": host.observed_at,
            "spm": {"status": self.status, "lver": self.lver, "reason": self.reason,
                    "releasing": self.releasing, "attempts": self.attempts,
                    "spmId": spm_id, "spmLver": spm_lver,
                    "ownerLiveness": host.owner_liveness},
            "writer": self.writer.describe() if self.writer else None,
            "fence": self._fence_now().to_wire(),
        }

    def _fence_now(self) -> fences.Fence:
        host = self.renewer.state
        if self.status == SPM:  # published before the writer starts: it reads it at once
            pid = self.writer.pid if self.writer is not None else 0
            return fences.Fence(fences.SPM, self.lver, _ns(host.deadline - self.config.margin),
                                self.config.host_id, pid, _ns(host.deadline))
        return fences.Fence(fences.NONE, self.lver, 0, self.config.host_id, 0)

    def _publish_fence(self) -> None:
        f = self._fence_now()
        self.fence.publish(f.state, f.lver, f.deadline_ns, f.writer_pid, f.expiry_ns)

    def _push(self) -> None:
        self._send(self.snapshot())

    # --- the main loop -----------------------------------------------------------------

    def run(self) -> int:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = context.socket(zmq.PAIR)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        sock.sndhwm = 100
        sock.bind(self.config.endpoint)
        Path(self.config.endpoint.removeprefix("ipc://")).chmod(0o600)
        self._sock = sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wakeup.fd, zmq.POLLIN)
        self.renewer.begin()
        try:
            while not self.stopping.is_set():
                events = dict(poller.poll(self._poll_ms()))
                if sock in events:
                    self._drain_socket(sock)
                if self._wakeup.fd in events:
                    self._wakeup.drain()
                self._handle_inbox()
                self._watch_agent()
                self._watch_parent()
                if not self.renewer.alive:
                    log.error("the renewal thread is gone: exiting (vdsmd restarts the keeper)")
                    self.exit_code = 1
                    break
        finally:
            self._shutdown()
            sock.close(linger=0)
            context.term()
        return self.exit_code

    def _poll_ms(self) -> int:
        return int(min(self.config.renew_interval, self.config.agent_timeout / 4) * 1000)

    def _drain_socket(self, sock: zmq.Socket[bytes]) -> None:
        for _ in range(100):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = msgpack.unpackb(frame, raw=False, strict_map_key=True)
            except (ValueError, msgpack.ExtraData, msgpack.FormatError) as e:
                log.warning("dropped an undecodable message from vdsmd: %s", e)
                continue
            if isinstance(message, dict):
                self._command(str(message.get("op", "")))

    def _command(self, op: str) -> None:
        self.last_hb = time.monotonic()
        if op == "hb":
            return
        if op == "acquire":
            self._acquire()
        elif op == "release":
            self._release("released by vdsmd")
        elif op == "shutdown":
            self.stopping.set()
        elif op == "state":
            self._push()
        else:
            log.warning("unknown command %r from vdsmd", op[:40])

    def _handle_inbox(self) -> None:
        while True:
            try:
                event = self._inbox.get_nowait()
            except queue.Empty:
                return
            kind = event[0]
            if kind == "hostid":
                self._on_hostid(event[1])
            elif kind == "acquired":
                self._on_acquired(event[1])
            elif kind == "acquire-failed":
                self.status, self.reason = FREE, event[1]
            elif kind == "released":
                self.releasing = False
            elif kind == "fenced":
                self._on_fenced(event[1], event[2])
            elif kind == "writer":
                self._on_writer(event[1], event[2], event[3])
            self._push()

    # --- host id and fencing -------------------------------------------------------------

    def _on_hostid(self, state: HostIdState) -> None:
        if self.pending_acquire and state.state == "live" and self.status == FREE:
            self.pending_acquire = False
            self._acquire()
        if self.status == SPM:
            if state.state == "live":
                self.fencer.extend(state.deadline - self.config.margin)
                self._publish_fence()
            else:  # lost: the fencer killed the writer at the deadline (or does so now)
                self._lose(f"host id {state.state}: {state.error}")
        if (self.config.auto_contend and self.status == FREE and not self.releasing
                and state.state == "live" and self._agent_alive()
                and (state.leader is None or not state.leader.held
                     or state.owner_liveness == DEAD)):
            log.info("no live SPM: contending by myself (auto_contend)")
            self._acquire()

    def _on_fenced(self, pgid: int, late: float) -> None:
        self._journal_kill(pgid, "fenced", late)
        self._lose("fenced: the lease could not be renewed in time")

    def _kill_writer(self, why: str) -> None:
        """SIGKILL the writer's group now (a release, a loss), and journal it."""
        pgid = self.fencer.kill_now()
        if pgid is not None:
            self._journal_kill(pgid, why, 0.0)

    def _journal_kill(self, pgid: int, why: str, late: float) -> None:
        if self.journal is not None:
            self.journal.append({"ev": "kill", "writer": pgid, "t": time.monotonic(),
                                 "lver": self.lver, "by": why, "late": late})

    def _lose(self, reason: str) -> None:
        """The role is gone (fenced, host id lost): kill the writer, then give the lease
        record up, or else this host, alive again once its storage answers, would hold it
        forever in the others' eyes. The release writes only while the lease is still ours
        and our host id's deadline has not passed; when it cannot, the host id's generation
        is dropped, which makes the record's owner dead for everyone."""
        if self.writer is not None:
            self._kill_writer("lost")
        self.status, self.reason = FREE, reason
        self._publish_fence()
        log.error("SPM role lost: %s", reason)
        if self.lver and not self.releasing:
            self.releasing = True
            if self.writer is None or self.writer.exited:
                self._release_lease(reason)
            # else: released when the writer's exit is seen (_on_writer)

    # --- acquiring and releasing ---------------------------------------------------------

    def _acquire(self) -> None:
        host = self.renewer.state
        if host.state != "live":  # contend as soon as the host id is ours
            self.pending_acquire = True
            self.reason = f"waiting for the host id ({host.state})"
            return
        self.attempts += 1
        if self.status != FREE or self.releasing:
            self.reason = f"cannot contend while {self.status}" + \
                (" (releasing)" if self.releasing else "")
            return
        self.status, self.reason = CONTEND, ""
        threading.Thread(target=self._contend, name="contend", daemon=True).start()

    def _contend(self) -> None:
        try:
            lver = self.ops.acquire_spm()
        except LeaseHeld as e:
            self._post("acquire-failed", str(e))
            return
        except Exception as e:  # noqa: BLE001 - reported to vdsmd as the reason
            log.warning("acquiring the SPM lease failed: %s", e)
            self._post("acquire-failed", f"acquiring the SPM lease failed: {e}")
            return
        self._post("acquired", lver)

    def _on_acquired(self, lver: int) -> None:
        host = self.renewer.state
        if self.status != CONTEND or host.state != "live" or self.stopping.is_set():
            self.status = FREE
            self._release_lease("acquired too late")
            return
        self.lver = lver
        if time.monotonic() >= host.deadline - self.config.margin:
            self.status = FREE
            self.reason = "the host id ran out while the lease was acquired"
            return
        writer_config = WriterConfig.from_dict(self.config.writer).for_lease(
            lver=lver, endpoint=self.config.writer_endpoint(lver),
            fence_path=str(self.config.fence_path), keeper_pid=os.getpid(),
            journal_dir=self.config.journal_dir)
        self.status = SPM  # the fence needs it; vdsmd sees SPM once the writer is ready
        self._publish_fence()
        self.writer = WriterProcess(writer_config, pidfile=self.config.run / "writer.pid",
                                    on_event=lambda k, p, rc: self._post("writer", k, p, rc))
        self._publish_fence()
        self.fencer.arm(self.writer.pid, host.deadline - self.config.margin)
        log.info("SPM lease acquired: lver %d, writer %d", lver, self.writer.pid)

    def _on_writer(self, kind: str, pid: int, rc: int | None) -> None:
        writer = self.writer
        if writer is None or writer.pid != pid:
            return
        if kind == "ready":
            writer.ready = True
            return
        writer.exited = True
        self.fencer.disarm()
        log.info("writer %d exited with %s", pid, rc)
        if self.status == SPM:  # it crashed: nothing writes now, so the lease can go
            log.error("the writer exited unexpectedly (%s): releasing the SPM lease", rc)
            self._release(f"the writer exited unexpectedly ({rc})")
            return
        if self.releasing and self.status == FREE:
            self._release_lease(self.reason)

    def _release(self, reason: str) -> None:
        if self.status == FREE:
            return
        self.status, self.reason = FREE, reason
        self.releasing = True
        self._publish_fence()  # the writer refuses from now on
        if self.writer is not None and not self.writer.exited:
            self._kill_writer("released")  # the lease is released once it has exited
        else:
            self._release_lease(reason)

    def _release_lease(self, reason: str) -> None:
        self.releasing = True

        def release() -> None:
            try:
                if self.ops.release_spm():
                    log.info("SPM lease released (%s)", reason)
                elif self._leader_names_me():
                    log.error("the SPM lease could not be released in time: dropping the "
                              "host id")
                    self.renewer.drop()
            except Exception as e:  # noqa: BLE001 - fall back to letting the host id go
                log.error("cannot release the SPM lease (%s): dropping the host id", e)
                self.renewer.drop()
            self._post("released")

        threading.Thread(target=release, name="release", daemon=True).start()

    def _leader_names_me(self) -> bool:
        """Whether the renewal thread last saw the leader record held by this host."""
        leader = self.renewer.state.leader
        return (leader is None or (leader.held and leader.owner == self.config.host_id
                                   and leader.lver <= self.lver))

    # --- watching vdsmd ------------------------------------------------------------------

    def _agent_alive(self) -> bool:
        return time.monotonic() - self.last_hb < self.config.agent_timeout

    def _watch_agent(self) -> None:
        if self.status != FREE and not self._agent_alive():
            silent = time.monotonic() - self.last_hb
            log.error("vdsmd sent nothing for %.1f s: giving up the SPM role", silent)
            self._release(f"vdsmd did not answer for {silent:.1f} s")
            self._push()

    def _watch_parent(self) -> None:
        if self.config.parent_pid and os.getppid() != self.config.parent_pid:
            log.error("vdsmd (pid %d) is gone: stopping", self.config.parent_pid)
            self.stopping.set()

    def _shutdown(self) -> None:
        log.info("keeper stopping")
        writer = self.writer
        if writer is not None and not writer.exited:
            self._kill_writer("stopping")
            _wait(lambda: writer.exited or not procutil.start_time(writer.pid),
                  self.config.kill_grace * 4)
        self.fencer.close()
        self.renewer.halt(self.config.io_timeout * 2)
        if self.status != FREE or self.lver:
            try:
                self.ops.release_spm()
            except Exception as e:  # noqa: BLE001 - nothing more to do; it expires
                log.warning("releasing the SPM lease at exit failed: %s", e)
        try:
            self.ops.release_host_id()
        except Exception as e:  # noqa: BLE001
            log.warning("releasing the host id at exit failed: %s", e)
        self.fence.publish(fences.NONE, 0, 0, 0)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def main() -> int:
    config = KeeperConfig.from_json(sys.stdin.read())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s [keeper %(threadName)s] "
                        "%(name)s: %(message)s")
    if config.parent_pid:
        procutil.die_with_parent(signal.SIGTERM, config.parent_pid)
    run = config.run
    run.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A previous keeper of this pool (and its writer) must be gone before this one writes.
    leftover_dead = (procutil.kill_recorded(run / "writer.pid", group=True, timeout=5.0)
                     and procutil.kill_recorded(run / "keeper.pid", group=False, timeout=5.0))
    procutil.write_pidfile(run / "keeper.pid", os.getpid())
    keeper = Keeper(config, LibLeaseOps(config), fast_first=leftover_dead)

    def on_term(_signum: int, _frame: Any) -> None:
        keeper.stopping.set()
        keeper._post("stop")  # wakes the main loop

    signal.signal(signal.SIGTERM, on_term)
    return keeper.run()


if __name__ == "__main__":
    sys.exit(main())
