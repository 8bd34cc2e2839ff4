"""Recovery and resync: make the VM actors match this agent's VMs.

After the agent starts (``vdsmd`` was restarted, perhaps SIGKILLed, while its VMs ran) and
after every libvirt reconnect, a pass runs in two steps:

1. For each VM of the :class:`~actors.vm.registry.VmRegistry`, look its domain up by UUID
   (never waiting on other domains' locks) and check its metadata names this agent as
   ``owner``. A VM without an actor gets one in ``recover`` mode, from the stored vmParams
   and the domain's current state (the guest is not touched); one whose domain is gone
   (it ended while the agent was away) is reported ``Down``. A VM with an actor is told to
   re-attach (events may have been missed while libvirt was away). The first pass that
   gets here opens the VM verbs (until then they answer ``Recovering``, code 100).
2. A sweep lists libvirt's active domains and adopts any of this agent's that the registry
   missed. A listing waits on every domain's lock (libvirt holds it through a destroy), so
   it runs after the verbs are open. Actors whose VM was seen in neither step re-attach
   too, find nothing and report ``Down``.

A VM whose migration a restart interrupted is started like any other: its actor finds the
unfinished job (``actors/vm/migcontrol.py``) and settles where the guest is, so a VM that
left this host is not reported ``Down``/``unknown`` by mistake.

A pass blocks (libvirt calls, asking the ``/vms`` supervisor to start children), so it runs
on a ``vm-recovery`` thread of its own, never on an actor's or libvirt's event thread;
:meth:`Resync.request` only flags that a pass is wanted.

VM actors that are gone while their VMs are not are found by :meth:`Resync.check`, run on
the clock every ``[vm] resync_interval``: when the ``/vms`` supervisor was restarted (its
VM actors stopped with it) or gave a VM's actor up, a VM on the board has no running actor;
seen so on two checks in a row (not a create or destroy in progress), it gets a pass, which
starts a new actor for it in ``recover`` mode. A given-up actor is started again at most
once per backoff (doubling from the interval up to :data:`RETRY_MAX`), so an actor that
keeps failing does not spin. Until then the API answers ``ActorUnavailable`` (102).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import libvirt
import pykka

from actors.directory import GAVE_UP, RUNNING, ActorDirectory
from actors.host.libvirtconn import LibvirtHandle
from actors.vm import domxml
from actors.vm.actor import Attach
from actors.vm.params import VmParams
from actors.vm.registry import VmRegistry
from actors.vm.status import ExitReason, Transition, VmStatus, read_state
from messaging.errors import ActorUnavailable, VdsmError

log = logging.getLogger(__name__)

RETRY_MAX = 300.0  # a VM actor given up again and again is retried this often at most
SUPERVISOR_WAIT = 30.0  # a pass waits this long for a (re)starting /vms supervisor


@dataclass(frozen=True)
class Found:
    """One of this agent's running domains."""

    params: VmParams
    state: Transition
    started: float | None


StartVm = Callable[[Found], None]


def find_own_domains(conn: libvirt.virConnect, owner: str) -> dict[str, Found]:
    """This agent's active domains, by vmID (domains of others and foreign ones skipped).
    Lists every domain: waits while libvirt destroys one."""
    found: dict[str, Found] = {}
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        vm = _own(dom, owner)
        if vm is not None:
            found[vm.params.vm_id] = vm
    return found


def find_domain(conn: libvirt.virConnect, vm_id: str, owner: str) -> Found | None:
    """The domain of ``vm_id`` if it runs and is this agent's (waits on no other domain)."""
    try:
        dom = conn.lookupByUUIDString(vm_id)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise
    return _own(dom, owner)


def _own(dom: libvirt.virDomain, owner: str) -> Found | None:
    try:
        if not dom.isActive():
            return None
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NS)
        stored = domxml.read_metadata(text)
        if stored is None or stored.owner != owner:
            return None
        params = VmParams.from_dict(dom.UUIDString(), stored.params)
        state = read_state(dom)
    except libvirt.libvirtError as e:
        if e.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN_METADATA,
                                      libvirt.VIR_ERR_NO_DOMAIN):
            log.warning("cannot read domain %s: %s", dom.name(), e)
        return None
    except (VdsmError, ValueError, KeyError, TypeError) as e:
        log.error("domain %s has unusable VM metadata: %s", dom.name(), e)
        return None
    return Found(params, state, stored.started)


class Resync:
    """Runs recovery passes on a thread of its own, one at a time, as often as requested."""

    def __init__(
        self,
        *,
        libvirt_handle: LibvirtHandle,
        owner: str,
        registry: VmRegistry,
        directory: ActorDirectory,
        vms_path: str,
        start_vm: StartVm,
        on_done: Callable[[], None],
        known: Callable[[], Collection[str]] = frozenset,
        interval: float = 5.0,
    ) -> None:
        self._libvirt = libvirt_handle
        self._owner = owner
        self._registry = registry
        self._directory = directory
        self._vms_path = vms_path
        self._start_vm = start_vm
        self._on_done = on_done
        self._known = known
        self._interval = interval
        self._lock = threading.Lock()
        self._wanted = False
        self._enabled = False
        self._thread: threading.Thread | None = None
        self._missing: set[str] = set()  # VMs without a running actor at the last check
        self._retries: dict[str, tuple[float, int]] = {}  # given-up VM -> (next try, tries)
        self.passes = 0

    def enable(self) -> None:
        """Allow passes (once the supervision tree is up) and run one."""
        with self._lock:
            self._enabled = True
        self.request()

    def request(self) -> None:
        """Ask for a pass; never blocks (called from libvirt's actor thread)."""
        with self._lock:
            self._wanted = True
            if not self._enabled or self._thread is not None:
                return  # the running pass loops again
            self._thread = threading.Thread(target=self._loop, name="vm-recovery",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._wanted:
                    self._thread = None
                    return
                self._wanted = False
            try:
                self.run_once()
            except VdsmError as e:  # LibvirtUnavailable: the next reconnect asks again
                log.info("VM recovery postponed: %s", e.message)
            except libvirt.libvirtError as e:
                log.warning("VM recovery failed: %s", e)
            except Exception:
                log.exception("VM recovery failed")

    def check(self) -> None:
        """Ask for a pass when a VM the agent knows has had no running actor on two checks
        in a row. Runs on the clock's thread: reads memory only, never blocks."""
        known = set(self._known())
        gave_up = {v for v in known if self._actor_state(v) == GAVE_UP}
        missing = {v for v in known if self._actor_state(v) is None} | gave_up
        now = time.monotonic()
        with self._lock:
            self._retries = {v: r for v, r in self._retries.items() if v in known}
            due = {v for v in missing & self._missing
                   if v not in gave_up or self._retries.get(v, (0.0, 0))[0] <= now}
        self._missing = missing
        if due:
            log.warning("VMs without a running actor: %s; recovering them",
                        ", ".join(sorted(due)))
            self.request()

    def _actor_state(self, vm_id: str) -> str | None:
        info = self._directory.get(f"{self._vms_path}/{vm_id}")
        return None if info is None else info.state

    def run_once(self) -> None:
        self._wait_for_supervisor()
        with self._libvirt.lease() as conn:  # not closed under the pass
            self._run_once(conn)

    def _run_once(self, conn: libvirt.virConnect) -> None:
        seen: set[str] = set()
        for vm_id, params in self._registry.entries().items():
            found = find_domain(conn, vm_id, self._owner)
            if found is None:  # it ended while nobody watched
                found = Found(params, Transition(VmStatus.DOWN,
                                                 exit_reason=ExitReason.UNKNOWN), None)
            seen.add(vm_id)
            self._ensure(found)
        self._on_done()
        strays = {k: v for k, v in find_own_domains(conn, self._owner).items()
                  if k not in seen}
        for found in strays.values():
            log.warning("VM %s runs but was not in the registry: adopting it",
                        found.params.vm_id)
            self._registry.add(found.params)
            self._ensure(found)
        seen.update(strays)
        for info in self._directory.children(self._vms_path):
            name = info.path.rsplit("/", 1)[-1]
            if _is_uuid(name) and name not in seen:
                _attach(info.ref)
        self.passes += 1
        log.info("VM recovery pass %d: %d VMs of ours (%d adopted from libvirt)",
                 self.passes, len(seen), len(strays))

    def _wait_for_supervisor(self) -> None:
        """Until ``/vms`` runs (it may be restarting); ActorUnavailable past the wait."""
        deadline = time.monotonic() + SUPERVISOR_WAIT
        while True:
            info = self._directory.get(self._vms_path)
            if info is not None and info.state == RUNNING:
                return
            if time.monotonic() > deadline:
                raise ActorUnavailable(path=self._vms_path,
                                       reason=info.state if info else "not started")
            time.sleep(0.05)

    def _ensure(self, found: Found) -> None:
        """Start an actor for the VM (also in place of a given-up one, with a backoff), or
        tell its actor to re-attach."""
        vm_id = found.params.vm_id
        info = self._directory.get(f"{self._vms_path}/{vm_id}")
        if info is not None and info.state != GAVE_UP:
            _attach(info.ref)
            return
        if info is not None and not self._may_retry(vm_id):
            return
        if vm_id not in self._registry:
            return  # destroyed meanwhile
        try:
            self._start_vm(found)
        except Exception as e:  # noqa: BLE001 - one VM must not stop the others
            log.error("cannot recover VM %s: %s", vm_id, e)

    def _may_retry(self, vm_id: str) -> bool:
        """A given-up VM actor is started again with a doubling delay between tries."""
        now = time.monotonic()
        with self._lock:
            next_try, tries = self._retries.get(vm_id, (0.0, 0))
            if now < next_try:
                return False
            delay = min(RETRY_MAX, self._interval * 2 ** tries)
            self._retries[vm_id] = (now + delay, tries + 1)
        log.warning("VM %s: its actor was given up; starting it again (try %d)", vm_id,
                    tries + 1)
        return True


def _attach(ref: pykka.ActorRef[Any] | None) -> None:
    if ref is None:
        return  # restarting: it re-attaches by itself
    try:
        ref.tell(Attach())
    except pykka.ActorDeadError:
        pass  # stopped meanwhile


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
