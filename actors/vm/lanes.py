"""Lanes: how one VM's operations start: on which lane (kind), with what deadline.

A plain helper of :class:`~actors.vm.actor.VmActor`, used on its thread only. At most one
operation of each kind runs at a time (:class:`~actors.vm.inflight.InFlight` answers
``VMBusy`` otherwise): ``control`` (the verbs that change the guest), ``destroy`` (its own
kind, so that a VM whose qemu is stuck in a control call can still be destroyed), ``query``
(re-attaching) and ``read`` (the QoS reads). A deadline is the configured call timeout plus
the budget of the hooks the operation runs.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from actors.config import VmConfig
from actors.vm.inflight import InFlight
from actors.vm.migcontrol import MigrationControl
from actors.vm.ops import VmOps
from actors.vm.params import VmParams
from actors.vm.status import VmStatus
from actors.vm.vmstate import VmState
from messaging.errors import VMError

CONTROL, DESTROY, QUERY, READ = "control", "destroy", "query", "read"


def destroy_timeout(config: VmConfig, ops: VmOps) -> float:
    """The deadline of a destroy, its hooks included."""
    return config.destroy_timeout + ops.hook_budget("before_vm_destroy", "after_vm_destroy")


class Lanes:
    def __init__(self, state: VmState, *, inflight: InFlight, ops: VmOps, config: VmConfig,
                 migrations: MigrationControl | None) -> None:
        self._state = state
        self._inflight = inflight
        self._ops = ops
        self._config = config
        self._migrations = migrations

    def control(
        self,
        name: str,
        hooks: tuple[str, ...],
        call: Callable[[VmParams], Any],
        on_ok: Callable[[Any], Any],
        *,
        timeout: float | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> Future[Any]:
        """A control operation: ``call(params)`` once no control, destroy or migration runs."""
        self._check_up()
        self._inflight.check_idle(CONTROL, DESTROY)
        if self._migrations is not None:
            self._migrations.busy()
        base = self._config.call_timeout if timeout is None else timeout
        params = self._state.params
        return self.submit(name, CONTROL, timeout=base + self._ops.hook_budget(*hooks),
                           on_ok=on_ok, on_error=on_error, work=lambda _c: call(params))

    def read(self, name: str, call: Callable[[VmOps], Any]) -> Future[Any]:
        """A read on a lane of its own: it never waits for a control operation."""
        self._check_up()
        self._inflight.check_idle(READ)
        ops = self._ops
        return self.submit(name, READ, timeout=self._config.call_timeout, on_ok=_same,
                           work=lambda _c: call(ops))

    def submit(
        self,
        name: str,
        kind: str,
        *,
        timeout: float,
        on_ok: Callable[[Any], Any],
        on_error: Callable[[BaseException], None] | None = None,
        work: Callable[[Any], Any],
    ) -> Future[Any]:
        return self._inflight.submit(name, kind, timeout=timeout, work=work, on_ok=on_ok,
                                     on_error=on_error,
                                     events_at_start=self._state.changes_seen)

    def running(self, *kinds: str) -> bool:
        return self._inflight.running(*kinds)

    def destroy_timeout(self) -> float:
        return destroy_timeout(self._config, self._ops)

    def _check_up(self) -> None:
        if self._state.status == VmStatus.DOWN:
            raise VMError(reason=f"VM {self._state.vm_id} is Down")


def _same(result: Any) -> Any:
    return result
