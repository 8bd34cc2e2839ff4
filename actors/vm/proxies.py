"""The typed proxy of a VM actor: every method the verbs, migration and the policy ask of
it, checked by mypy at the seam (see :func:`actors.directory.typed_proxy`).

A method called through a VM actor's proxy must be named here: any other attribute is a
type error, and so are wrong arguments or a misread answer (each method's answer is a
``pykka.Future`` of what the actor method returns, mostly a
:class:`concurrent.futures.Future` of the operation).
"""

from __future__ import annotations

from pykka.typing import proxy_method

from actors.vm.actor import VmActor


class VmProxy:
    """What may be asked of a VM actor through its proxy."""

    # lifecycle (actors/vm/api.py)
    launch = proxy_method(VmActor.launch)
    destroy = proxy_method(VmActor.destroy)
    pause = proxy_method(VmActor.pause)
    cont = proxy_method(VmActor.cont)
    reset = proxy_method(VmActor.reset)
    shutdown = proxy_method(VmActor.shutdown)
    set_ticket = proxy_method(VmActor.set_ticket)
    change_media = proxy_method(VmActor.change_media)
    hibernate = proxy_method(VmActor.hibernate)
    # the guest agent and QoS (agentapi.py, qosapi.py; the policy)
    set_balloon_target = proxy_method(VmActor.set_balloon_target)
    tune = proxy_method(VmActor.tune)
    run_in_guest = proxy_method(VmActor.run_in_guest)
    freeze = proxy_method(VmActor.freeze)
    thaw = proxy_method(VmActor.thaw)
    # migration (migapi.py)
    migrate = proxy_method(VmActor.migrate)
    migrate_cancel = proxy_method(VmActor.migrate_cancel)
    migrate_change = proxy_method(VmActor.migrate_change)
    prepare_incoming = proxy_method(VmActor.prepare_incoming)

