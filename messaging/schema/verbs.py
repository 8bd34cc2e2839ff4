"""Verb declarations and the schema that holds them.

A :class:`Verb` names a method, its params (as :class:`~messaging.schema.types.Field`), what
it returns, its 2011 aliases and its server-side timeout (see :mod:`messaging.deadline`: a
verb that starts an operation with a longer deadline, named by ``operation``, is given until
that deadline). The :class:`Schema` looks verbs up
by name or alias and validates a request's params. Handlers are bound separately (by the
daemon), so this package describes the wire and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from messaging.errors import InvalidParams, MethodNotFound
from messaging.schema.types import Field, check_fields

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Verb:
    name: str
    doc: str
    params: tuple[Field, ...] = ()
    result: str = "true"
    aliases: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    #: the deadline of the operation the verb starts, when it may be longer than ``timeout``:
    #: the request's deadline is then extended to it (plus a reply margin)
    operation: str = ""
    #: False for a verb that is declared (its params are checked) but that this agent does
    #: not implement yet: calling it answers -32601 "declared but not implemented"
    implemented: bool = True
    #: the kind of job the verb starts (``Host.getJobs`` job_type; it takes a ``jobID``), or
    #: "" for none; ``job_if``: the param (dotted path) without which it starts none
    job: str = ""
    job_if: str = ""
    by_name: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.params})

    @property
    def namespace(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def queries(self) -> bool:
        """Whether the verb only reads (logged at DEBUG, not INFO, when it is called)."""
        return self.short_name.startswith(("get", "list", "inspect", "ping"))

    @property
    def starts_task(self) -> bool:
        """Whether the verb answers the id of a task it started (``vdsm-client --wait``)."""
        return self.result == "taskID"

    def starts_job(self, params: Mapping[str, Any]) -> bool:
        """Whether the verb, called with ``params``, starts a job (``vdsm-client --wait``)."""
        if not self.job:
            return False
        value: Any = params
        for name in self.job_if.split(".") if self.job_if else ():
            value = value.get(name) if isinstance(value, Mapping) else None
        return value is not None

    def check_params(self, params: Mapping[Any, Any]) -> dict[str, Any]:
        """Validate a request's params: a new dict with defaults filled in, or InvalidParams."""
        if not isinstance(params, Mapping):
            raise InvalidParams("params", "expected a map")
        return check_fields(self.params, self.by_name, params, "")


class Schema:
    """All declared verbs, by name and by alias."""

    def __init__(self, verbs: Iterable[Verb]) -> None:
        self._verbs: dict[str, Verb] = {}
        self._names: dict[str, str] = {}
        for verb in verbs:
            if verb.name in self._names:
                raise ValueError(f"verb {verb.name} declared twice")
            self._verbs[verb.name] = verb
            self._names[verb.name] = verb.name
            for alias in verb.aliases:
                if alias in self._names:
                    raise ValueError(f"alias {alias} of {verb.name} is already taken")
                self._names[alias] = verb.name

    def __iter__(self) -> Any:
        return iter(self._verbs.values())

    def __len__(self) -> int:
        return len(self._verbs)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def lookup(self, method: str) -> Verb:
        """The verb called ``method`` (a name or an alias), or MethodNotFound."""
        try:
            return self._verbs[self._names[method]]
        except KeyError:
            raise MethodNotFound(method=method[:128]) from None

    def aliases(self) -> dict[str, str]:
        """Every alias and the name of its verb."""
        return {k: v for k, v in self._names.items() if k != v}

    def namespaces(self) -> list[str]:
        return sorted({v.namespace for v in self._verbs.values()})
