"""Handlers of a VM's QoS verbs: ``VM.setCpuTuneQuota``, ``VM.setCpuTunePeriod``,
``VM.setIoTune``, ``VM.getIoTune`` and a NIC's limits through ``VM.updateDevice``
(``deviceType: interface``). They run on API worker threads like the other VM verbs
(:mod:`actors.vm.api`): the values are checked here (:mod:`actors.vm.qos`), before any actor
is asked; then the VM's actor runs the libvirt calls as an operation and the handler returns
its future.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

import pykka

from actors.vm import qos
from actors.vm.ops import VmOps
from actors.vm.proxies import VmProxy
from messaging.errors import InvalidParams
from messaging.server import Binding


class Verbs(Protocol):
    def verb(self, params: dict[str, Any],
             call: Callable[[VmProxy], pykka.Future[Future[Any]]]) -> Future[Any]: ...


def _then_true(call: Callable[[VmOps], object]) -> Callable[[VmOps], bool]:
    def run(ops: VmOps) -> bool:
        call(ops)
        return True

    return run


def bindings(api: Verbs) -> dict[str, Binding]:
    def set_quota(p: dict[str, Any]) -> Any:
        tune = qos.CpuTune(quota=qos.parse_quota(p["quota"]))
        return api.verb(p, lambda vm: vm.tune(
            "VM.setCpuTuneQuota", _then_true(lambda ops: qos.set_cpu_tune(ops, tune))))

    def set_period(p: dict[str, Any]) -> Any:
        tune = qos.CpuTune(period=qos.parse_period(p["period"]))
        return api.verb(p, lambda vm: vm.tune(
            "VM.setCpuTunePeriod", _then_true(lambda ops: qos.set_cpu_tune(ops, tune))))

    def set_io_tune(p: dict[str, Any]) -> Any:
        tunes = qos.check_io_tune(p["tunables"])
        return api.verb(p, lambda vm: vm.tune(
            "VM.setIoTune", lambda ops: qos.set_io_tune(ops, tunes)))

    def get_io_tune(p: dict[str, Any]) -> Any:
        return api.verb(p, lambda vm: vm.tune("VM.getIoTune", qos.get_io_tune, read=True))

    return {
        "VM.setCpuTuneQuota": Binding(set_quota),
        "VM.setCpuTunePeriod": Binding(set_period),
        "VM.setIoTune": Binding(set_io_tune),
        "VM.getIoTune": Binding(get_io_tune),
    }


def update_interface(api: Verbs, p: dict[str, Any]) -> Any:
    """VM.updateDevice with ``deviceType: interface``: the NIC's bandwidth limits."""
    device = p["params"]
    for key in ("password", "ttl"):
        if key in device:
            raise InvalidParams(f"params.{key}", "only for deviceType graphics")
    if "specParams" not in device:
        raise InvalidParams("params.specParams", "required for deviceType interface")
    rates = qos.check_bandwidth(device["specParams"])
    mac = device.get("macAddr")
    return api.verb(p, lambda vm: vm.tune(
        "VM.updateDevice", _then_true(lambda ops: qos.set_bandwidth(ops, mac, rates))))
