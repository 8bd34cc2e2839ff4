"""The blocking steps of a migration, on both hosts: hooks and libvirt calls.

Like :class:`~actors.vm.ops.VmOps` (which this extends), every method runs off the actor's
thread: on the migration's own threads (:mod:`actors.vm.migrate`) or on the VM's
GuestCaller, holding a lease on the libvirt connection.

On the **source**: :meth:`MigrationOps.source_xml` runs ``before_vm_migrate_source`` and
returns the domain's migratable XML for the destination; :meth:`MigrationOps.migrate` is
libvirt's peer-to-peer migration (it blocks until libvirt is done); :meth:`abort` and
:meth:`set_limits` act on a migration in flight, from any connection.

On the **destination**: :meth:`MigrationOps.prepare_incoming` prepares the VM's volumes,
records it and makes the XML the guest will run with here: the source's XML goes through
the same sanitising as a restore (:mod:`actors.vm.restorexml`: this host's drive paths,
serial log, owner tag; nothing the agent never defines), then ``before_vm_migrate_destination``
and the display lock. A failure leaves nothing behind. :meth:`finish_incoming` runs
``after_vm_migrate_destination`` once the guest runs here; :meth:`drop_incoming` removes
what a migration that did not arrive left (the domain if any, volumes, the record).
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET  # only its ParseError
from typing import Any

import libvirt

from actors.vm import domxml, restorexml
from actors.vm.migspec import UNLIMITED_BANDWIDTH, completed_downtime, outgoing
from actors.vm.ops import VmOps
from actors.vm.params import VmParams
from messaging.errors import HookError, MigrationNotInProgress, VMError

log = logging.getLogger(__name__)

STATS_ATTEMPTS = 30  # x 0.1 s: waiting for libvirt's record of the completed migration


class MigrationOps(VmOps):
    # --- the source ----------------------------------------------------------------------

    def source_xml(self, params: VmParams) -> str:
        """``before_vm_migrate_source`` (a failure stops the migration before anything
        happened), then the domain's migratable XML."""
        dom = self._dom()
        self._hook("before_vm_migrate_source", self._xml(dom), params)
        with self._libvirt("reading the migratable domain XML"):
            xml: str = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        return xml

    def migrate(self, uri: str, params: dict[str, Any], flags: int) -> None:
        """libvirt's peer-to-peer migration to ``uri``; returns once the guest runs there."""
        dom = self._dom()
        with self._libvirt("migrating"):
            dom.migrateToURI3(uri, params, flags)

    def after_source(self, params: VmParams, xml: str) -> None:
        """``after_vm_migrate_source``: the guest left; a failure is only logged."""
        try:
            self._hook("after_vm_migrate_source", xml, params)
        except HookError as e:
            log.warning("VM %s: %s (the VM migrated nevertheless)", self.vm_id, e.message)

    def abort(self) -> bool:
        """Abort the migration in flight (from any connection)."""
        dom = self._dom()
        try:
            dom.abortJob()
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                raise MigrationNotInProgress(vmID=self.vm_id) from None
            raise self._translate(e, "aborting the migration") from e
        return True

    def set_limits(self, bandwidth: int | None, downtime: int | None) -> bool:
        """Change the bandwidth (MiB/s; 0: none) and the allowed downtime (ms) of the
        migration in flight."""
        dom = self._dom()
        with self._libvirt("changing the migration's limits"):
            if bandwidth is not None:
                dom.migrateSetMaxSpeed(bandwidth or UNLIMITED_BANDWIDTH, 0)
            if downtime is not None:
                dom.migrateSetMaxDowntime(downtime, 0)
        return True

    def migrating(self) -> bool | None:
        """Whether libvirt migrates the domain out now; None when there is no domain."""
        dom = self._lookup()
        if dom is None:
            return None
        try:
            return outgoing(dom.jobStats())
        except libvirt.libvirtError as e:
            if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN,
                                      libvirt.VIR_ERR_OPERATION_INVALID):
                return None  # it went away meanwhile ("domain is not running")
            raise self._translate(e, "reading the domain's job") from e

    # --- the destination -----------------------------------------------------------------

    def prepare_incoming(self, params: VmParams, source_xml: str, started: float | None) -> str:
        """Make the VM ready to arrive; the XML the destination's libvirtd gets."""
        if "<!DOCTYPE" in source_xml or "<!ENTITY" in source_xml:
            raise VMError(reason="the source's domain XML cannot run here: libvirt's XML "
                                 "has no DOCTYPE")
        conn = self._conn()
        self._check_free(conn, params)
        paths = self._prepare(params)
        recorded = False
        try:
            self.env.registry.add(params)
            recorded = True
            self.env.logs.prepare()
            try:
                xml = restorexml.restore_xml(
                    source_xml, params, serial_log=str(self.serial_log), drive_paths=paths,
                    owner=self.env.owner, started=started or 0.0)
            except (ValueError, ET.ParseError) as e:
                raise VMError(reason=f"the source's domain XML cannot run here: {e}") \
                    from None
            return domxml.locked_display(
                self._hook("before_vm_migrate_destination", xml, params))
        except BaseException:
            self._undo_start(params, recorded=recorded)
            raise

    def finish_incoming(self, params: VmParams) -> int | None:
        """The guest runs here: ``after_vm_migrate_destination`` (a failure is logged: the
        guest cannot go back); the migration's downtime (ms) if libvirt reports it."""
        dom = self._dom()
        try:
            self._hook("after_vm_migrate_destination", self._xml(dom), params)
        except HookError as e:
            log.warning("VM %s: %s (the VM migrated nevertheless)", self.vm_id, e.message)
        # libvirt records the completed job just after the guest resumed here: ask a few times
        for _ in range(STATS_ATTEMPTS):
            try:
                downtime = completed_downtime(
                    dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
            except libvirt.libvirtError as e:
                log.info("VM %s: no statistics of the migration: %s", self.vm_id, e)
                return None
            if downtime is not None:
                return downtime
            time.sleep(0.1)
        log.info("VM %s: libvirt did not report the migration's downtime", self.vm_id)
        return None

    def incoming_present(self) -> bool:
        """Whether the incoming domain exists here (arriving or arrived)."""
        return self._lookup() is not None

    def drop_incoming(self, params: VmParams) -> None:
        """A migration that did not arrive: its domain (if any) killed, volumes torn down,
        the VM forgotten by this host."""
        dom = self._lookup()
        if dom is not None:
            self._kill(dom)
        self._teardown(params)
        self.env.registry.remove(self.vm_id)
        self.env.logs.remove_if_empty(self.vm_id)

