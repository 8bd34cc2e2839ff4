"""vdsmd: the composition root. Config, the supervision tree, the verb table, signals.

Start order: the run and state directories' locks, ZAP, event publisher, clock, the
process guard, the supervision tree (host services, storage, VMs), then the API server.
Stop order is the reverse, in a ``finally``. Nothing here is global: every actor gets what
it needs as constructor arguments.

The main thread then serves requests to the process (:meth:`Daemon.request`): ``stop``
(SIGTERM, SIGINT: exit 0), ``reload`` (SIGHUP: re-read the authorised CURVE keys, which are
also re-read when their directory changes) and ``fatal`` (an escalation past the root
supervisor, or a dead API or event thread: stop what can be stopped and exit with
EXIT_FATAL, so that the service manager restarts the agent).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pykka
import zmq
from prometheus_client import CollectorRegistry

from actors import api as actors_api
from actors import config as configuration
from actors.base import ActorContext, Ping, Runtime
from actors.clock import Clock
from actors.directory import RUNNING, ActorDirectory, ActorInfo, ServiceRef
from actors.dirlock import DirectoryInUse, DirLock
from actors.host import api as host_api
from actors.host import fenceapi, libvirterrors
from actors.host.libvirtconn import DomainEvent, LibvirtActor, LibvirtHandle
from actors.host.network.service import NetworkService
from actors.host.stats import HostStatsActor, LastSample
from actors.host.udev import UdevActor
from actors.metrics.collector import BoardCollector, Sources
from actors.metrics.requests import RequestMetrics
from actors.metrics.server import MetricsServer
from actors.processguard import ProcessGuard
from actors.storage.service import StorageSubsystem
from actors.subsystem import Deps, Subsystem
from actors.supervisor import ChildSpec, RestartPolicy, Supervisor
from actors.vm.service import VmSubsystem
from messaging import codec, curve, endpoints, logcontext
from messaging.events import EventPublisher
from messaging.schema import SCHEMA
from messaging.server import ApiServer, Binding, ServerConfig

log = logging.getLogger("vdsmd")

ROOT = "/"
EXIT_FATAL = 70  # EX_SOFTWARE; any non-zero status makes systemd's Restart=on-failure act
FATAL_STOP_DEADLINE = 120.0  # a stop after a fatal error that takes longer: os._exit
HOUSEKEEPING_INTERVAL = 1.0  # the main thread's checks (threads alive, key directory)


class Daemon:
    def __init__(self, config: configuration.Config) -> None:
        self.config = config
        self._context: zmq.Context[Any] | None = None
        self._publisher: EventPublisher | None = None
        self._clock: Clock | None = None
        self._guard: pykka.ActorRef[ProcessGuard] | None = None
        self._root: pykka.ActorRef[Supervisor] | None = None
        self._server: ApiServer | None = None
        self._auth: curve.Authenticator | None = None
        self._locks: list[DirLock] = []
        self._control: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._stopping = False
        self._keys_checked = time.monotonic()
        self.directory = ActorDirectory()
        self.libvirt = LibvirtHandle(config.libvirt.uri)
        self.host_stats = LastSample()
        self._subsystems: list[Subsystem] = []
        self._network: NetworkService | None = None
        self._storage: StorageSubsystem | None = None
        self._metrics_server: MetricsServer | None = None

    # --- start/stop ----------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        self._lock_directories()
        libvirterrors.register()  # libvirt's errors to the log, not raw lines on stderr
        self._context = zmq.Context()
        curve_config = self._curve_config()
        if curve_config is not None:
            self._auth = curve.start_authenticator(self._context, curve_config)
        self._publisher = EventPublisher(
            context=self._context, endpoint=cfg.events_endpoint, curve=curve_config,
            insecure_tcp=cfg.events.insecure_tcp, hwm=cfg.events.hwm,
        )
        self._publisher.start()
        self._clock = Clock()
        self._clock.start()
        runtime = Runtime(
            events=self._publisher,
            clock=self._clock,
            directory=self.directory,
            fault_injection=cfg.debug.fault_injection,
        )
        deps = Deps(config=cfg, runtime=runtime, libvirt=self.libvirt, context=self._context)
        self._network = NetworkService(cfg.network, runtime=runtime,
                                       state_dir=cfg.daemon.state_dir,
                                       run_dir=cfg.daemon.run_dir)
        storage = StorageSubsystem(deps)
        vms = VmSubsystem(deps, storage=storage)
        self._subsystems = [storage, vms]
        self._storage = storage
        observer = self._metrics(storage, vms) if cfg.metrics.listen else None
        self._guard = ProcessGuard.start(self._fatal)
        self._root = self._start_tree(runtime, self._guard)
        self._server = ApiServer(
            context=self._context,
            config=ServerConfig(
                endpoint=cfg.api_endpoint,
                limits=codec.Limits(max_frame=cfg.api.max_frame, max_depth=cfg.api.max_depth),
                workers=cfg.api.workers,
                max_pending=cfg.api.max_pending,
                curve=curve_config,
                insecure_tcp=cfg.api.insecure_tcp,
            ),
            schema=SCHEMA,
            bindings=self._bindings(runtime),
            keys=self._auth.keys if self._auth is not None else None,
            observer=observer,
            activity=self._network.watch,
        )
        self._server.start()
        if self._metrics_server is not None:
            self._metrics_server.start()
        for subsystem in self._subsystems:
            subsystem.started()
        log.info("vdsmd ready: api %s, events %s, state dir %s, run dir %s",
                 self._server.bound_endpoint, self._publisher.bound_endpoint,
                 cfg.daemon.state_dir, cfg.daemon.run_dir)

    def stop(self) -> None:
        log.info("vdsmd stopping")
        self._stopping = True
        if self._metrics_server is not None:
            self._metrics_server.stop()
        if self._server is not None:
            self._server.stop()
        if self._root is not None:
            try:
                self._root.stop(block=True, timeout=60)
            except pykka.Timeout:
                log.error("the supervision tree did not stop within 60 s")
        if self._guard is not None:
            self._guard.stop(block=True, timeout=5)
        if self._clock is not None:
            self._clock.stop()
        if self._publisher is not None:
            self._publisher.stop()
        if self._auth is not None:
            self._auth.stop()
        if self._context is not None:
            self._context.term()
        for lock in reversed(self._locks):
            lock.release()
        log.info("vdsmd stopped")

    def _metrics(self, storage: StorageSubsystem, vms: VmSubsystem) -> RequestMetrics:
        """The metrics endpoint's registry, server and the API's request observer."""
        registry = CollectorRegistry()
        registry.register(BoardCollector(Sources(
            host_stats=self.host_stats.get,
            vm_stats=vms.board.full_stats,
            storage=storage.board.snapshot,
            directory=self.directory,
            in_flight=lambda: self._server.in_flight if self._server is not None else 0,
        )))
        host, port = self.config.metrics.address
        self._metrics_server = MetricsServer(registry, host, port)
        return RequestMetrics(registry)

    def _lock_directories(self) -> None:
        """One agent per run dir and per state dir (DirectoryInUse if another holds one)."""
        cfg = self.config.daemon
        seen: set[Path] = set()
        for lock in (DirLock(cfg.run_dir, "--run-dir", mode=endpoints.IPC_DIR_MODE),
                     DirLock(cfg.state_dir, "--state-dir")):
            if lock.directory.resolve() in seen:
                continue  # both settings name one directory: one lock
            seen.add(lock.directory.resolve())
            lock.acquire()
            self._locks.append(lock)

    def _curve_config(self) -> curve.CurveConfig | None:
        section = self.config.curve
        if not section.enabled:
            return None
        return curve.CurveConfig(Path(section.server_secret), Path(section.authorized_keys))

    # --- the main thread -----------------------------------------------------------------

    def request(self, kind: str, detail: str = "") -> None:
        """Ask the main thread to ``stop``, ``reload`` or end as ``fatal``.

        Safe from any thread and from signal handlers (``SimpleQueue.put`` is reentrant).
        """
        self._control.put((kind, detail))

    def serve(self) -> int:
        """Serve requests to the process until ``stop`` (0) or ``fatal`` (EXIT_FATAL)."""
        while True:
            status = self.serve_once()
            if status is not None:
                return status

    def serve_once(self, timeout: float = HOUSEKEEPING_INTERVAL) -> int | None:
        """Handle one request (waiting up to ``timeout``), then the periodic checks.

        Returns the exit status once the process should end, else None.
        """
        try:
            kind, detail = self._control.get(timeout=timeout)
        except queue.Empty:
            kind, detail = "", ""
        if kind == "stop":
            log.info("received %s", detail)
            return 0
        if kind == "fatal":
            log.critical("vdsmd cannot go on: %s; exiting with status %d so that the "
                         "service manager restarts it", detail, EXIT_FATAL)
            return EXIT_FATAL
        if kind == "reload":
            self.reload_keys(detail)
        self._housekeeping()
        return None

    def reload_keys(self, why: str) -> None:
        """Re-read the authorised CURVE keys; a removed key loses its connections."""
        if self._auth is None:
            log.info("%s: no [curve] keys to reload", why)
            return
        log.info("%s: reloading the authorised client keys", why)
        change = self._auth.keys.reload()
        if change.removed and self._publisher is not None:
            self._publisher.drop_subscribers()

    def _fatal(self, reason: str) -> None:
        """Called by the process guard (on its thread) for an escalation past the root."""
        if not self._stopping:
            self.request("fatal", reason)

    def _housekeeping(self) -> None:
        if not self._stopping:
            dead = self._dead_component()
            if dead is not None:
                self.request("fatal", dead)
        interval = self.config.curve.reload_interval
        now = time.monotonic()
        if self._auth is not None and interval > 0 and now - self._keys_checked >= interval:
            self._keys_checked = now
            if self._auth.keys.changed():
                self.reload_keys("the authorised keys directory changed")

    def _dead_component(self) -> str | None:
        if self._server is not None and not self._server.alive():
            return "the API server thread ended"
        if self._publisher is not None and not self._publisher.alive():
            return "the event publisher thread ended"
        # Not the root: pykka marks a failing actor dead before its on_failure has stopped
        # the children; the process guard hears of it once that is done, with the reason.
        return None

    # --- the tree --------------------------------------------------------------------------

    def _policy(self) -> RestartPolicy:
        s = self.config.supervision
        return RestartPolicy(s.max_restarts, s.within, s.backoff_initial, s.backoff_max)

    def _start_tree(self, runtime: Runtime,
                    guard: pykka.ActorRef[ProcessGuard]) -> pykka.ActorRef[Supervisor]:
        policy = self._policy()
        cfg = self.config

        def supervisor(name: str, children: Sequence[ChildSpec]) -> ChildSpec:
            return ChildSpec(
                name,
                lambda ctx: Supervisor.start(ctx, policy=policy, children=children),
                cls="Supervisor",
                start_timeout=60.0,
                stop_timeout=60.0,
            )

        host_children = [
            ChildSpec(
                "libvirt",
                lambda ctx: LibvirtActor.start(
                    ctx,
                    handle=self.libvirt,
                    on_event=self._route_domain_event,
                    on_connect=[s.libvirt_connected for s in self._subsystems],
                    reconnect_max=cfg.libvirt.reconnect_max,
                    probe_interval=cfg.libvirt.probe_interval,
                    stall_timeout=cfg.libvirt.stall_timeout,
                    reconnect_after=cfg.libvirt.reconnect_after,
                ),
                cls="LibvirtActor",
            ),
            ChildSpec(
                "stats",
                lambda ctx: HostStatsActor.start(ctx, interval=cfg.host.stats_interval,
                                                 last=self.host_stats),
                cls="HostStatsActor",
            ),
            ChildSpec("udev", UdevActor.start, cls="UdevActor"),
        ]
        if self._network is not None:
            host_children.append(self._network.child_spec())
        children = [
            supervisor("host", host_children),
            *(supervisor(s.name, s.children()) for s in self._subsystems),
        ]
        ctx = ActorContext(path=ROOT, runtime=runtime, supervisor=guard)
        self.directory.put(
            ActorInfo(path=ROOT, cls="Supervisor", state="starting", ref=None, supervisor=None)
        )
        root = Supervisor.start(ctx, policy=policy, children=children)
        root.ask(Ping(), timeout=120)
        self.directory.update(ROOT, state=RUNNING, ref=root)
        return root

    def _route_domain_event(self, event: DomainEvent) -> None:
        for subsystem in self._subsystems:
            subsystem.domain_event(event)

    # --- the verb table ----------------------------------------------------------------

    def _bindings(self, runtime: Runtime) -> dict[str, Binding]:
        table: dict[str, Binding] = {}
        table.update(actors_api.bindings(runtime))
        table.update(
            host_api.bindings(
                stats=ServiceRef(self.directory, "/host/stats"),
                last_stats=self.host_stats,
                udev=ServiceRef(self.directory, "/host/udev"),
                libvirt_handle=self.libvirt,
                clock=runtime.clock,
                state_dir=self.config.daemon.state_dir,
                extra_stats=self._extra_host_stats,
                network_caps=self._network.capabilities if self._network else dict,
            )
        )
        if self._network is not None:
            table.update(self._network.bindings())
        fencing = self.config.fencing
        table.update(fenceapi.bindings(
            fenceapi.FenceSettings(agent_dir=fencing.agent_dir, agents=frozenset(fencing.agents),
                                   timeout=fencing.timeout, max_running=fencing.max_running),
            host_ids=self._storage.host_ids.liveness if self._storage is not None else None))
        for subsystem in self._subsystems:
            overlap = table.keys() & subsystem.bindings().keys()
            if overlap:
                raise RuntimeError(f"verbs bound twice: {sorted(overlap)}")
            table.update(subsystem.bindings())
        return table

    def _extra_host_stats(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for subsystem in self._subsystems:
            extra.update(subsystem.host_stats())
        return extra


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vdsmd", description="the node agent")
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--api", help="request/reply endpoint (ipc://PATH or tcp://HOST:PORT)")
    parser.add_argument("--events", help="event endpoint")
    parser.add_argument("--state-dir", type=Path, help="persistent state directory")
    parser.add_argument("--run-dir", type=Path, help="runtime directory for ipc sockets")
    parser.add_argument("--libvirt-uri", help="libvirt connection URI")
    parser.add_argument("--host-id", type=int, help="this host's id in storage pools (1-2000)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> configuration.Config:
    config = configuration.load(args.config)
    config = configuration.with_overrides(
        config,
        daemon={
            "state_dir": args.state_dir,
            "run_dir": args.run_dir,
            "host_id": args.host_id,
            "log_level": args.log_level,
        },
        api={"endpoint": args.api},
        events={"endpoint": args.events},
        libvirt={"uri": args.libvirt_uri},
    )
    config = configuration.derive_run_dir(config)
    configuration.check(config)
    return config


def setup_logging(config: configuration.Config) -> None:
    handler: logging.Handler
    if config.daemon.log_file:
        handler = logging.FileHandler(config.daemon.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(logcontext.FORMAT))
    handler.addFilter(logcontext.RequestFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.daemon.log_level.upper())
    logging.getLogger("pykka").setLevel(logging.WARNING)
    logging.getLogger("pyroute2").setLevel(logging.WARNING)  # a line per netlink message


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args)
    except configuration.ConfigError as e:
        print(f"vdsmd: {e}", file=sys.stderr)
        return 2
    setup_logging(config)
    daemon = Daemon(config)

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        daemon.request("reload" if signum == signal.SIGHUP else "stop", name)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        daemon.start()
    except DirectoryInUse as e:
        log.error("vdsmd cannot start: %s", e)
        daemon.stop()
        return 1
    except Exception as e:
        log.exception("vdsmd failed to start: %s", e)
        daemon.stop()
        return 1
    status = 0
    try:
        status = daemon.serve()
    finally:
        if status:
            _exit_after(FATAL_STOP_DEADLINE, status)
        daemon.stop()
    if status:
        log.critical("vdsmd exits with status %d", status)
    return status


def _exit_after(seconds: float, status: int) -> None:
    """End the process with ``status`` after ``seconds`` even if stopping hangs."""
    def expire() -> None:
        log.critical("stopping took longer than %g s: exiting with status %d now", seconds,
                     status)
        os._exit(status)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    sys.exit(main())
