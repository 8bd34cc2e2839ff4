"""Actors verbs: introspection of the live supervision tree (used by vdsm-console)."""

from messaging.schema.types import Field, Str
from messaging.schema.verbs import Verb

ACTOR_PATH = Str(min_len=1, max_len=512, pattern=r"/[A-Za-z0-9_./:@-]*")

VERBS = (
    Verb(
        "Actors.list",
        "Every actor of the supervision tree, parents before children.",
        result="list of {path, class, state, mailbox, restarts, uptime, lastFailure?, "
        "supervisor?}",
        timeout=5.0,
    ),
    Verb(
        "Actors.inspect",
        "One actor's own description of its state, recent messages and supervisor policy.",
        params=(Field("path", ACTOR_PATH, doc="actor path as Actors.list shows it"),),
        result="map",
        timeout=5.0,
    ),
    Verb(
        "Actors.crash",
        "Fault injection for tests and drills: make the actor at path fail as if its code "
        "raised. Refused unless the daemon runs with debug.fault_injection enabled.",
        params=(
            Field("path", ACTOR_PATH),
            Field("reason", Str(max_len=256), required=False, default="injected fault"),
        ),
        timeout=5.0,
    ),
)
