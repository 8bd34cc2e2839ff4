"""Protocol errors (JSON-RPC-like codes, -32700 to -32600): the request itself, not what it
asks for."""

from __future__ import annotations

from typing import Any, Self

from messaging.errors.base import VdsmError


class ParseError(VdsmError):
    code = -32700
    template = "the frame is not valid msgpack: {reason}"


class InvalidRequest(VdsmError):
    code = -32600
    template = "invalid request: {reason}"


class MethodNotFound(VdsmError):
    code = -32601
    template = "no such method: {method}"


class InvalidParams(VdsmError):
    """A param is missing, unknown, of the wrong type or has an invalid value.

    ``param`` is the dotted path of the offending value (``vmParams.drives[0].path``); the
    message always names it.
    """

    code = -32602
    template = "invalid param {param!r}: {reason}"

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(param=param, reason=reason, data={"param": param})
        self.param = param
        self.reason = reason

    @classmethod
    def from_wire(cls, message: str, data: Any) -> Self:
        param = data.get("param") if isinstance(data, dict) else None
        made = cls(str(param) if param is not None else "", message)
        made.message = message  # as sent, not re-worded
        made.args = (message,)
        made.data = data
        return made


class InternalError(VdsmError):
    code = -32603
    template = "internal error: {reason}"


class RequestTimeout(VdsmError):
    """The verb did not finish within its server-side timeout."""

    code = -32603
    template = "{method} did not finish within {timeout:g} s"
    retryable = True


class ServerBusy(VdsmError):
    code = -32603
    template = "the agent is overloaded ({pending} requests pending): try again shortly"
    retryable = True


class NotImplementedOnHost(VdsmError):
    code = -32601
    template = "{method} is declared but not implemented on this host"
