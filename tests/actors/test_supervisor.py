"""The supervisor in-process, with real pykka actors and the real clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pykka
import pytest

from actors.base import ActorContext, InjectedFault, Ping, Runtime, SupervisedActor
from actors.clock import Clock
from actors.directory import GAVE_UP, RUNNING, ActorDirectory
from actors.supervisor import ChildSpec, ChildStartError, RestartPolicy, Supervisor
from tests.harness import wait_for

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("stop_all_actors")]

FAST = RestartPolicy(max_restarts=3, within=30.0, backoff_initial=0.01, backoff_max=0.05)


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((topic, payload))

    def of(self, path: str) -> list[str]:
        with self.lock:
            return [p["event"] for t, p in self.events if t == f"|actors|status|{path}"]


class Worker(SupervisedActor):
    log: ClassVar[list[str]] = []

    def __init__(self, ctx: ActorContext, *, fail_setup: bool = False) -> None:
        super().__init__(ctx)
        self.fail_setup = fail_setup

    def setup(self) -> None:
        Worker.log.append(f"start {self.ctx.path}")
        if self.fail_setup:
            raise RuntimeError("cannot set up")

    def teardown(self) -> None:
        Worker.log.append(f"stop {self.ctx.path}")

    def generation(self) -> int:
        return self.ctx.generation

    def quit(self) -> None:
        self.stop()


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    clock = Clock()
    clock.start()
    Worker.log = []
    yield Runtime(events=Sink(), clock=clock, directory=ActorDirectory())
    clock.stop()


def sink(runtime: Runtime) -> Sink:
    assert isinstance(runtime.events, Sink)
    return runtime.events


def worker(name: str, restart: str = "permanent", **kw: Any) -> ChildSpec:
    return ChildSpec(name, lambda ctx: Worker.start(ctx, **kw), cls="Worker",
                     restart=restart)  # type: ignore[arg-type]


def start_root(runtime: Runtime, *children: ChildSpec,
               policy: RestartPolicy = FAST) -> pykka.ActorRef[Supervisor]:
    root = Supervisor.start(ActorContext("/", runtime), policy=policy, children=children)
    root.ask(Ping(), timeout=10)
    return root


def running_ref(runtime: Runtime, path: str) -> pykka.ActorRef[Any]:
    return wait_for(lambda: _running(runtime, path), 10, what=f"{path} running")


def _running(runtime: Runtime, path: str) -> pykka.ActorRef[Any] | None:
    info = runtime.directory.get(path)
    if info is not None and info.state == RUNNING and info.ref is not None \
            and info.ref.is_alive():
        return info.ref
    return None


def test_children_start_in_order_and_stop_in_reverse(runtime: Runtime) -> None:
    root = start_root(runtime, worker("a"), worker("b"), worker("c"))
    assert Worker.log == ["start /a", "start /b", "start /c"]
    root.stop(block=True, timeout=10)
    assert Worker.log[3:] == ["stop /c", "stop /b", "stop /a"]
    assert sink(runtime).of("/a") == ["started", "stopped"]


def test_failed_child_is_restarted_and_siblings_are_untouched(runtime: Runtime) -> None:
    start_root(runtime, worker("a"), worker("b"))
    a1, b1 = running_ref(runtime, "/a"), running_ref(runtime, "/b")
    a1.tell(InjectedFault("boom"))
    wait_for(lambda: "restarted" in sink(runtime).of("/a"), 10, what="restart")
    a2 = running_ref(runtime, "/a")
    assert a2 is not a1
    assert a2.proxy().generation().get(timeout=5) == 2
    assert running_ref(runtime, "/b") is b1
    assert b1.proxy().generation().get(timeout=5) == 1
    info = runtime.directory.get("/a")
    assert info is not None and info.restarts == 1
    assert info.last_failure is not None and "boom" in info.last_failure
    assert sink(runtime).of("/a") == ["started", "failed", "restarted"]
    assert sink(runtime).of("/b") == ["started"]


def test_child_failing_past_intensity_is_given_up(runtime: Runtime) -> None:
    start_root(runtime, worker("bad"), worker("good"))
    good = running_ref(runtime, "/good")
    for _ in range(FAST.max_restarts + 1):
        ref = running_ref(runtime, "/bad")
        ref.tell(InjectedFault("again"))
        wait_for(lambda r=ref: not r.is_alive(), 10)  # type: ignore[misc]
        wait_for(lambda r=ref: _running(runtime, "/bad") is not r, 10)  # type: ignore[misc]
    wait_for(lambda: "gave-up" in sink(runtime).of("/bad"), 10, what="gave-up")
    info = runtime.directory.get("/bad")
    assert info is not None and info.state == GAVE_UP
    assert sink(runtime).of("/bad").count("restarted") == FAST.max_restarts
    # the sibling kept its incarnation
    assert running_ref(runtime, "/good") is good
    assert good.proxy().generation().get(timeout=5) == 1


def test_give_up_is_escalated_to_the_parent(runtime: Runtime) -> None:
    inner = ChildSpec("inner", lambda ctx: Supervisor.start(
        ctx, policy=RestartPolicy(max_restarts=0), children=[worker("w")]), cls="Supervisor")
    root = start_root(runtime, inner)
    running_ref(runtime, "/inner/w").tell(InjectedFault("fatal"))
    wait_for(lambda: "gave-up" in sink(runtime).of("/inner/w"), 10)

    def escalated() -> bool:
        state = root.proxy().describe().get(timeout=5)
        return bool(state["escalations"])

    wait_for(escalated, 10, what="escalation")
    state = root.proxy().describe().get(timeout=5)
    assert state["escalations"][0]["path"] == "/inner/w"
    assert running_ref(runtime, "/inner") is not None


def test_initial_start_failure_is_raised_and_leaves_nothing(runtime: Runtime) -> None:
    root = start_root(runtime)
    with pytest.raises(ChildStartError):
        root.proxy().start_child(worker("x", fail_setup=True)).get(timeout=10)
    assert runtime.directory.get("/x") is None
    assert root.proxy().children().get(timeout=5) == []
    assert sink(runtime).of("/x") == ["failed"]


def test_transient_child_that_stops_is_removed(runtime: Runtime) -> None:
    root = start_root(runtime, worker("t", restart="transient"))
    running_ref(runtime, "/t").proxy().quit().get(timeout=5)
    wait_for(lambda: runtime.directory.get("/t") is None, 10)
    assert root.proxy().children().get(timeout=5) == []
    assert sink(runtime).of("/t") == ["started", "stopped"]


def test_permanent_child_that_stops_is_restarted(runtime: Runtime) -> None:
    start_root(runtime, worker("p"))
    first = running_ref(runtime, "/p")
    first.proxy().quit().get(timeout=5)
    wait_for(lambda: _running(runtime, "/p") not in (None, first), 10)
    assert sink(runtime).of("/p") == ["started", "failed", "restarted"]


def test_dynamic_children(runtime: Runtime) -> None:
    root = start_root(runtime)
    proxy = root.proxy()
    assert proxy.start_child(worker("d1", restart="transient")).get(timeout=5) == "/d1"
    assert proxy.has_child("d1").get(timeout=5)
    with pytest.raises(Exception, match="already exists"):
        proxy.start_child(worker("d1")).get(timeout=5)
    assert proxy.stop_child("d1").get(timeout=5) is True
    assert proxy.stop_child("d1").get(timeout=5) is False
    assert runtime.directory.get("/d1") is None


def test_backoff_doubles_up_to_the_maximum() -> None:
    policy = RestartPolicy(backoff_initial=0.1, backoff_max=1.0)
    assert [policy.backoff(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_restarts_wait_for_the_backoff(runtime: Runtime) -> None:
    slow = RestartPolicy(max_restarts=5, within=30, backoff_initial=0.3, backoff_max=0.3)
    start_root(runtime, worker("s"), policy=slow)
    ref = running_ref(runtime, "/s")
    failed_at = time.monotonic()
    ref.tell(InjectedFault("x"))
    running = wait_for(lambda: _running(runtime, "/s") not in (None, ref), 10)
    assert running is not None
    assert time.monotonic() - failed_at >= 0.3
