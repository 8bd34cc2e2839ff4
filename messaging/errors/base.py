"""The base of the tree: :class:`VdsmError`, its wire ``code``, message template and
``retryable`` flag."""

from __future__ import annotations

from typing import Any, ClassVar, Self


class VdsmError(Exception):
    """Base of every error the agent reports. Subclasses set ``code`` and ``template``."""

    code: ClassVar[int] = -32603
    template: ClassVar[str] = "internal error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str | None = None, /, *, data: Any = None, **fields: Any) -> None:
        self.fields = fields
        self.data = data
        if message is None:
            try:
                message = self.template.format(**fields)
            except (KeyError, IndexError):
                message = f"{self.template} {fields!r}"
        self.message = message
        super().__init__(message)

    @classmethod
    def from_wire(cls, message: str, data: Any) -> Self:
        """An instance rebuilt from another agent's reply (its message kept as sent)."""
        return cls(message, data=data)

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` member of a reply."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error
