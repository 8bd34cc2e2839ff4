"""The SPM's mail server backs off while idle, never past its cap, and is back at its full rate
as soon as a request comes: the pace on its own (a given clock), and a real server polling real
O_DIRECT area files. It serves each request once, also when a new SPM takes over."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.storage.mailbox.areas import MailArea
from actors.storage.mailbox.format import REPLIES, REQUESTS, SLOT, Message, Slot
from actors.storage.mailbox.server import BURST, MailServer, PollPace
from tests.harness import wait_for

POLL, IDLE_POLL = 0.05, 0.5


def test_full_rate_while_requests_come() -> None:
    pace = PollPace(POLL, IDLE_POLL, now=0.0)
    now = 0.0
    for _ in range(100):  # a request every second: never idle for a burst
        now += 1.0
        pace.request(now)
        assert pace.next(now + 0.01) == POLL
        assert pace.next(now + BURST) == POLL


def test_idle_backs_off_doubling_to_the_cap_and_never_past_it() -> None:
    pace = PollPace(POLL, IDLE_POLL, now=0.0)
    waits = [pace.next(BURST + 0.001 + i) for i in range(10)]
    assert waits[:4] == [0.1, 0.2, 0.4, IDLE_POLL]
    assert waits[4:] == [IDLE_POLL] * 6
    # a day without any request: every wait is still at most the cap
    assert pace.next(86400.0) == IDLE_POLL


def test_a_request_after_a_long_idle_spell_brings_back_the_full_rate() -> None:
    pace = PollPace(POLL, IDLE_POLL, now=0.0)
    for i in range(1000):
        pace.next(10.0 + i)
    assert pace.interval == IDLE_POLL
    pace.request(5000.0)
    assert pace.next(5000.0) == POLL
    assert pace.next(5000.0 + BURST) == POLL
    assert pace.next(5000.0 + BURST + 0.1) == 2 * POLL


def test_the_cap_is_never_below_the_full_rate() -> None:
    pace = PollPace(1.0, 0.5, now=0.0)
    assert [pace.next(100.0 + i) for i in range(3)] == [1.0, 1.0, 1.0]


class RecordingPace(PollPace):
    """The real pace, recording each wait it gives and when a request was seen."""

    def __init__(self, *args: float, **kwargs: float) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def request(self, now: float) -> None:
        super().request(now)
        with self.lock:
            self.events.append(("request", now))

    def next(self, now: float) -> float:
        wait = super().next(now)
        with self.lock:
            self.events.append(("wait", wait))
        return wait

    def snapshot(self) -> list[tuple[str, float]]:
        with self.lock:
            return list(self.events)


@pytest.fixture
def areas(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    for path in (inbox, outbox):
        path.write_bytes(bytes(4 * SLOT))
    yield inbox, outbox


def _request(seq: int) -> Message:
    return Message(seq, str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), seq << 20)


def test_a_request_after_a_long_idle_spell_is_served_and_polled_at_full_rate_again(
        areas: tuple[Path, Path]) -> None:
    inbox, outbox = areas
    served: list[tuple[int, list[Message]]] = []

    def serve(host: int, new: list[Message], keep: list[Message]) -> list[Message]:
        served.append((host, new))
        return [m.reply(size=m.size, latency_us=1) for m in new]

    poll, idle_poll = 0.01, 0.08
    # idle for an hour already; a burst long enough that no stall under load ends it early
    pace = RecordingPace(poll, idle_poll, burst=60.0, now=time.monotonic() - 3600.0)
    server = MailServer(paths=lambda: (inbox, outbox), hosts=4, io_timeout=5.0, poll=poll,
                        serve=serve, name="test-mailserver", pace=pace)
    try:
        server.activate()
        wait_for(lambda: server.describe()["interval"] == idle_poll, 30.0,
                 what="the idle server backing off to its cap")
        assert server.describe()["served"] == 0
        area = MailArea(outbox, kind=REQUESTS, slots=4, io_timeout=5.0, write=True)
        try:
            area.write_slot(Slot(2, REQUESTS, (_request(1),)))
        finally:
            area.close()
        wait_for(lambda: server.describe()["served"] == 1, 30.0, what="the request served")
        assert served[0][0] == 2 and served[0][1][0].seq == 1
        events = pace.snapshot()
        seen = events.index(next(e for e in events if e[0] == "request"))
        waits = [w for kind, w in events[:seen] if kind == "wait"]
        # idle: doubling up to the cap, never past it (the bound on seeing a new request)
        assert max(waits) == idle_poll
        assert waits[-1] == idle_poll
        # the poll that saw the request is followed by full-rate polls
        wait_for(lambda: len([e for e in pace.snapshot()[seen:] if e[0] == "wait"]) >= 3,
                 30.0, what="three polls after the request")
        after = [w for kind, w in pace.snapshot()[seen:] if kind == "wait"]
        assert after[:3] == [poll, poll, poll]
    finally:
        server.close()



class WritingServe:
    """What the SPM's writer does for a host's batch: extend (here: count each request it
    is given) and write that host's inbox slot with the replies kept plus the new ones."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.done: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, host: int, new: list[Message], keep: list[Message]) -> list[Message]:
        replies = [m.reply(size=m.size, latency_us=1) for m in new]
        area = MailArea(self.inbox, kind=REPLIES, slots=4, io_timeout=5.0, write=True)
        try:
            area.write_slot(Slot(host, REPLIES, tuple(keep + replies), epoch=1))
        finally:
            area.close()
        with self.lock:
            self.done.extend(m.seq for m in new)
        return replies

    def seqs(self) -> list[int]:
        with self.lock:
            return sorted(self.done)


def _ask(outbox: Path, host: int, *messages: Message) -> None:
    area = MailArea(outbox, kind=REQUESTS, slots=4, io_timeout=5.0, write=True)
    try:
        area.write_slot(Slot(host, REQUESTS, messages))
    finally:
        area.close()


def _polls_after(server: MailServer, count: int) -> None:
    """Wait until the server polled ``count`` more times (each poll re-reads the outbox)."""
    start = int(server.describe()["polls"])
    wait_for(lambda: int(server.describe()["polls"]) >= start + count, 30.0,
             what=f"{count} more polls")


def test_each_request_is_served_once_also_by_the_next_spm(areas: tuple[Path, Path]) -> None:
    """Requests carry ids: one still in its host's outbox after its reply (a retry, or the
    host not yet having read the reply) is not done again, neither by this SPM nor by the
    next one, which learns what was served from the inbox on the shared storage; a request
    whose reply never landed (a fenced SPM) is served by the next SPM."""
    inbox, outbox = areas
    first, second = _request(1), _request(2)

    def server_with(serve: WritingServe, name: str) -> MailServer:
        return MailServer(paths=lambda: (inbox, outbox), hosts=4, io_timeout=5.0, poll=0.01,
                          idle_poll=0.02, serve=serve, name=name)

    serve = WritingServe(inbox)
    server = server_with(serve, "spm-a")
    try:
        server.activate()
        _ask(outbox, 2, first)
        wait_for(lambda: serve.seqs() == [1], 30.0, what="the request served")
        _polls_after(server, 5)  # it stays in the outbox: read again, not done again
        _ask(outbox, 2, first, second)  # the host asks again, and for more
        wait_for(lambda: serve.seqs() == [1, 2], 30.0, what="the new request served")
        _polls_after(server, 5)
        assert serve.seqs() == [1, 2]
    finally:
        server.close()

    # the next SPM: both replies are in the inbox, both requests still in the outbox
    serve = WritingServe(inbox)
    server = server_with(serve, "spm-b")
    try:
        server.activate()
        _polls_after(server, 10)
        assert serve.seqs() == []
        assert server.describe()["repliesKept"] == {2: 2}
    finally:
        server.close()

    # an SPM fenced before its reply write landed: the next one serves what is unanswered
    area = MailArea(inbox, kind=REPLIES, slots=4, io_timeout=5.0, write=True)
    try:
        area.write_slot(Slot(2, REPLIES, (first.reply(size=first.size, latency_us=1),),
                             epoch=1))
    finally:
        area.close()
    serve = WritingServe(inbox)
    server = server_with(serve, "spm-c")
    try:
        server.activate()
        wait_for(lambda: serve.seqs() == [2], 30.0, what="the unanswered request served")
        _polls_after(server, 5)
        assert serve.seqs() == [2]
    finally:
        server.close()


def test_a_fast_writers_requests_a_few_seconds_apart_find_the_full_rate() -> None:
    """A thin VM writing fast asks for an extension every few seconds: each of its requests
    must be seen at the full rate, not after an idle poll (its headroom is running out)."""
    pace = PollPace(POLL, IDLE_POLL, now=0.0)
    now = 0.0
    for _ in range(20):  # a request every 5 s, polls at the pace in between
        seen = now
        pace.request(seen)
        wait = 0.0
        while now < seen + 5.0:
            wait = pace.next(now)
            now += wait
        assert wait == POLL, (seen, now)  # the wait before the poll that sees the next one
