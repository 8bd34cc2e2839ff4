"""Host registration errors (codes 600-619)."""

from __future__ import annotations

from messaging.errors.base import VdsmError


class RegistrationError(VdsmError):
    """vdsm-tool register, and the engine side of the registration protocol
    (docs/registration.md): the codes travel in the protocol's replies."""

    code = 600
    template = "registration failed: {reason}"


class RegistrationRefused(RegistrationError):
    code = 601
    template = "the engine at {engine} refused the registration: {reason}"


class RegistrationPending(RegistrationError):
    code = 602
    template = ("the engine at {engine} has not approved host {host} yet: run vdsm-tool "
                "register again once it has")
    retryable = True


class EngineKeyMismatch(RegistrationError):
    code = 603
    template = ("the engine at {engine} presents key fingerprint {got}, not {expected}: "
                "nothing was changed")


class BadRegistrationMessage(RegistrationError):
    code = 604
    template = "bad registration message: {reason}"


class EngineUnreachable(RegistrationError):
    code = 605
    template = "the engine at {engine} did not answer within {timeout:g} s"
    retryable = True


class HostNotConfigured(RegistrationError):
    code = 610
    template = "this host is not configured: {reason} (run vdsm-tool configure)"
