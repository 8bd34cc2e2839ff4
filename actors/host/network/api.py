"""Handlers of the network verbs.

``Host.setupNetworks`` and the 2011 verbs run on an ``api-worker``: they parse the request
(-32602 naming the member), hand it to the network actor (answered at once with a future)
and return that future, covering the change's own deadline: the reply comes when the change
is committed, refused or rolled back, and no thread waits for it meanwhile.
``Host.getNetworkCapabilities`` reads the kernel's state (a few netlink dumps) on its worker.
``Host.confirmConnectivity`` and ``Host.ping2`` run inline: they only tell the watch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from actors.directory import ServiceRef
from actors.host.network import legacy
from actors.host.network.actor import NetworkActor
from actors.host.network.model import Request, parse_request
from actors.host.network.shared import ConnectivityWatch
from actors.host.proxies import NetworkProxy
from messaging.deadline import current as current_deadline
from messaging.errors import NetworkError, VdsmError
from messaging.server import Binding

ASK_TIMEOUT = 5.0
START_SLACK = 5.0  # the least time a change may wait in the queue


def bindings(*, network: ServiceRef[NetworkActor], watch: ConnectivityWatch,
             capabilities: Callable[[], dict[str, Any]], budget: float) -> dict[str, Binding]:
    """``budget``: what a change may take besides its connectivity wait (apply, DHCP)."""

    def submit(request: Request) -> Future[Any]:
        deadline = current_deadline()
        wait = request.options.connectivity_timeout if request.options.connectivity_check \
            else 0
        # The verb's own timeout covers the wait in the queue and the change's budget (at
        # least START_SLACK in the queue); the connectivity wait comes on top. A change
        # still queued past ``start_by`` could not end before its client stops waiting: it
        # is dropped, never applied.
        start_by = max(deadline.at - budget, time.monotonic() + START_SLACK)
        deadline.cover(start_by + budget + wait)
        future: Future[Any] = network.proxy(NetworkProxy).setup_networks(
            request, deadline.client, start_by=start_by).get(
            timeout=deadline.clamp(ASK_TIMEOUT))
        return future

    def setup_networks(params: dict[str, Any]) -> Future[Any]:
        return submit(parse_request(params["networks"], params["bondings"],
                                    params["options"]))

    def set_safe(_params: dict[str, Any]) -> Future[Any]:
        written: Future[Any] = network.proxy(NetworkProxy).set_safe().get(
            timeout=current_deadline().clamp(ASK_TIMEOUT))
        answer: Future[Any] = Future()

        def done(f: Future[Any]) -> None:
            error = f.exception()
            if isinstance(error, VdsmError):
                answer.set_exception(error)
            elif error is not None:
                answer.set_exception(NetworkError(
                    reason=f"the safe configuration could not be written: {error}"))
            else:
                answer.set_result(True)

        written.add_done_callback(done)
        return answer

    def confirm(_params: dict[str, Any]) -> bool:
        watch.confirm()
        return True

    def get_capabilities(_params: dict[str, Any]) -> dict[str, Any]:
        network.ref()  # ActorUnavailable (102) while the actor is not running
        return capabilities()

    return {
        "Host.setupNetworks": Binding(setup_networks),
        "Host.setSafeNetworkConfig": Binding(set_safe),
        "Host.getNetworkCapabilities": Binding(get_capabilities),
        "Host.confirmConnectivity": Binding(confirm, inline=True),
        "Host.ping2": Binding(confirm, inline=True),
        "Host.addNetwork": Binding(lambda p: submit(legacy.add_network(p))),
        "Host.delNetwork": Binding(lambda p: submit(legacy.del_network(p))),
        "Host.editNetwork": Binding(lambda p: submit(legacy.edit_network(p))),
    }
