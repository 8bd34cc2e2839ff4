"""VmActor in-process, with its blocking operations replaced by a controllable fake.

What is checked here is the actor's own logic: statuses and events from libvirt's event
order, what runs concurrently and what is refused, deadlines, timers, restarts. The real
operations are exercised against libvirtd by the test_api_* tests.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import libvirt
import pykka
import pytest

from actors.base import ActorContext, Runtime
from actors.clock import Clock
from actors.config import GuestAgentConfig, VmConfig
from actors.directory import ActorDirectory
from actors.host.libvirtconn import DomainEvent
from actors.storage.handle import VolumeHandle, VolumeSize
from actors.vm import desktop
from actors.vm.actor import Attach, VmActor
from actors.vm.board import VmBoard
from actors.vm.hooks import HookRunner
from actors.vm.ops import Attached, ImageWatch, Started, VmEnv, VmOps, unwatched
from actors.vm.params import MemoryImage, VmParams
from actors.vm.registry import VmRegistry
from actors.vm.seriallog import SerialLogs
from actors.vm.status import ExitReason, Transition, VmStatus
from messaging.errors import (
    GuestAgentUnavailable,
    GuestCallBusy,
    GuestCallTimeout,
    VMBusy,
    VMError,
)
from tests.harness import wait_for
from tests.libvirthelp import handle_over
from tests.vm.helpers import raw_params, validated

pytestmark = pytest.mark.usefixtures("stop_all_actors")
EV = libvirt


class Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((topic, dict(payload)))

    def statuses(self) -> list[str]:
        with self.lock:
            return [p["status"] for t, p in self.events if t.startswith("|virt|VM_status|")]


class NoStorage:
    def prepare_volume(self, volume: VolumeHandle, vm_id: str, /) -> str:
        raise AssertionError("not used")

    def teardown_volume(self, volume: VolumeHandle, vm_id: str, /) -> None:
        raise AssertionError("not used")

    def volume_size(self, volume: VolumeHandle, /) -> VolumeSize:
        raise AssertionError("not used")

    def extend_volume(self, volume: VolumeHandle, size: int, /, *, since: float | None = None,
                      timeout: float | None = None) -> int:
        raise AssertionError("not used")

    def domain_valid(self, sd_uuid: str, /) -> bool | None:
        return None


@dataclass
class FakeOps(VmOps):
    """Each operation records its name, waits for ``gates[name]`` if set, then returns."""

    vm_id: str = ""
    env: Any = None
    calls: list[str] = field(default_factory=list)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    fail: dict[str, BaseException] = field(default_factory=dict)
    attached: Attached | None = field(
        default_factory=lambda: Attached(None, None, Transition(VmStatus.UP))
    )

    def _do(self, name: str) -> None:
        self.calls.append(name)
        gate = self.gates.get(name)
        if gate is not None:
            gate.wait(30)
        if name in self.fail:
            raise self.fail[name]

    def hook_budget(self, *hooks: str) -> float:
        return 0.0

    def start(self, params: VmParams, cancelled: threading.Event,
              watch: ImageWatch = unwatched) -> Started:
        self._do("start")
        return Started(params.without_restore_state(), 1000.0, Transition(VmStatus.UP))

    def destroy(self, params: VmParams) -> None:
        self._do("destroy")

    def pause(self, params: VmParams) -> Transition:
        self._do("pause")
        return Transition(VmStatus.PAUSED)

    def cont(self, params: VmParams) -> Transition:
        self._do("cont")
        return Transition(VmStatus.UP)

    def shutdown(self, params: VmParams, message: str, *, reboot: bool = False,
                 agent: Any = None) -> str:
        self._do("reboot" if reboot else "shutdown")
        return "acpi"

    def reset(self) -> None:
        self._do("reset")

    def hibernate(self, params: VmParams, path: MemoryImage,
                  watch: ImageWatch = unwatched) -> None:
        self._do("hibernate")

    def attach(self) -> Attached | None:
        self._do("attach")
        return self.attached


@dataclass
class Env:
    runtime: Runtime
    sink: Sink
    board: VmBoard
    env: VmEnv
    params: VmParams

    def start(self, ops: FakeOps, *, generation: int = 1, mode: str = "create",
              initial: Transition | None = None) -> pykka.ActorRef[VmActor]:
        ctx = ActorContext(path=f"/vms/{self.params.vm_id}", runtime=self.runtime,
                           generation=generation)
        ops.vm_id, ops.env = self.params.vm_id, self.env
        ref: pykka.ActorRef[VmActor] = VmActor.start(
            ctx, params=self.params, mode=mode, env=self.env, board=self.board, ops=ops,
            initial=initial,
        )
        return ref

    def status(self) -> str | None:
        view = self.board.get(self.params.vm_id)
        return None if view is None else str(view.status)

    def lifecycle(self, ref: pykka.ActorRef[VmActor], event: int, detail: int) -> None:
        ref.tell(DomainEvent("lifecycle", self.params.vm_id, self.params.name, (event, detail),
                             time.monotonic()))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = Clock()
    clock.start()
    sink = Sink()
    runtime = Runtime(events=sink, clock=clock, directory=ActorDirectory())
    config = VmConfig(hooks_dir=tmp_path / "hooks", call_timeout=0.5, powering_up=0.05,
                      destroy_timeout=2.0, start_timeout=2.0)
    test_conn = libvirt.open("test:///default")  # the ops are fakes: it is only leased
    vm_env = VmEnv(libvirt=handle_over(test_conn), hooks=HookRunner(tmp_path),
                   storage=NoStorage(), config=config, owner=str(tmp_path),
                   logs=SerialLogs(tmp_path / "vms", kept=5), registry=VmRegistry(tmp_path / "vms"))
    params = VmParams.from_dict(str(uuid.uuid4()), validated(raw_params()))
    try:
        yield Env(runtime, sink, VmBoard(), vm_env, params)
    finally:
        pykka.ActorRegistry.stop_all(block=True, timeout=10)
        clock.stop()
        test_conn.close()


def result(asked: Any, timeout: float = 10.0) -> Any:
    future: Future[Any] = asked.get(timeout=5)
    return future.result(timeout=timeout)


@pytest.mark.timeout(20)
def test_launch_reports_each_status_once_then_up(env: Env) -> None:
    ref = env.start(FakeOps())
    assert env.status() == "WaitForLaunch"
    # libvirt's real order on a start: RESUMED before STARTED.
    env.lifecycle(ref, EV.VIR_DOMAIN_EVENT_RESUMED, EV.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED)
    env.lifecycle(ref, EV.VIR_DOMAIN_EVENT_STARTED, EV.VIR_DOMAIN_EVENT_STARTED_BOOTED)
    answer = result(ref.proxy().launch())
    assert answer["status"] in ("Powering up", "Up")
    wait_for(lambda: env.status() == "Up", 5)
    assert env.sink.statuses() == ["WaitForLaunch", "Powering up", "Up"]
    with pytest.raises(VMError, match="already started"):
        result(ref.proxy().launch())


@pytest.mark.timeout(20)
def test_events_drive_status_pause_codes_and_exit_reasons(env: Env) -> None:
    ref = env.start(FakeOps(), mode="recover", initial=Transition(VmStatus.UP))
    wait_for(lambda: env.status() == "Up", 5)
    ref.tell(DomainEvent("io_error", env.params.vm_id, "x",
                         ("/dev/loop0", "virtio-disk0", EV.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE,
                          "enospc"), 0.0))
    env.lifecycle(ref, EV.VIR_DOMAIN_EVENT_SUSPENDED, EV.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR)
    wait_for(lambda: env.status() == "Paused", 5)
    view = env.board.get(env.params.vm_id)
    assert view is not None and view.pause_code == "ENOSPC"
    env.lifecycle(ref, EV.VIR_DOMAIN_EVENT_RESUMED, EV.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED)
    env.lifecycle(ref, EV.VIR_DOMAIN_EVENT_STOPPED, EV.VIR_DOMAIN_EVENT_STOPPED_FAILED)
    wait_for(lambda: env.status() == "Down", 5)
    topic, last = env.sink.events[-1]
    assert topic == f"|virt|VM_status|{env.params.vm_id}"
    assert (last["exitReason"], last["exitCode"]) == ("qemu-died", 1)
    assert env.sink.statuses() == ["Up", "Paused", "Up", "Down"]
    with pytest.raises(VMError, match="is Down"):
        result(ref.proxy().pause())


@pytest.mark.timeout(20)
def test_one_control_call_at_a_time_but_destroy_may_overtake(env: Env) -> None:
    ops = FakeOps(gates={"pause": threading.Event()})
    ref = env.start(ops, mode="recover", initial=Transition(VmStatus.UP))
    ops.env = env.env
    pausing: Future[Any] = ref.proxy().pause().get(timeout=5)
    wait_for(lambda: "pause" in ops.calls, 5)
    with pytest.raises(VMBusy, match=r"VM\.pause is in progress"):
        result(ref.proxy().cont())
    assert result(ref.proxy().destroy()) is True
    assert env.status() == "Down"
    ops.gates["pause"].set()
    # The late pause does not resurrect a destroyed VM.
    pausing.result(timeout=5)
    assert env.status() == "Down"


@pytest.mark.timeout(20)
def test_a_stuck_call_times_out_then_the_next_is_refused(env: Env) -> None:
    gate = threading.Event()
    ops = FakeOps(gates={"pause": gate})
    ref = env.start(ops, mode="recover", initial=Transition(VmStatus.UP))
    try:
        with pytest.raises(GuestCallTimeout, match="not responding"):
            result(ref.proxy().pause())
        with pytest.raises(GuestCallBusy):
            result(ref.proxy().pause())
        assert env.status() == "Up"
        assert ref.proxy().describe().get(timeout=5)["calls"]["abandonedTotal"] == 1
    finally:
        gate.set()


@pytest.mark.timeout(20)
def test_a_forced_shutdown_destroys_a_guest_that_does_not_power_off(env: Env) -> None:
    ops = FakeOps()
    ref = env.start(ops, mode="recover", initial=Transition(VmStatus.UP))
    assert result(ref.proxy().shutdown(0, "bye", False, True)) is True
    wait_for(lambda: env.status() == "Down", 5)
    assert ops.calls[-2:] == ["shutdown", "destroy"]
    view = env.board.get(env.params.vm_id)
    assert view is not None and view.exit_reason == ExitReason.DESTROYED
    assert env.sink.statuses() == ["Up", "Powering down", "Down"]


@pytest.mark.timeout(20)
def test_a_shutdown_not_forced_leaves_a_guest_that_ignores_it_up(env: Env) -> None:
    ops = FakeOps()
    ref = env.start(ops, mode="recover", initial=Transition(VmStatus.UP))
    assert result(ref.proxy().shutdown(0, "bye")) is True
    wait_for(lambda: env.sink.statuses() == ["Up", "Powering down", "Up"], 5)
    assert "destroy" not in ops.calls
    assert env.status() == "Up"


@pytest.mark.timeout(20)
def test_the_agent_going_away_shows_at_once_and_its_verbs_refuse(env: Env) -> None:
    ref = env.start(FakeOps(), mode="recover", initial=Transition(VmStatus.UP))
    wait_for(lambda: env.status() == "Up", 5)
    ref.tell(DomainEvent("agent_lifecycle", env.params.vm_id, env.params.name,
                         (EV.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED,
                          EV.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_CHANNEL), 0.0))

    def agent_state() -> str | None:
        view = env.board.get(env.params.vm_id)
        return view.guest_agent if view is not None else None

    wait_for(lambda: agent_state() == "disconnected", 5)
    assert env.board.full_stats(env.params.vm_id)[0]["guestAgent"] == "disconnected"
    with pytest.raises(GuestAgentUnavailable, match="disconnected"):
        result(ref.proxy().run_in_guest(desktop.lock(GuestAgentConfig())))
    with pytest.raises(GuestAgentUnavailable):
        result(ref.proxy().freeze(10.0))
    # Never answering, before or after: no status event for it (the stats show it).
    assert env.sink.statuses() == ["Up"]


@pytest.mark.timeout(20)
def test_a_forced_reboot_resets_a_guest_that_did_not_reboot(env: Env) -> None:
    ops = FakeOps()
    ref = env.start(ops, mode="recover", initial=Transition(VmStatus.UP))
    assert result(ref.proxy().shutdown(0, "", True, True)) is True
    wait_for(lambda: "reset" in ops.calls, 5)
    assert ops.calls[-2:] == ["reboot", "reset"]
    assert env.status() == "Up"  # a reboot is no status change


@pytest.mark.timeout(20)
def test_a_forced_reboot_does_not_reset_a_guest_that_rebooted(env: Env) -> None:
    gate = threading.Event()
    ops = FakeOps(gates={"reboot": gate})
    ref = env.start(ops, mode="recover", initial=Transition(VmStatus.UP))
    rebooting: Future[Any] = ref.proxy().shutdown(0, "", True, True).get(timeout=5)
    wait_for(lambda: "reboot" in ops.calls, 5)
    # libvirt's reboot event may come before the operation's own outcome.
    ref.tell(DomainEvent("reboot", env.params.vm_id, env.params.name, (), time.monotonic()))
    gate.set()
    assert rebooting.result(timeout=5) is True
    ref.proxy().describe().get(timeout=5)  # the deadline (0 s) has been handled
    wait_for(lambda: "reboot-deadline" not in ref.proxy().describe().get(timeout=5)["timers"],
             5)
    assert "reset" not in ops.calls


@pytest.mark.timeout(20)
def test_a_guest_that_powers_off_in_time_is_not_destroyed(env: Env) -> None:
    ops = FakeOps()
    ref = env.start(ops, mode="recover", initial=Transition(VmStatus.UP))
    assert result(ref.proxy().shutdown(1, "")) is True
    env.lifecycle(ref, EV.VIR_DOMAIN_EVENT_SHUTDOWN, 0)
    env.lifecycle(ref, EV.VIR_DOMAIN_EVENT_STOPPED, EV.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN)
    wait_for(lambda: env.status() == "Down", 5)
    time.sleep(1.5)  # past the deadline
    assert "destroy" not in ops.calls
    view = env.board.get(env.params.vm_id)
    assert view is not None and view.exit_reason == ExitReason.SHUTDOWN


@pytest.mark.timeout(20)
def test_a_failed_start_reports_down_and_its_error(env: Env) -> None:
    ops = FakeOps(fail={"start": VMError(reason="no such kernel")})
    ref = env.start(ops)
    with pytest.raises(VMError, match="no such kernel"):
        result(ref.proxy().launch())
    assert env.status() == "Down"
    view = env.board.get(env.params.vm_id)
    assert view is not None and view.exit_reason == ExitReason.START_FAILED


@pytest.mark.timeout(20)
def test_hibernate_saves_then_down_and_a_failure_restores_the_status(env: Env) -> None:
    ops = FakeOps(fail={"hibernate": VMError(reason="disk full")},
                  attached=Attached(None, None, Transition(VmStatus.UP)))
    ref = env.start(ops, mode="recover", initial=Transition(VmStatus.UP))
    wait_for(lambda: "attach" in ops.calls, 5)
    with pytest.raises(VMError, match="disk full"):
        result(ref.proxy().hibernate("/tmp/x.save"))
    assert env.status() == "Up"
    del ops.fail["hibernate"]
    assert result(ref.proxy().hibernate("/tmp/x.save")) is True
    view = env.board.get(env.params.vm_id)
    assert view is not None and view.status == VmStatus.DOWN
    assert view.exit_reason == ExitReason.SAVED
    assert env.sink.statuses() == ["Up", "Saving State", "Up", "Saving State", "Down"]


@pytest.mark.timeout(30)
def test_an_attach_that_read_a_running_domain_does_not_undo_a_save_begun_meanwhile(
    env: Env,
) -> None:
    # The attach read "running" before the save began; its outcome came while the guest was
    # being saved and set Up over Saving State (only lifecycle events made a read stale).
    env.env = replace(env.env, config=replace(env.env.config, call_timeout=20.0))
    reading, saving = threading.Event(), threading.Event()
    ops = FakeOps(gates={"attach": reading, "hibernate": saving})
    try:
        ref = env.start(ops, mode="recover", initial=Transition(VmStatus.UP))
        wait_for(lambda: "attach" in ops.calls, 5)  # the attach has read: running
        hibernating: Future[Any] = ref.proxy().hibernate("/tmp/x.save").get(timeout=5)
        assert env.status() == "Saving State"
        reading.set()
        wait_for(lambda: not [op for op in ref.proxy().describe().get(timeout=5)["operations"]
                              if op["name"] == "attach"], 10, what="the attach's outcome")
        assert env.status() == "Saving State"
        saving.set()
        assert hibernating.result(timeout=10) is True
        assert env.sink.statuses() == ["Up", "Saving State", "Down"]
    finally:
        reading.set()
        saving.set()


@pytest.mark.timeout(20)
def test_a_restarted_actor_reattaches_without_flapping(env: Env) -> None:
    first = env.start(FakeOps(), mode="recover", initial=Transition(VmStatus.UP))
    wait_for(lambda: env.status() == "Up", 5)
    first.stop(block=True, timeout=5)
    changed = env.params.with_media("cdrom", "/iso/new.iso") if env.params.removable(
        "cdrom") else env.params
    ops = FakeOps(attached=Attached(changed, 1234.0, Transition(VmStatus.UP)))
    second = env.start(ops, generation=2)  # as the supervisor restarts it
    wait_for(lambda: "attach" in ops.calls, 5)
    wait_for(lambda: (v := env.board.get(env.params.vm_id)) is not None
             and v.started == 1234.0, 5)
    assert env.sink.statuses() == ["Up"]  # no WaitForLaunch in between
    ops.attached = None  # the domain vanished while nobody watched
    second.tell(Attach())
    wait_for(lambda: env.status() == "Down", 5)
    view = env.board.get(env.params.vm_id)
    assert view is not None and view.exit_reason == ExitReason.UNKNOWN


@pytest.mark.timeout(20)
def test_a_resync_before_the_launch_does_not_mark_the_vm_down(env: Env) -> None:
    ops = FakeOps(attached=None)  # no domain yet: the launch has not run
    ref = env.start(ops)
    ref.tell(Attach())
    ref.proxy().describe().get(timeout=5)  # the Attach was handled before this
    assert "attach" not in ops.calls
    assert env.status() == "WaitForLaunch"
    assert result(ref.proxy().launch())["vmID"] == env.params.vm_id
    wait_for(lambda: env.status() == "Up", 5)
