"""The blocking operations of one VM: hooks and libvirt calls, in the order each verb needs.

:class:`VmOps` is a plain class: each method runs on a :class:`~actors.vm.guestcall.GuestCaller`
thread that the VM actor started, never on the actor's own thread, because a call into a
stuck qemu may never return and a hook may run for its whole timeout. A method returns what
the actor needs to update its state (never touching that state itself) or raises one of the
agent's errors:

- a libvirt failure becomes :class:`~messaging.errors.VMError` quoting libvirt's message (or
  ``LibvirtUnavailable`` when the connection itself broke);
- a failing ``before_*`` hook stops the verb before anything happened
  (:class:`~messaging.errors.HookError` names the hook);
- a failing ``after_vm_start``/``after_vm_dehibernate`` hook destroys the VM it just started:
  no half-started VM is left behind;
- a failing ``after_*`` hook of another verb fails the verb too, saying that the action
  itself was done (it cannot be undone).

Start and restore make *transient* domains (``createXML``/``restoreFlags``): libvirt forgets
them once they stop, and :mod:`actors.vm.recovery` finds running ones by their metadata.
Whatever XML they hand libvirt, their display is locked
(:func:`~actors.vm.domxml.locked_display`), also after the hooks; a restore takes from the
memory image's XML only what :mod:`actors.vm.restorexml` lets through.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import xml.etree.ElementTree as ET  # only its ParseError, for a broken save image
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import libvirt

from actors.config import GuestAgentConfig, ThinConfig, VmConfig
from actors.host.libvirtconn import LibvirtHandle
from actors.storage.handle import VolumeHandle, VolumeSize
from actors.vm import domxml, restorexml
from actors.vm.hooks import HookRunner
from actors.vm.migenv import MigrationEnv
from actors.vm.params import MemoryImage, VmParams, VolumeRef
from actors.vm.paths import create_memory_image
from actors.vm.registry import VmRegistry
from actors.vm.seriallog import SerialLogs
from actors.vm.status import Transition, read_state
from messaging.errors import (
    GuestCallTimeout,
    HookError,
    LibvirtUnavailable,
    VdsmError,
    VMError,
    VMExists,
    VolumeInUse,
)

log = logging.getLogger(__name__)

LIBVIRT_JOB_WAIT = 30.0  # how long libvirt waits for a domain's job before it gives up
UNEXPLAINED_RETRIES = 3  # a libvirt call that failed without recording an error: tries
#: wraps a save or a restore, given the memory image's path (its progress in bytes)
ImageWatch = Callable[[str], contextlib.AbstractContextManager[None]]


def unwatched(_path: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


class VolumeProvider(Protocol):
    """What the VMs need from storage: a prepared volume's path for a VM, and its teardown;
    for thin provisioning (:mod:`actors.vm.thin`) a volume's sizes, its extension (through
    the SPM: blocks until this host sees the new size, which it returns) and whether a
    domain is valid (a memory read)."""

    def prepare_volume(self, volume: VolumeHandle, vm_id: str, /) -> str: ...

    def teardown_volume(self, volume: VolumeHandle, vm_id: str, /) -> object: ...

    def volume_size(self, volume: VolumeHandle, /) -> VolumeSize: ...

    def extend_volume(self, volume: VolumeHandle, size: int, /, *, since: float | None = None,
                      timeout: float | None = None) -> int: ...

    def domain_valid(self, sd_uuid: str, /) -> bool | None: ...


def check_unused(registry: VmRegistry, v: MemoryImage | None) -> None:
    """A memory image never goes over (or comes from) a drive of a VM of this host: checked
    by the API before a hibernation or restore job is accepted, and again by the job."""
    if not isinstance(v, VolumeRef):
        return
    for vm_id, other in registry.entries().items():
        if any(drive.volume == v for drive in other.drives):
            raise VolumeInUse(volUUID=v.volume_id, reason=f"a drive of VM {vm_id}")


def _handle(v: VolumeRef) -> VolumeHandle:
    return VolumeHandle(v.pool_id, v.domain_id, v.image_id, v.volume_id)


@dataclass(frozen=True)
class VmEnv:
    """What the operations of every VM share (thread-safe, passed explicitly)."""

    libvirt: LibvirtHandle
    hooks: HookRunner
    storage: VolumeProvider
    config: VmConfig
    owner: str  # written into the metadata: this agent's domains are the ones it recovers
    logs: SerialLogs  # one serial log file per VM
    registry: VmRegistry  # the index recovery starts from
    migration: MigrationEnv | None = None  # None: this agent does not migrate (unit tests)
    agent: GuestAgentConfig = field(default_factory=GuestAgentConfig)  # the guest agents
    thin: ThinConfig = field(default_factory=ThinConfig)  # thin provisioning (extender.py)


@dataclass(frozen=True)
class Started:
    """A started (or restored) VM: the params its metadata holds and its state."""

    params: VmParams
    started: float
    state: Transition
    display: tuple[dict[str, Any], ...] = ()  # the stats' displayInfo


@dataclass(frozen=True)
class Attached:
    """A running domain found again: its stored params (None if unreadable) and state."""

    params: VmParams | None
    started: float | None
    state: Transition
    display: tuple[dict[str, Any], ...] = ()


class VmOps:
    """The blocking operations of the VM ``vm_id``. Stateless: safe from any thread."""

    def __init__(self, vm_id: str, env: VmEnv) -> None:
        self.vm_id = vm_id
        self.env = env

    @property
    def serial_log(self) -> Path:
        return self.env.logs.path(self.vm_id)

    def hook_budget(self, *hooks: str) -> float:
        """The most the given hooks may take together (each executable has a timeout)."""
        scripts = sum(len(self.env.hooks.scripts(h)) for h in hooks)
        return scripts * (self.env.hooks.timeout + 1.0)

    # --- start, restore, destroy ---------------------------------------------------------

    def start(self, params: VmParams, cancelled: threading.Event,
              watch: ImageWatch = unwatched) -> Started:
        """Create (or restore, with ``restore_state``) the domain. ``cancelled`` is set by
        the actor if it gave up waiting: a domain made after that is destroyed here.
        ``watch``: wraps the restore (given the image's path), to sample its progress.

        The paths in ``params`` were checked by :class:`~actors.vm.paths.PathPolicy`. A
        failure leaves nothing behind: no registry entry, no prepared volume, no empty log
        (an existing VM's, refused with ``VMExists``, is not touched at all)."""
        conn = self._conn()
        self._check_free(conn, params)
        paths = self._prepare(params)
        recorded = False
        try:
            started = time.time()
            stored = params.without_restore_state()
            self.env.registry.add(stored)  # before the domain exists: a crash cannot lose it
            recorded = True
            self.env.logs.prepare()
            if params.restore_state is not None:
                dom = self._restore(conn, params.restore_state, stored, paths, started,
                                    watch=watch)
                after = "after_vm_dehibernate"
            else:
                xml = domxml.build_domain_xml(
                    stored, serial_log=str(self.serial_log), drive_paths=paths,
                    owner=self.env.owner, started=started,
                    balloon_period=math.ceil(self.env.config.stats_interval),
                )
                xml = domxml.locked_display(self._hook("before_vm_start", xml, params))
                with self._libvirt("starting the VM"):
                    dom = conn.createXML(xml, 0)
                after = "after_vm_start"
            if cancelled.is_set():
                self._kill(dom)
                raise VMError(reason="the start was abandoned (it took too long)")
            live = self._xml(dom)
            try:
                self._hook(after, live, params)
            except HookError:
                self._kill(dom)
                raise
            with self._libvirt("reading the VM state"):
                state = read_state(dom)
            if isinstance(params.restore_state, str):
                self._consume(params.restore_state)
            return Started(stored, started, state, domxml.display_info(live))
        except BaseException:
            self._undo_start(params, recorded=recorded)
            raise

    def _restore(
        self, conn: libvirt.virConnect, image: MemoryImage, stored: VmParams,
        paths: dict[int, str], started: float, *, watch: ImageWatch,
    ) -> libvirt.virDomain:
        if isinstance(image, str):
            return self._restore_from(conn, image, stored, paths, started, watch=watch)
        self._check_unused(image)
        path = self._prepare_one(image)
        try:
            return self._restore_from(conn, path, stored, paths, started, watch=watch)
        finally:
            self._teardown_one(image)  # libvirt has read the whole image

    def _restore_from(
        self, conn: libvirt.virConnect, path: str, stored: VmParams, paths: dict[int, str],
        started: float, *, watch: ImageWatch,
    ) -> libvirt.virDomain:
        with self._libvirt(f"reading the saved state {path}"):
            image_xml = conn.saveImageGetXMLDesc(path, 0)
        owner = domxml.domain_uuid(image_xml)
        if owner != self.vm_id:
            raise VMError(reason=f"{path} holds the state of VM {owner}, not of {self.vm_id}")
        try:
            xml = restorexml.restore_xml(image_xml, stored, serial_log=str(self.serial_log),
                                         drive_paths=paths, owner=self.env.owner,
                                         started=started)
        except (ValueError, ET.ParseError) as e:
            raise VMError(reason=f"{path} cannot be restored: {e}") from None
        xml = domxml.locked_display(self._hook("before_vm_dehibernate", xml, stored))
        with self._libvirt(f"restoring the VM from {path}"), watch(path):
            conn.restoreFlags(path, xml, 0)
            return conn.lookupByUUIDString(self.vm_id)

    def _consume(self, path: str) -> None:
        """Remove a memory image once its VM runs again: restoring it a second time would
        fork the guest (two copies writing the same disks), and the hibernation directory
        must not fill up with stale images."""
        try:
            Path(path).unlink()
        except OSError as e:
            log.warning("VM %s: cannot remove the restored memory image %s: %s", self.vm_id,
                        path, e)

    def destroy(self, params: VmParams) -> None:
        """Power the VM off at once (if it runs) and tear its volumes down."""
        dom = self._lookup()
        xml = None
        if dom is not None:
            xml = self._xml(dom)
            self._hook("before_vm_destroy", xml, params)
            self._kill(dom)
        self._teardown(params)
        if xml is not None:
            self._after("after_vm_destroy", xml, params, "the VM was destroyed")

    def _kill(self, dom: libvirt.virDomain) -> None:
        try:
            dom.destroy()
        except libvirt.libvirtError as e:
            if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN,
                                      libvirt.VIR_ERR_OPERATION_INVALID):
                return  # it is gone already
            raise self._translate(e, "destroying the VM") from e

    # --- lifecycle verbs -------------------------------------------------------------------

    def pause(self, params: VmParams) -> Transition:
        dom = self._dom()
        self._hook("before_vm_pause", self._xml(dom), params)
        with self._libvirt("pausing the VM"):
            dom.suspend()
        self._after("after_vm_pause", self._xml(dom), params, "the VM was paused")
        return self._state(dom)

    def cont(self, params: VmParams) -> Transition:
        dom = self._dom()
        self._hook("before_vm_cont", self._xml(dom), params)
        with self._libvirt("resuming the VM"):
            dom.resume()
        self._after("after_vm_cont", self._xml(dom), params, "the VM was resumed")
        return self._state(dom)

    def reset(self) -> None:
        dom = self._dom()
        with self._libvirt("resetting the VM"):
            dom.reset(0)

    def shutdown(self, params: VmParams, message: str, *, reboot: bool = False,
                 agent: Callable[[bool], None] | None = None) -> str:
        """Ask the guest to power off (or reboot): through ``agent`` (the guest agent's
        bounded shutdown) when given, with the ACPI power button when there is none or it
        fails. Returns how: ``"agent"`` or ``"acpi"``."""
        dom = self._dom()
        self._hook("before_vm_shutdown", self._xml(dom), params)
        what = "reboot" if reboot else "power off"
        if message:
            log.info("VM %s (%s): asking the guest to %s: %s", self.vm_id, params.name, what,
                     message)
        if agent is not None:
            try:
                agent(reboot)
            except VdsmError as e:
                log.info("VM %s: the guest agent did not %s the guest (%s): ACPI instead",
                         self.vm_id, what, e)
            else:
                log.info("VM %s: the guest agent asked the guest to %s", self.vm_id, what)
                return "agent"
        with self._libvirt(f"sending the ACPI {'reboot' if reboot else 'power-off'}"):
            if reboot:
                dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
            else:
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        return "acpi"

    def set_balloon_target(self, target: int) -> None:
        """Inflate or deflate the balloon so that the guest holds ``target`` KiB."""
        dom = self._dom()
        with self._libvirt("setting the balloon target"):
            dom.setMemoryFlags(target, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def hibernate(self, params: VmParams, target: MemoryImage,
                  watch: ImageWatch = unwatched) -> None:
        """Save the VM's memory to ``target``: a volume that no VM uses (prepared for the
        save, torn down after it), or a new file of the hibernation directory (checked by
        :meth:`~actors.vm.paths.PathPolicy.new_memory_image`), created here with mode 0600
        before libvirt writes into it and removed again if the save fails. ``watch``:
        wraps the save (given the image's path), to sample its progress."""
        dom = self._dom()
        xml = self._xml(dom)
        self._hook("before_vm_hibernate", xml, params)
        if isinstance(target, VolumeRef):
            self._check_unused(target)
            path = self._prepare_one(target)
            try:
                with self._libvirt(f"saving the VM state to volume {target.volume_id}"), \
                        watch(path):
                    dom.save(path)
            finally:
                self._teardown_one(target)
        else:
            create_memory_image(target)
            try:
                with self._libvirt(f"saving the VM state to {target}"), watch(target):
                    dom.save(target)
            except BaseException:
                with contextlib.suppress(OSError):
                    Path(target).unlink()
                raise
        self._after("after_vm_hibernate", xml, params, "the VM state was saved")

    # --- devices ---------------------------------------------------------------------------

    def set_ticket(self, params: VmParams, password: str, ttl: int) -> None:
        dom = self._dom()
        with self._libvirt("reading the display"):
            secure = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
        try:
            device = domxml.graphics_ticket_xml(secure, password, time.time() + ttl)
        except LookupError as e:
            raise VMError(reason=str(e)) from None
        xml = self._xml(dom)
        self._hook("before_vm_set_ticket", xml, params)
        with self._libvirt("setting the display password"):
            dom.updateDeviceFlags(device, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        self._after("after_vm_set_ticket", xml, params, "the ticket was set")

    def change_media(
        self,
        params: VmParams,
        device: Literal["cdrom", "floppy"],
        path: str,
        started: float | None,
    ) -> VmParams:
        """Insert ``path`` ("" ejects); returns the params with the new media (also stored)."""
        try:
            changed = params.with_media(device, path)
            disk = domxml.change_media_xml(self._xml(dom := self._dom()), device, path)
        except LookupError as e:
            raise VMError(reason=str(e)) from None
        live = libvirt.VIR_DOMAIN_AFFECT_LIVE
        with self._libvirt(f"changing the {device} media"):
            dom.updateDeviceFlags(disk, live | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE)
        with self._libvirt("storing the VM parameters"):
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                domxml.metadata_xml(changed, owner=self.env.owner, started=started),
                domxml.METADATA_PREFIX, domxml.METADATA_NS, live,
            )
        return changed

    # --- re-attaching ----------------------------------------------------------------------

    def attach(self) -> Attached | None:
        """The running domain and what its metadata says; None when there is none."""
        dom = self._lookup()
        if dom is None:
            return None
        with self._libvirt("reading the VM"):
            xml = dom.XMLDesc(0)
            stored = domxml.read_metadata(xml)
            state = read_state(dom)
        params = None
        if stored is not None:
            try:
                params = VmParams.from_dict(self.vm_id, stored.params)
            except (VdsmError, KeyError, TypeError, ValueError) as e:
                log.error("VM %s: its stored params are unusable: %s", self.vm_id, e)
        return Attached(params, stored.started if stored else None, state,
                        domxml.display_info(xml))

    # --- for the QoS operations (actors/vm/qos.py) ----------------------------------------

    def domain(self) -> libvirt.virDomain:
        """The VM's domain; VMError when it does not run."""
        return self._dom()

    def calling(self, what: str) -> contextlib.AbstractContextManager[None]:
        """libvirt's errors inside become the agent's (``what`` names the call)."""
        return self._libvirt(what)

    def live_xml(self, dom: libvirt.virDomain) -> str:
        return self._xml(dom)

    # --- helpers ---------------------------------------------------------------------------

    def _conn(self) -> libvirt.virConnect:
        return self.env.libvirt.get()

    def _lookup(self) -> libvirt.virDomain | None:
        try:
            return self._conn().lookupByUUIDString(self.vm_id)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise self._translate(e, "looking the VM up") from e

    def _dom(self) -> libvirt.virDomain:
        dom = self._lookup()
        if dom is None:
            raise VMError(reason=f"VM {self.vm_id} is not running (no libvirt domain)")
        return dom

    def _xml(self, dom: libvirt.virDomain) -> str:
        with self._libvirt("reading the domain XML"):
            xml: str = dom.XMLDesc(0)
        return xml

    def _state(self, dom: libvirt.virDomain) -> Transition:
        with self._libvirt("reading the VM state"):
            return read_state(dom)

    def _check_free(self, conn: libvirt.virConnect, params: VmParams) -> None:
        """No domain has this VM's UUID or name. One listing, compared locally: a lookup by
        name right after libvirt removed a domain of that name (a save, a destroy) was seen
        to fail here with no error at all (libvirt 9.0), which refused the restore of a
        VM that had just been hibernated."""
        for attempt in range(UNEXPLAINED_RETRIES):
            try:
                domains = conn.listAllDomains(0)
                break
            except libvirt.libvirtError as e:
                if e.get_error_code() is None and attempt + 1 < UNEXPLAINED_RETRIES:
                    log.info("VM %s: listing the domains failed with no error; again",
                             self.vm_id)
                    time.sleep(0.1)
                    continue
                raise self._translate(e, "listing the domains") from e
        for other in domains:
            if other.UUIDString() == self.vm_id:
                raise VMExists(vmID=self.vm_id)
            if other.name() == params.name:
                raise VMError(reason=f"a VM named {params.name!r} already exists "
                                     f"(vmID {other.UUIDString()})")

    def _prepare(self, params: VmParams) -> dict[int, str]:
        paths: dict[int, str] = {}
        try:
            for drive in params.drives:
                if drive.volume is not None:
                    paths[drive.index] = self._prepare_one(drive.volume)
        except BaseException:
            self._teardown(params, only=set(paths))
            raise
        return paths

    def _prepare_one(self, v: VolumeRef) -> str:
        return self.env.storage.prepare_volume(_handle(v), self.vm_id)

    def _teardown_one(self, v: VolumeRef) -> None:
        try:
            self.env.storage.teardown_volume(_handle(v), self.vm_id)
        except Exception as e:  # noqa: BLE001 - logged; the VM's own outcome stands
            log.warning("VM %s: tearing down volume %s failed: %s", self.vm_id, v.volume_id,
                        e)

    def _check_unused(self, v: VolumeRef) -> None:
        check_unused(self.env.registry, v)

    def _teardown(self, params: VmParams, only: set[int] | None = None) -> None:
        for drive in params.drives:
            if drive.volume is not None and (only is None or drive.index in only):
                self._teardown_one(drive.volume)  # one failure must not stop the rest

    def _undo_start(self, params: VmParams, *, recorded: bool) -> None:
        """What a start (or an incoming migration) that failed leaves behind goes: its
        prepared volumes, its registry entry if ``recorded``, its log if empty."""
        self._teardown(params)
        if recorded:
            self.env.registry.remove(self.vm_id)
        self.env.logs.remove_if_empty(self.vm_id)

    def _hook(self, hook: str, xml: str, params: VmParams) -> str:
        return self.env.hooks.run(hook, xml, vm_id=self.vm_id, env=params.custom)

    def _after(self, hook: str, xml: str, params: VmParams, done: str) -> None:
        try:
            self._hook(hook, xml, params)
        except HookError as e:
            reason = f"{e.fields.get('reason', e.message)} ({done} nevertheless)"
            raise HookError(hook=e.fields.get("hook", hook), reason=reason) from None

    @contextlib.contextmanager
    def _libvirt(self, what: str) -> Iterator[None]:
        try:
            yield
        except libvirt.libvirtError as e:
            raise self._translate(e, what) from e

    def _translate(self, error: libvirt.libvirtError, what: str) -> VdsmError:
        """A libvirt error as the agent reports it. Only a dead connection is
        ``LibvirtUnavailable``: error codes cannot tell (VIR_ERR_SYSTEM_ERROR also means "no
        such kernel file", an RPC error may be libvirtd's own trouble with virtlogd)."""
        if error.get_error_code() == libvirt.VIR_ERR_OPERATION_TIMEOUT:
            return GuestCallTimeout(vmID=self.vm_id, call=what, timeout=LIBVIRT_JOB_WAIT)
        if not self._connection_alive():
            return LibvirtUnavailable(reason=str(error))
        message = error.get_error_message()
        if message is None:  # libvirt recorded no error: its default text names the call
            message = f"{error} (libvirt recorded no error)"
        return VMError(reason=f"{what} failed: {message}")

    def _connection_alive(self) -> bool:
        try:
            return bool(self.env.libvirt.get().isAlive() == 1)  # local check, no RPC
        except (LibvirtUnavailable, libvirt.libvirtError):
            return False
