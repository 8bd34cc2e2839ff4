"""The one declaration of every verb of the API.

Validation (the API server), ``vdsm-client ... --help`` and docs/api.md are all derived from
:data:`SCHEMA`. Each namespace declares its verbs in its own module.
"""

from messaging.schema import actors_ns, host, network, policy, storage, tasks, vm, vmguest
from messaging.schema.verbs import Schema, Verb

SCHEMA = Schema(
    (
        *host.VERBS,
        *vm.VERBS,
        *vmguest.VERBS,
        *policy.VERBS,
        *storage.VERBS,
        *tasks.VERBS,
        *network.VERBS,
        *actors_ns.VERBS,
    )
)

__all__ = ["SCHEMA", "Schema", "Verb"]
