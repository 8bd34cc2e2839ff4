"""The root supervisor's parent, in-process with real pykka actors and the real clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from actors.base import ActorContext, InjectedFault, Ping, Runtime, SupervisedActor
from actors.clock import Clock
from actors.directory import ActorDirectory
from actors.processguard import ProcessGuard
from actors.supervisor import ChildSpec, RestartPolicy, Supervisor
from tests.harness import wait_for

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("stop_all_actors")]

NO_RESTARTS = RestartPolicy(max_restarts=0, within=30.0, backoff_initial=0.01)


class Sink:
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        pass


class Leaf(SupervisedActor):
    pass


class Reasons:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[str] = []

    def __call__(self, reason: str) -> None:
        with self.lock:
            self.items.append(reason)

    def __bool__(self) -> bool:
        with self.lock:
            return bool(self.items)


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    clock = Clock()
    clock.start()
    yield Runtime(events=Sink(), clock=clock, directory=ActorDirectory())
    clock.stop()


def start_tree(runtime: Runtime, reasons: Reasons) -> pykka.ActorRef[Supervisor]:
    guard = ProcessGuard.start(reasons)
    subsystem = ChildSpec("sub", lambda ctx: Supervisor.start(
        ctx, policy=NO_RESTARTS, children=[ChildSpec("leaf", Leaf.start, cls="Leaf")]),
        cls="Supervisor")
    root = Supervisor.start(ActorContext("/", runtime, supervisor=guard), policy=NO_RESTARTS,
                            children=[subsystem])
    root.ask(Ping(), timeout=10)
    return root


def ref_of(runtime: Runtime, path: str) -> pykka.ActorRef[Any]:
    info = runtime.directory.get(path)
    assert info is not None and info.ref is not None
    return info.ref


def test_the_root_giving_up_on_a_subsystem_is_fatal(runtime: Runtime) -> None:
    reasons = Reasons()
    start_tree(runtime, reasons)
    ref_of(runtime, "/sub").tell(InjectedFault("subsystem down"))
    wait_for(lambda: reasons, 10, what="the fatal escalation")
    assert "gave up" in reasons.items[0]
    assert "/sub" in reasons.items[0] and "subsystem down" in reasons.items[0]


def test_a_leaf_given_up_inside_a_subsystem_is_not_fatal(runtime: Runtime) -> None:
    reasons = Reasons()
    root = start_tree(runtime, reasons)
    ref_of(runtime, "/sub/leaf").tell(InjectedFault("leaf down"))

    def escalated() -> bool:
        return bool(root.proxy().describe().get(timeout=5)["escalations"])

    wait_for(escalated, 10, what="the escalation to the root")
    assert not reasons, reasons.items  # recorded by the root, the process goes on


def test_a_failed_root_is_fatal(runtime: Runtime) -> None:
    reasons = Reasons()
    root = start_tree(runtime, reasons)
    root.tell(InjectedFault("root down"))
    wait_for(lambda: reasons, 10, what="the fatal escalation")
    assert "failed" in reasons.items[0] and "root down" in reasons.items[0]
    # the failed root stopped its children on the way out
    wait_for(lambda: runtime.directory.get("/sub/leaf") is None, 10, what="children stopped")
