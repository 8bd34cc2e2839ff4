"""What the network actor does first, on its apply thread: bring the host back to what the
agent's files say (see ``persist.py``).

- Same boot, same namespace: the links are the ones the agent configured. A change that was
  never confirmed (``pending.json``) is rolled back to the running configuration; DHCP
  clients of the running configuration are started again.
- Otherwise (a reboot, a fresh namespace): the safe configuration is applied from scratch and
  becomes the running one; whatever was changed after it and never made safe is gone.
"""

from __future__ import annotations

import logging

from actors.host.network import ops
from actors.host.network.apply import Applier
from actors.host.network.model import NetConfig
from actors.host.network.persist import NetStore, boot_marker
from messaging.errors import VdsmError

log = logging.getLogger(__name__)


def restore(applier: Applier, store: NetStore) -> tuple[NetConfig, bool]:
    """The running configuration, and whether the host was changed to reach it."""
    marker = boot_marker()
    running = store.running()
    if running is not None and running.marker == marker:
        changed = False
        pending = store.pending()
        if pending is not None and pending[1] == marker:
            log.warning("a network change was applied and never confirmed: rolling it back")
            try:
                applier.reconcile(pending[0], running.config)
                changed = True
            except VdsmError as e:
                log.error("rolling back the unconfirmed network change failed: %s", e)
        store.drop_pending()
        _start_dhcp(applier, running.config)
        log.info("network configuration: %d networks, %d bonds, as the agent left them",
                 len(running.config.networks), len(running.config.bonds))
        return running.config, changed
    safe = store.safe() or NetConfig()
    log.info("network: the host booted (or the namespace is new): restoring the safe "
             "configuration (%d networks, %d bonds)", len(safe.networks), len(safe.bonds))
    config, changed = safe, False
    if safe:
        try:
            applier.reconcile(NetConfig(), safe)
            changed = True
        except VdsmError as e:
            log.error("restoring the safe network configuration failed: %s", e)
            config = NetConfig()
    store.save_running(config, marker)
    store.drop_pending()
    return config, changed


def _start_dhcp(applier: Applier, config: NetConfig) -> None:
    for net in sorted(config.networks.values(), key=lambda n: n.name):
        if net.dhcp and net.device is not None:
            with applier.netlink() as nl:
                applier.run(nl, [ops.StartDhcp(net.name, net.device,
                                               default_route=net.default_route)],
                            nl.snapshot(), config)
