"""Handlers of the Actors.* verbs: the live supervision tree, for vdsm-console."""

from __future__ import annotations

import time
from typing import Any

import pykka

from actors.base import InjectedFault, InspectProxy, Runtime
from actors.directory import typed_proxy
from messaging.errors import Forbidden, NoSuchActor
from messaging.server import Binding

INSPECT_TIMEOUT = 2.0


def bindings(runtime: Runtime) -> dict[str, Binding]:
    directory = runtime.directory

    def list_actors(_params: dict[str, Any]) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [info.to_wire(now) for info in directory]

    def inspect(params: dict[str, Any]) -> dict[str, Any]:
        info = directory.get(params["path"])
        if info is None:
            raise NoSuchActor(path=params["path"])
        result = info.to_wire()
        if info.policy is not None:
            result["policy"] = info.policy
        result["children"] = [c.path for c in directory.children(info.path)]
        if info.ref is None or not info.ref.is_alive():
            result["answering"] = False
            return result
        try:
            own = typed_proxy(info.ref, InspectProxy).inspect().get(timeout=INSPECT_TIMEOUT)
        except pykka.Timeout:
            result["answering"] = False
            result["note"] = f"did not answer within {INSPECT_TIMEOUT:g} s (busy or stuck)"
            return result
        except pykka.ActorDeadError:
            result["answering"] = False
            return result
        result["answering"] = True
        result.update(own)
        return result

    def crash(params: dict[str, Any]) -> bool:
        if not runtime.fault_injection:
            raise Forbidden(what="fault injection", how="set [debug] fault_injection = true")
        info = directory.get(params["path"])
        if info is None or info.ref is None:
            raise NoSuchActor(path=params["path"])
        info.ref.tell(InjectedFault(params["reason"]))
        return True

    return {
        "Actors.list": Binding(list_actors, inline=True),
        "Actors.inspect": Binding(inspect),
        "Actors.crash": Binding(crash),
    }
