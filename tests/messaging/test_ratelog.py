"""The rate limiter of log lines a client can cause at any rate."""

from __future__ import annotations

import logging

import pytest

from messaging.ratelog import RateLimitedLog

pytestmark = pytest.mark.timeout(30)


class FakeClock:
    """A clock the test moves: the limiter's windows without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_per_window_then_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(logging.getLogger("t.ratelog"), "test lines", burst=3,
                             window=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.ratelog"):
        for i in range(100):
            limited("line %d", i)
        assert [r.getMessage() for r in caplog.records] == ["line 0", "line 1", "line 2"]
        clock.now += 10.0
        limited("line %d", 100)
    assert [r.getMessage() for r in caplog.records][3:] == [
        "97 more test lines were not logged", "line 100"]
    assert limited.total == 101


def test_flush_says_what_was_suppressed_once(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("t.ratelog"), "drops", burst=1,
                             level=logging.INFO, clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="t.ratelog"):
        limited("a")
        limited("b")
        limited.flush()
        limited.flush()
    assert [r.getMessage() for r in caplog.records] == ["a", "1 more drops were not logged"]
    assert all(r.levelno == logging.INFO for r in caplog.records)
