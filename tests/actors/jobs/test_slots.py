"""Slots: a limit per host, the rest queued in order; cancelled or timed-out waits leave
the queue; a destination gate per name."""

from __future__ import annotations

import threading
import time

import pytest

from actors.jobs.slots import Gates, Slots
from tests.harness import wait_for

pytestmark = pytest.mark.timeout(30)


def waiter(slots: Slots, owner: str, got: list[str],
           cancelled: threading.Event | None = None) -> threading.Thread:
    def run() -> None:
        if slots.acquire(owner, cancelled or threading.Event()):
            got.append(owner)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: slots.position(owner) is not None or owner in got, 5)
    return thread


def test_the_third_waits_and_they_go_in_order() -> None:
    slots, got = Slots("out", 2), []
    never = threading.Event()
    assert slots.acquire("1", never) and slots.acquire("2", never)
    third = waiter(slots, "3", got)
    fourth = waiter(slots, "4", got)
    assert slots.position("3") == 1 and slots.position("4") == 2 and got == []
    assert not slots.try_acquire("5")  # others wait: no jumping the queue
    slots.release("1")
    third.join(5)
    assert got == ["3"] and slots.position("4") == 1
    slots.release("2")
    fourth.join(5)
    assert got == ["3", "4"]
    assert slots.describe() == {"limit": 2, "running": ["3", "4"], "queued": []}


def test_a_cancelled_or_timed_out_wait_leaves_the_queue() -> None:
    slots, got = Slots("out", 1), []
    assert slots.try_acquire("1")
    cancelled = threading.Event()
    thread = waiter(slots, "2", got, cancelled)
    cancelled.set()
    thread.join(5)
    assert got == [] and slots.position("2") is None
    started = time.monotonic()
    assert not slots.acquire("3", threading.Event(), timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 5 and slots.position("3") is None
    slots.release("1")
    assert slots.try_acquire("4")


def test_an_adopted_job_counts_over_the_limit() -> None:
    slots = Slots("out", 1)
    assert slots.try_acquire("1")
    slots.adopt("2")
    assert slots.running() == 2 and not slots.try_acquire("3")
    slots.release("1")
    assert not slots.try_acquire("3")
    slots.release("2")
    assert slots.try_acquire("3")


def test_gates_are_one_per_name() -> None:
    gates = Gates("asking")
    assert gates["b"] is gates["b"] and gates["b"] is not gates["c"]
    assert gates["b"].try_acquire("1") and not gates["b"].try_acquire("2")
    assert gates["c"].try_acquire("2")
