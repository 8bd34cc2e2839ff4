from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from actors.clock import Clock, NamedTimers, TimerHandle

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock()
    c.start()
    yield c
    c.stop()


def test_call_later_runs_once_in_order(clock: Clock) -> None:
    seen: list[int] = []
    done = threading.Event()
    clock.call_later(0.1, lambda: seen.append(2))
    clock.call_later(0.05, lambda: seen.append(1))
    clock.call_later(0.15, done.set)
    assert done.wait(5)
    assert seen == [1, 2]


def test_cancel(clock: Clock) -> None:
    seen: list[int] = []
    handle = clock.call_later(0.05, lambda: seen.append(1))
    handle.cancel()
    time.sleep(0.15)
    assert seen == []


def test_call_every_repeats_until_cancelled(clock: Clock) -> None:
    ticks: list[float] = []
    handle = clock.call_every(0.02, lambda: ticks.append(time.monotonic()))
    deadline = time.monotonic() + 5
    while len(ticks) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    handle.cancel()
    count = len(ticks)
    time.sleep(0.1)
    assert count >= 5
    assert len(ticks) <= count + 1


def test_a_failing_callback_does_not_stop_the_clock(clock: Clock) -> None:
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_later(0.01, boom)
    clock.call_later(0.05, done.set)
    assert done.wait(5)


def test_invalid_interval(clock: Clock) -> None:
    with pytest.raises(ValueError):
        clock.call_every(0, lambda: None)


def test_named_timers_replace_cancel_and_tell_stale_messages_apart() -> None:
    """NamedTimers on a clock that is not running: the test fires the callbacks itself."""
    clock = Clock()  # not started: call_later only queues, nothing fires by itself
    told: list[object] = []
    timers: NamedTimers[object] = NamedTimers(clock, told.append)

    def queued() -> list[TimerHandle]:
        return [handle for _when, _seq, handle in clock._heap]

    first, second, other = object(), object(), object()
    timers.set("a", 10, first)
    timers.set("a", 10, second)  # replaces the first
    timers.set("b", 10, other)
    assert timers.names() == ["a", "b"] and "a" in timers
    handles = queued()
    assert [h.cancelled for h in handles] == [True, False, False]
    for handle in handles:  # the clock would skip a cancelled one; a stale message can be
        handle.callback()   # on its way anyway: here every callback runs
    assert told == [first, second, other]
    assert not timers.fired("a", first)  # replaced: stale
    assert timers.fired("a", second)
    assert not timers.fired("a", second)  # once only
    timers.cancel("b")
    assert not timers.fired("b", other) and timers.names() == []
    timers.set("c", 10, first)
    timers.set("d", 10, second)
    timers.cancel_all()
    assert [h.cancelled for h in queued()[-2:]] == [True, True] and timers.names() == []
