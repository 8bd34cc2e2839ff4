"""Mailbox slots: round trips, and every damaged slot is refused, never trusted."""

from __future__ import annotations

import uuid

import pytest

from actors.storage.mailbox.format import (
    MAX_MESSAGES,
    REPLIES,
    REQUESTS,
    SLOT,
    Message,
    Slot,
    SlotError,
)


def _msg(seq: int) -> Message:
    return Message(seq, str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), seq * 4096)


def test_round_trip() -> None:
    slot = Slot(7, REQUESTS, tuple(_msg(i) for i in range(1, MAX_MESSAGES + 1)), epoch=3,
                written_ns=99)
    raw = slot.encode()
    assert len(raw) == SLOT
    assert Slot.decode(raw, host_id=7, kind=REQUESTS) == slot


def test_replies_carry_errors() -> None:
    reply = _msg(5).reply(size=0, latency_us=10, code=211, text="no space left" * 10)
    slot = Slot(2, REPLIES, (reply,))
    got = Slot.decode(slot.encode(), host_id=2, kind=REPLIES)
    assert got is not None
    assert got.messages[0].code == 211
    assert got.messages[0].text.startswith("no space left")


def test_an_empty_slot_is_none() -> None:
    assert Slot.decode(bytes(SLOT), host_id=1, kind=REQUESTS) is None


OLD = Slot(1, REQUESTS, tuple(_msg(i) for i in range(1, MAX_MESSAGES + 1))).encode()


@pytest.mark.parametrize("damage", [
    lambda raw: raw[:100] + b"\x01" + raw[101:],            # a flipped byte
    lambda raw: raw[:2048] + OLD[2048:],                     # a torn write (second half old)
    lambda raw: b"XXXX" + raw[4:],                           # foreign magic
])
def test_damaged_slots_are_refused(damage: object) -> None:
    raw = Slot(1, REQUESTS, tuple(_msg(i) for i in range(100, 100 + MAX_MESSAGES))).encode()
    with pytest.raises(SlotError):
        Slot.decode(damage(raw), host_id=1, kind=REQUESTS)  # type: ignore[operator]


def test_a_slot_of_another_host_or_kind_is_refused() -> None:
    raw = Slot(1, REQUESTS, (_msg(1),)).encode()
    with pytest.raises(SlotError):
        Slot.decode(raw, host_id=2, kind=REQUESTS)
    with pytest.raises(SlotError):
        Slot.decode(raw, host_id=1, kind=REPLIES)


def test_too_many_messages_are_refused() -> None:
    with pytest.raises(ValueError):
        Slot(1, REQUESTS, tuple(_msg(i) for i in range(MAX_MESSAGES + 1))).encode()
