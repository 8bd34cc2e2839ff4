"""Typed proxies of the storage actors: every method the verb handlers, the VMs' storage
interface and the subsystem ask of them through a proxy, checked by mypy at the seam (see
:func:`actors.directory.typed_proxy`).

A method called through one of these actors' proxies must be named here: any other
attribute is a type error, and so are wrong arguments or a misread answer (each method's
answer is a ``pykka.Future`` of what the actor method returns; domain I/O is a
:class:`concurrent.futures.Future` of its result, waited on by
:meth:`~actors.storage.calls.StorageCalls.io`).
"""

from __future__ import annotations

import pykka
from pykka.typing import proxy_method

from actors.storage.connections import ConnectionsActor
from actors.storage.domains import DomainsActor
from actors.storage.mailbox.actors import MailboxActor
from actors.storage.pool import PoolActor
from actors.storage.spm.leaseactor import LeaseActor
from actors.storage.state import PoolRecord
from actors.storage.tasks import TaskManager


class DomainsProxy:
    """``/storage/domains``: domain and volume I/O on its lanes."""

    create_domain = proxy_method(DomainsActor.create_domain)
    info = proxy_method(DomainsActor.info)
    stats = proxy_method(DomainsActor.stats)
    pool_membership = proxy_method(DomainsActor.pool_membership)
    create_pool = proxy_method(DomainsActor.create_pool)
    volume_info = proxy_method(DomainsActor.volume_info)
    refresh_volume = proxy_method(DomainsActor.refresh_volume)
    volume_size = proxy_method(DomainsActor.volume_size)
    check_new_volume = proxy_method(DomainsActor.check_new_volume)
    check_deletable = proxy_method(DomainsActor.check_deletable)
    prepare = proxy_method(DomainsActor.prepare)
    teardown_image = proxy_method(DomainsActor.teardown_image)


class ConnectionsProxy:
    """``/storage/connections``."""

    connect = proxy_method(ConnectionsActor.connect)
    disconnect = proxy_method(ConnectionsActor.disconnect)


class PoolProxy:
    """``/storage/pools/<spUUID>/pool``."""

    record: pykka.Future[PoolRecord]  # a field: its value, read on the actor's thread
    when_loaded = proxy_method(PoolActor.when_loaded)
    info = proxy_method(PoolActor.info)
    check_domain = proxy_method(PoolActor.check_domain)
    activate = proxy_method(PoolActor.activate)
    deactivate = proxy_method(PoolActor.deactivate)
    submit = proxy_method(PoolActor.submit)


class TasksProxy:
    """``/storage/tasks``."""

    task_status = proxy_method(TaskManager.task_status)
    task_statuses = proxy_method(TaskManager.task_statuses)
    running = proxy_method(TaskManager.running)
    stop_task = proxy_method(TaskManager.stop_task)
    revert_task = proxy_method(TaskManager.revert_task)
    clear_task = proxy_method(TaskManager.clear_task)


class LeaseProxy:
    """A pool's SPM lease actor."""

    spm_start = proxy_method(LeaseActor.spm_start)
    spm_stop = proxy_method(LeaseActor.spm_stop)


class MailboxProxy:
    """A pool's mailbox (a host that is not the SPM asks the SPM for extensions)."""

    extend = proxy_method(MailboxActor.extend)
