"""Typed proxies of the host services asked through a proxy by the verb handlers, checked
by mypy at the seam (see :func:`actors.directory.typed_proxy`): any other attribute is a
type error, and so are wrong arguments or a misread answer."""

from __future__ import annotations

from pykka.typing import proxy_method

from actors.host.network.actor import NetworkActor
from actors.host.udev import UdevActor


class UdevProxy:
    """``/host/udev``: the device cache."""

    devices = proxy_method(UdevActor.devices)


class NetworkProxy:
    """``/host/network``: network changes, one at a time."""

    setup_networks = proxy_method(NetworkActor.setup_networks)
    set_safe = proxy_method(NetworkActor.set_safe)
