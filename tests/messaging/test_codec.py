from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging import codec
from messaging.errors import InvalidRequest, ParseError

pytestmark = pytest.mark.timeout(60)


def test_round_trip() -> None:
    value = {"id": 1, "method": "Host.ping", "params": {"a": [1, 2.5, "x", b"\x00", None]}}
    assert codec.decode(codec.encode(value)) == value


def test_garbage_is_parse_error() -> None:
    with pytest.raises(ParseError):
        codec.decode(b"\xc1\xc1\xc1")


def test_truncated_is_parse_error() -> None:
    frame = codec.encode({"id": 1, "method": "Host.ping"})
    with pytest.raises(ParseError):
        codec.decode(frame[:-3])


def test_trailing_data_is_parse_error() -> None:
    with pytest.raises(ParseError):
        codec.decode(codec.encode(1) + codec.encode(2))


def test_extension_types_are_refused() -> None:
    frame = msgpack.packb(msgpack.ExtType(5, b"abc"))
    with pytest.raises(ParseError, match="extension"):
        codec.decode(frame)


def test_oversized_frame_is_refused_before_decoding() -> None:
    limits = codec.Limits(max_frame=100)
    with pytest.raises(InvalidRequest, match="exceeds the maximum"):
        codec.decode(b"\x00" * 101, limits)


def test_deep_nesting_is_refused() -> None:
    value: object = "leaf"
    for _ in range(40):
        value = [value]
    with pytest.raises(InvalidRequest, match="nesting"):
        codec.decode(codec.encode(value))


def test_nesting_at_the_limit_is_accepted() -> None:
    value: object = 1
    for _ in range(codec.MAX_DEPTH - 1):
        value = {"k": value}
    assert codec.decode(codec.encode(value)) == value


def test_huge_container_header_is_refused() -> None:
    # A map header announcing 2**31 entries, with no entries behind it.
    with pytest.raises(ParseError):
        codec.decode(b"\xdf\x80\x00\x00\x00")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1, 2], "expected a map"),
        ({"id": 1}, "method"),
        ({"id": 1, "method": ""}, "method"),
        ({"id": 1, "method": 5}, "method"),
        ({"id": 1.5, "method": "Host.ping"}, "id"),
        ({"id": True, "method": "Host.ping"}, "id"),
        ({"id": 1, "method": "Host.ping", "params": [1]}, "positional"),
        ({"id": 1, "method": "Host.ping", "extra": 1}, "unknown request members"),
    ],
)
def test_invalid_requests(value: object, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        codec.parse_request(value)


def test_notification_has_no_id() -> None:
    request = codec.parse_request({"method": "Host.ping"})
    assert request.is_notification
    assert request.params == {}


def test_salvage_id() -> None:
    assert codec.salvage_id({"id": 7, "method": 3}) == 7
    assert codec.salvage_id({"id": [1]}) is None
    assert codec.salvage_id("x") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decoder_never_raises_anything_but_protocol_errors(frame: bytes) -> None:
    try:
        codec.parse_request(codec.decode(frame))
    except (ParseError, InvalidRequest):
        pass
