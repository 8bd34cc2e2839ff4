"""How a subsystem (storage, VMs) plugs into the daemon.

The daemon builds one :class:`Deps` and hands it to each subsystem. A subsystem says which
actors its supervisor starts (``children``), which verbs it implements (``bindings``), what it
adds to ``Host.getStats`` (``host_stats``), and may act once the whole tree is up
(``started``). This keeps actors/daemon.py a short composition root and lets each subsystem
live in its own package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from actors.base import Runtime
from actors.config import Config
from actors.host.libvirtconn import DomainEvent, LibvirtHandle
from actors.supervisor import ChildSpec
from messaging.server import Binding


@dataclass(frozen=True)
class Deps:
    config: Config
    runtime: Runtime
    libvirt: LibvirtHandle
    context: Any = None  # the process's zmq.Context (None: zmq.Context.instance())


class Subsystem(Protocol):
    #: the name of the subsystem's supervisor under the root ("storage", "vms")
    name: str

    def children(self) -> Sequence[ChildSpec]:
        """The actors the subsystem's supervisor starts, in order."""
        ...

    def bindings(self) -> dict[str, Binding]:
        """Handlers of the verbs this subsystem implements."""
        ...

    def host_stats(self) -> dict[str, Any]:
        """What the subsystem adds to Host.getStats (must not block: cached values only)."""
        ...

    def started(self) -> None:
        """Called once the whole tree and the API server are up (e.g. to start recovery)."""
        ...

    def domain_event(self, event: DomainEvent) -> None:
        """A libvirt domain event (called on libvirt's event thread: only tell, never block)."""
        ...

    def libvirt_connected(self) -> None:
        """libvirt (re)connected (called on the libvirt actor's thread: only tell)."""
        ...
