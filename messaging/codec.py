"""The msgpack codec of the wire: bounded decoding and request/reply framing.

Decoding never trusts the frame: sizes of strings, binaries, arrays and maps are capped by the
unpacker, extension types are refused, and nesting deeper than ``max_depth`` is refused
before any handler sees the value. Nothing is ever unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from messaging.errors import InvalidRequest, ParseError, VdsmError

MAX_DEPTH = 32
MAX_CONTAINER_LEN = 100_000
MAX_STR_LEN = 4 * 1024 * 1024

RequestId = int | str | None


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every decoded frame."""

    max_frame: int = 4 * 1024 * 1024
    max_depth: int = MAX_DEPTH
    max_container_len: int = MAX_CONTAINER_LEN
    max_str_len: int = MAX_STR_LEN


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any]

    @property
    def is_notification(self) -> bool:
        return self.id is None


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not accepted")


def encode(value: Any) -> bytes:
    """Pack a reply or event payload. Raises TypeError for values msgpack cannot pack."""
    packed: bytes = msgpack.packb(value, use_bin_type=True, datetime=False)
    return packed


def decode(frame: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Unpack one frame within ``limits``; ParseError when it is not valid bounded msgpack."""
    if len(frame) > limits.max_frame:
        raise InvalidRequest(
            reason=f"frame of {len(frame)} bytes exceeds the maximum of {limits.max_frame}"
        )
    try:
        value = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=False,
            ext_hook=_refuse_ext,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_frame,
            max_array_len=limits.max_container_len,
            max_map_len=limits.max_container_len,
            max_ext_len=limits.max_str_len,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, UnicodeDecodeError) as e:
        raise ParseError(reason=str(e)[:200] or type(e).__name__) from None
    check_depth(value, limits.max_depth)
    return value


def check_depth(value: Any, max_depth: int) -> None:
    """Refuse values nested deeper than ``max_depth`` (iteratively: no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > max_depth:
            raise InvalidRequest(reason=f"nesting deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def salvage_id(value: Any) -> RequestId:
    """The id of a (possibly invalid) decoded request, when one can be read, else None."""
    if isinstance(value, dict):
        request_id = value.get("id")
        if isinstance(request_id, int) and not isinstance(request_id, bool):
            return request_id
        if isinstance(request_id, str) and len(request_id) <= 256:
            return request_id
    return None


def is_notification(value: Any) -> bool:
    """True for a request map that names a method and has no id: it never gets a reply.

    It holds even when the request is otherwise wrong (an unknown method, invalid params):
    the client said it reads no answer. A frame that is not msgpack, not a map, or names no
    method is not a notification; its error reply carries ``id: null``.
    """
    return (
        isinstance(value, dict)
        and value.get("id") is None
        and isinstance(value.get("method"), str)
        and bool(value["method"])
    )


def parse_request(value: Any) -> Request:
    """Turn a decoded frame into a Request, or InvalidRequest naming what is wrong."""
    if not isinstance(value, dict):
        raise InvalidRequest(reason=f"expected a map, got {type(value).__name__}")
    request_id = value.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, int | str)
    ):
        raise InvalidRequest(reason="id must be an integer or a string")
    if isinstance(request_id, str) and len(request_id) > 256:
        raise InvalidRequest(reason="id longer than 256 characters")
    unknown = set(value) - {"id", "method", "params", "jsonrpc"}
    if unknown:
        names = ", ".join(sorted(repr(k) for k in unknown)[:5])
        raise InvalidRequest(reason=f"unknown request members {names}")
    method = value.get("method")
    if not isinstance(method, str) or not method:
        raise InvalidRequest(reason="method must be a non-empty string")
    params = value.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidRequest(reason="params must be a map (positional params are not supported)")
    return Request(id=request_id, method=method, params=params)


def result_reply(request_id: RequestId, result: Any) -> dict[str, Any]:
    return {"id": request_id, "result": result}


def error_reply(request_id: RequestId, error: VdsmError) -> dict[str, Any]:
    return {"id": request_id, "error": error.to_wire()}
