"""Errors of the agent and host services (codes 100-199): recovering, libvirt, actors,
authorisation, host settings."""

from __future__ import annotations

from messaging.errors.base import VdsmError


class Recovering(VdsmError):
    code = 100
    template = "the agent is recovering after a restart: try again shortly"
    retryable = True


class LibvirtUnavailable(VdsmError):
    code = 101
    template = "libvirt is not connected ({reason}): the agent reconnects by itself"
    retryable = True


class ActorUnavailable(VdsmError):
    code = 102
    template = "the service {path} is not running ({reason})"
    retryable = True


class NoSuchActor(VdsmError):
    code = 103
    template = "no actor at {path}"


class Forbidden(VdsmError):
    code = 104
    template = "{what} is disabled on this host ({how})"


class NotAuthorized(VdsmError):
    """A CURVE client whose key was removed from the authorised keys while connected."""

    code = 105
    template = "client key {key} is not authorised on this host"


class HostSettingError(VdsmError):
    """A host setting the kernel refused or cannot take (KSM in /sys/kernel/mm/ksm)."""

    code = 106
    template = "cannot set {what}: {reason}"
