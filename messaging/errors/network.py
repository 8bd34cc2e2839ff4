"""Network configuration errors (codes 300-399)."""

from __future__ import annotations

from messaging.errors.base import VdsmError


class NetworkError(VdsmError):
    code = 300
    template = "network configuration error: {reason}"


class UnknownNic(NetworkError):
    code = 301
    template = "{owner}: no such NIC on this host: {nic}"


class NicInUse(NetworkError):
    code = 302
    template = "NIC {nic} is used by {users}"


class BadNetworkAddress(NetworkError):
    code = 303
    template = "network {network}: {reason}"


class BadBonding(NetworkError):
    code = 304
    template = "bond {bond}: {reason}"


class BadMtu(NetworkError):
    code = 305
    template = "{owner}: MTU {mtu} is outside what {device} takes ({low}-{high})"


class LinkKindUnsupported(NetworkError):
    code = 306
    template = ("{owner} needs a {kind} link, and this kernel cannot create {kind} links "
                "({reason}): nothing was changed")


class NoSuchNetwork(NetworkError):
    code = 307
    template = "no such network: {network}"


class NetworkNameInUse(NetworkError):
    code = 308
    template = "{owner}: a link named {name} exists and is not one this agent made"


class NetworkApplyFailed(NetworkError):
    code = 309
    template = ("applying the network change failed at {step}: {reason}; the previous "
                "configuration was restored")


class NetworkRollbackFailed(NetworkError):
    code = 310
    template = ("the network change failed ({reason}) and the previous configuration could "
                "not be restored exactly: {detail}")


class ConnectivityLost(NetworkError):
    code = 311
    template = ("no client confirmed connectivity within {timeout} s after the network "
                "change: it was rolled back")


class NetworkBusy(NetworkError):
    code = 312
    template = "{pending} network changes are already waiting: try again later"
    retryable = True


class DhcpFailed(NetworkError):
    code = 313
    template = "network {network}: no DHCP lease on {device} within {timeout} s"


class NetworkExists(NetworkError):
    code = 314
    template = "network {network} already exists"


class BadVlan(NetworkError):
    code = 315
    template = "network {network}: {reason}"
