"""Handlers of the guest's verbs: its agent (desktop commands, freeze, thaw), a reboot, the
memory balloon and VM.updateDevice (a NIC's limits: :mod:`actors.vm.qosapi`). They run on
API worker threads like the other VM verbs (:mod:`actors.vm.api`): each asks the VM's actor
for an operation and returns its future.

The desktop commands are built here from ``[guest_agent]`` and the request's checked values
(:mod:`actors.vm.desktop`), before any actor is asked: a refused value or an unconfigured
verb touches nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

import pykka

from actors.config import GuestAgentConfig
from actors.vm import desktop, qosapi
from actors.vm.params import check_plain_text
from actors.vm.proxies import VmProxy
from messaging.errors import InvalidParams
from messaging.server import Binding


class Verbs(Protocol):
    def verb(self, params: dict[str, Any],
             call: Callable[[VmProxy], pykka.Future[Future[Any]]]) -> Future[Any]: ...


def bindings(api: Verbs, config: GuestAgentConfig) -> dict[str, Binding]:
    def thaw_after(p: dict[str, Any]) -> float:
        after = p.get("thawAfter")
        return float(after) if after is not None else config.thaw_after

    def update_device(p: dict[str, Any]) -> Any:
        device = p["params"]
        if device["deviceType"] == "interface":
            return qosapi.update_interface(api, p)
        for key in ("macAddr", "specParams"):
            if key in device:
                raise InvalidParams(f"params.{key}", "only for deviceType interface")
        for key in ("password", "ttl"):
            if key not in device:
                raise InvalidParams(f"params.{key}", "required for deviceType graphics")
        password = check_plain_text(device["password"], "params.password")
        return api.verb(p, lambda vm: vm.set_ticket(password, device["ttl"]))

    return {
        "VM.reboot": Binding(lambda p: api.verb(
            p, lambda vm: vm.shutdown(p["delay"], p["message"], True, p["force"]))),
        "VM.setBalloonTarget": Binding(lambda p: api.verb(
            p, lambda vm: vm.set_balloon_target(p["target"]))),
        "VM.updateDevice": Binding(update_device),
        "VM.desktopLock": Binding(lambda p: api.verb(
            p, lambda vm: vm.run_in_guest(desktop.lock(config)))),
        "VM.desktopLogoff": Binding(lambda p: api.verb(
            p, lambda vm: vm.run_in_guest(desktop.logoff(config, p["username"])))),
        "VM.desktopLogin": Binding(lambda p: api.verb(
            p, lambda vm: vm.run_in_guest(desktop.login(
                config, p["domain"], p["username"], p["password"])))),
        "VM.freeze": Binding(lambda p: api.verb(p, lambda vm: vm.freeze(thaw_after(p)))),
        "VM.thaw": Binding(lambda p: api.verb(p, lambda vm: vm.thaw())),
    }
