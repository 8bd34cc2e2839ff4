"""The rule set on its own (no FUSE): matching, order, count, probability, release."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from tests.faultfs.rules import Rule, RuleSet, descends_from, sigkill_pending

ME = os.getpid()


def outcome(rules: RuleSet, op: str, *paths: str, caller: int = ME) -> str:
    try:
        rules.apply(op, paths, caller)
    except OSError as e:
        return errno.errorcode[e.errno or 0]
    return "ok"


def test_glob_and_operation_class() -> None:
    rules = RuleSet()
    rules.add(Rule("*/dom_md/metadata", "read"))
    assert outcome(rules, "read", "sd1/dom_md/metadata") == "EIO"
    assert outcome(rules, "read", "mnt/x/sd1/dom_md/metadata") == "EIO"  # * crosses /
    assert outcome(rules, "write", "sd1/dom_md/metadata") == "ok"
    assert outcome(rules, "read", "sd1/dom_md/ids") == "ok"
    assert outcome(rules, "read", "dom_md/metadata") == "ok"
    assert rules.ops["read"] == 4 and rules.ops["write"] == 1


def test_any_covers_every_operation_and_rename_matches_either_name() -> None:
    rules = RuleSet()
    rules.add(Rule("a", "any", errno=errno.ENOSPC))
    for op in ("getattr", "open", "read", "write", "fsync", "flush", "unlink"):
        assert outcome(rules, op, "a") == "ENOSPC", op
    assert outcome(rules, "rename", "b", "a") == "ENOSPC"
    assert outcome(rules, "rename", "b", "c") == "ok"


def test_first_rule_that_applies_decides_and_count_expires() -> None:
    rules = RuleSet()
    first = rules.add(Rule("f", "read", errno=errno.ENOSPC, count=2))
    rules.add(Rule("f", "read"))
    assert [outcome(rules, "read", "f") for _ in range(3)] == ["ENOSPC", "ENOSPC", "EIO"]
    assert [r["id"] for r in rules.snapshot()] == [first + 1]
    assert rules.remove(first) is False  # spent rules are gone


def test_a_pass_rule_exempts_what_it_matches_from_later_rules() -> None:
    rules = RuleSet()
    rules.add(Rule("*/journal/*", "any", "pass"))
    rules.add(Rule("*", "any"))
    assert outcome(rules, "write", "sd/journal/1.jsonl") == "ok"
    assert outcome(rules, "write", "sd/dom_md/ids") == "EIO"
    assert rules.blocked() == 0


def test_probability_uses_the_random_source() -> None:
    draws = iter([0.9, 0.1, 0.5, 0.49])
    rules = RuleSet(rng=lambda: next(draws))
    rules.add(Rule("f", probability=0.5))
    assert [outcome(rules, "read", "f") for _ in range(4)] == ["ok", "EIO", "ok", "EIO"]
    assert rules.snapshot()[0]["hits"] == 2


def test_hang_is_released_by_remove_and_by_clear_also_when_spent() -> None:
    rules = RuleSet()
    rule_id = rules.add(Rule("f", effect="hang"))
    spent = Rule("g", effect="hang", count=1)
    rules.add(spent)
    done: list[str] = []
    threads = [threading.Thread(target=lambda p=p: done.append(outcome(rules, "read", p)))
               for p in ("f", "f", "g")]
    for t in threads:
        t.start()
    for _ in range(500):
        if rules.blocked() == 3:
            break
        threading.Event().wait(0.01)
    assert rules.blocked() == 3
    assert [r["id"] for r in rules.snapshot()] == [rule_id]  # g is spent but still holds one
    assert rules.remove(rule_id) is True
    for t in threads[:2]:
        t.join(10)
    assert done == ["ok", "ok"] and threads[2].is_alive()
    assert rules.clear() == 0  # no live rule left, but the spent one's caller is released
    threads[2].join(10)
    assert done == ["ok", "ok", "ok"] and rules.blocked() == 0


def test_clear_cuts_a_delay_short() -> None:
    rules = RuleSet()
    rules.add(Rule("f", effect="delay", seconds=3600))
    t = threading.Thread(target=outcome, args=(rules, "read", "f"))
    t.start()
    for _ in range(500):
        if rules.blocked():
            break
        threading.Event().wait(0.01)
    rules.clear()
    t.join(10)
    assert not t.is_alive()


def test_a_killable_hold_ends_with_eintr_once_the_caller_is_killed() -> None:
    killed: set[int] = set()
    rules = RuleSet(killed=lambda tid: tid in killed)
    rules.add(Rule("f", effect="hang", killable=True))
    rules.add(Rule("g", effect="hang"))
    done: dict[int, str] = {}
    threads = [threading.Thread(target=lambda c=c, p=p: done.update({c: outcome(
        rules, "read", p, caller=c)})) for c, p in ((101, "f"), (102, "g"))]
    for t in threads:
        t.start()
    for _ in range(500):
        if rules.blocked() == 2:
            break
        threading.Event().wait(0.01)
    assert rules.blocked() == 2
    killed.update({101, 102})
    threads[0].join(10)
    assert done == {101: "EINTR"}
    assert threads[1].is_alive()  # not killable: held until released
    rules.clear()
    threads[1].join(10)
    assert done == {101: "EINTR", 102: "ok"}


def test_sigkill_pending_reads_proc() -> None:
    assert sigkill_pending(ME) is False
    assert sigkill_pending(0) is False
    assert sigkill_pending(2**22 + 12345) is True  # gone: nobody waits


def test_pid_filter_matches_the_process_and_its_descendants() -> None:
    assert descends_from(ME, ME)
    assert descends_from(ME, os.getppid())
    assert descends_from(ME, 1)
    assert not descends_from(os.getppid(), ME)
    assert not descends_from(2**22 + 12345, ME)  # no such process
    rules = RuleSet()
    rules.add(Rule("f", pid=os.getppid()))
    assert outcome(rules, "read", "f") == "EIO"
    assert outcome(rules, "read", "f", caller=1) == "ok"


@pytest.mark.parametrize("raw", [
    {"glob": "/abs"}, {"glob": "f", "op": "mmap"}, {"glob": "f", "effect": "crash"},
    {"glob": "f", "count": 0}, {"glob": "f", "probability": 0}, {"glob": "f", "probability": 2},
    {"glob": "f", "effect": "delay"}, {"glob": "f", "seconds": -1}, {"glob": "f", "errno": 0},
    {"glob": "f", "errno": "ENOTANERRNO"}, {"glob": "f", "errno": "errorcode"},
    {"glob": "f", "surprise": 1}, {"op": "read"}, {"glob": 3}, {"glob": "f", "pid": 0},
    {"glob": "f", "pid": "1"}, {"glob": "f", "count": "2"}, {"glob": "f", "killable": 1},
])
def test_bad_rules_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Rule.from_wire(raw)


def test_errno_by_name() -> None:
    assert Rule.from_wire({"glob": "f", "errno": "ENOSPC"}).errno == errno.ENOSPC
