"""Typed proxy of the KSM actor asked by ``Host.setKsmTune``, checked by mypy at the seam
(see :func:`actors.directory.typed_proxy`)."""

from __future__ import annotations

from pykka.typing import proxy_method

from actors.policy.ksmactor import KsmActor


class KsmProxy:
    """``/policy/ksm``."""

    tune = proxy_method(KsmActor.tune)
