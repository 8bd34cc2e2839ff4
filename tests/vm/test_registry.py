"""The index of this agent's VMs that recovery starts from."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.vm.params import VmParams
from actors.vm.registry import SUFFIX, VmRegistry
from tests.vm.helpers import VM_ID, raw_params, validated


@pytest.mark.timeout(5)
def test_add_list_remove(tmp_path: Path) -> None:
    registry = VmRegistry(tmp_path / "vms")
    assert registry.entries() == {}  # no directory yet
    params = VmParams.from_dict(VM_ID, validated(raw_params(drives=[{"device": "cdrom"}])))
    registry.add(params)
    registry.add(params)  # idempotent
    assert registry.entries() == {VM_ID: params}
    registry.remove(VM_ID)
    registry.remove(VM_ID)
    assert registry.entries() == {}
    assert list((tmp_path / "vms").iterdir()) == []  # no temporary file left


@pytest.mark.timeout(5)
def test_unreadable_entries_are_skipped(tmp_path: Path) -> None:
    registry = VmRegistry(tmp_path)
    good = VmParams.from_dict(VM_ID, validated(raw_params()))
    registry.add(good)
    (tmp_path / f"not-a-uuid{SUFFIX}").write_text("{}")
    (tmp_path / f"11111111-1111-4111-8111-111111111111{SUFFIX}").write_text("{broken")
    (tmp_path / f"22222222-2222-4222-8222-222222222222{SUFFIX}").write_text('{"x": 1}')
    (tmp_path / "33333333-3333-4333-8333-333333333333.log").write_text("serial")
    assert registry.entries() == {VM_ID: good}
    with pytest.raises(ValueError):
        registry.remove("../../etc/passwd")
