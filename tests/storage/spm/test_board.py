"""The lease board's view of the role: what getSpmStatus and the write gate answer."""

from __future__ import annotations

import pytest

from actors.storage.spm.board import LeaseState

pytestmark = pytest.mark.timeout(10)


def spm(deadline: float) -> LeaseState:
    return LeaseState("sp", status="SPM", lver=3, spm_id=1, spm_lver=3, deadline=deadline,
                      margin=0.5, writer_endpoint="ipc:///x", writer_ready=True)


def test_a_fresh_report_claims_the_role() -> None:
    state = spm(deadline=100.0)
    assert state.to_wire(now=90.0)["spmStatus"] == "SPM"
    assert state.may_write(now=90.0)


def test_a_report_past_its_deadline_claims_nothing() -> None:
    """A keeper that stopped reporting (stalled, storage frozen) leaves a stale SPM report:
    once its deadline passed, the host neither says it is SPM nor lets a write through."""
    state = spm(deadline=100.0)
    assert state.to_wire(now=100.0)["spmStatus"] == "Free"
    assert not state.may_write(now=99.6)  # the margin ends writes earlier still


def test_a_writer_still_starting_is_contend() -> None:
    state = LeaseState("sp", status="SPM", lver=1, deadline=100.0)
    assert state.to_wire(now=1.0)["spmStatus"] == "Contend"
