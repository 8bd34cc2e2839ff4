"""The rule file: parsed and checked completely, reloaded when it changes, a bad edit keeps
the rules in force; contrib/policy.toml is the documented default."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from actors.policy.rules import MAX_SIZE, BalloonRules, KsmRules, RuleFile, Rules, RulesError, parse

TOP = Path(__file__).resolve().parents[2]


def test_the_contrib_file_documents_every_setting_with_its_default() -> None:
    text = (TOP / "contrib" / "policy.toml").read_text()
    active = "\n".join(line.lstrip("# ") if line.startswith("# ") and " = " in line
                       and not line.startswith("#  ") else line for line in text.splitlines())
    assert parse(active) == Rules()  # every shown value is the default
    for section in dataclasses.fields(Rules):
        for setting in dataclasses.fields(getattr(Rules(), section.name)):
            assert f"# {setting.name} = " in text, f"[{section.name}] {setting.name}"


def test_an_empty_file_is_the_built_in_rules() -> None:
    assert parse("") == Rules()
    rules = parse("[ksm]\nenabled = true\npages_max = 2000\n[balloon]\nenabled = true\n")
    assert rules.ksm == KsmRules(enabled=True, pages_max=2000)
    assert rules.balloon == BalloonRules(enabled=True)


@pytest.mark.parametrize(("text", "message"), [
    ("[ksm\n", "not valid TOML"),
    ("[memory]\n", "unknown section [memory]"),
    ("ksm = 1\n", "[ksm] must be a table"),
    ("[ksm]\nturbo = true\n", "[ksm] turbo: unknown setting"),
    ("[ksm]\nenabled = 1\n", "expected true or false"),
    ("[ksm]\npages_max = 1.5\n", "expected an integer"),
    ("[ksm]\npages_max = true\n", "expected an integer"),
    ("[host]\npressure_free_percent = \"20\"\n", "expected a number"),
    ("[host]\npressure_free_percent = 101\n", "not in 0..100"),
    ("[host]\npressure_free_percent = nan\n", "not in 0..100"),
    ("[ksm]\npages_min = 0\n", "not in 1..100000"),
    ("[ksm]\npages_min = 500\npages_max = 100\n", "pages_min is above pages_max"),
    ("[balloon]\ngrow_below_free_percent = 30\n", "must be below min_free_percent"),
    ("[balloon]\nmin_change_percent = 10\n", "min_change_percent is above"),
    ("[cpu]\nperiod_us = 10\n", "not in 1000..1000000"),
])
def test_a_bad_rule_file_is_refused_naming_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(RulesError) as refused:
        parse(text)
    assert message in str(refused.value)


def write(path: Path, text: str) -> None:
    """As an editor or a configuration tool does: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_the_file_is_reloaded_when_it_changes_and_a_bad_edit_keeps_the_rules(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.toml"
    write(path, "[ksm]\nenabled = true\n")
    rules = RuleFile(path)
    assert rules.refresh() is True
    assert rules.rules.ksm.enabled and rules.error == "" and rules.loaded == 1
    assert rules.refresh() is False  # unchanged: not read again
    write(path, "[ksm]\nenabled = true\npages_boost = 10\n")
    assert rules.refresh() is True and rules.rules.ksm.pages_boost == 10
    write(path, "[ksm]\nenabled = maybe\n")
    assert rules.refresh() is False
    assert rules.rules.ksm.pages_boost == 10  # the last good rules stay in force
    assert "not valid TOML" in rules.error and str(path) in rules.error
    assert rules.describe()["error"] == rules.error
    write(path, "[ksm]\nenabled = false\n")
    assert rules.refresh() is True and rules.error == "" and not rules.rules.ksm.enabled
    path.unlink()
    assert rules.refresh() is False  # the defaults: KSM control was off already
    assert "does not exist" in rules.error and rules.rules == Rules()
    path.write_bytes(b"#" * (MAX_SIZE + 1))
    assert rules.refresh() is False and "larger than" in rules.error
    path.write_bytes(b"\xff\xfe")
    assert rules.refresh() is False and "cannot read" in rules.error


def test_without_a_file_the_built_in_rules_are_in_force() -> None:
    rules = RuleFile(None)
    assert rules.refresh() is False
    assert rules.rules == Rules() and rules.describe()["path"] is None
