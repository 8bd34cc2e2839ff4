"""Fencing errors (codes 500-509): ``Host.fenceNode``."""

from __future__ import annotations

from messaging.errors.base import VdsmError


class FenceError(VdsmError):
    """Host.fenceNode could not fence: the agent failed, hung, or cannot run here."""

    code = 500
    template = "fencing error: {reason}"


class FenceAgentFailed(FenceError):
    """The fence agent ran and failed (its exit status and what it said; never the
    password)."""

    code = 501
    template = "fence_{agent} {action} of {target} failed (exit {rc}): {reason}"


class FenceTimeout(FenceError):
    code = 502
    template = ("fence_{agent} {action} of {target} did not finish within {timeout:g} s: "
                "it was killed; the power state is unknown")
    retryable = True


class FenceAgentUnusable(FenceError):
    """A known agent that this host cannot run (not installed, or not root's own file)."""

    code = 503
    template = "fence agent {path} cannot be used: {reason}"


class FenceBusy(FenceError):
    code = 504
    template = "{reason}: try again once it has finished"
    retryable = True
