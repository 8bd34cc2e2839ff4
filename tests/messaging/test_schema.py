from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.errors import InvalidParams, MethodNotFound, VdsmError
from messaging.schema import SCHEMA
from messaging.schema.types import Field, Int, ListOf, Path, Str, Struct, Text, Uuid, check_text
from messaging.schema.verbs import Schema, Verb

pytestmark = pytest.mark.timeout(60)

VM_ID = "6f1b9e4a-4a4e-4c53-9c0c-2f5c1e0e7b11"


def test_aliases_resolve_to_the_same_verb() -> None:
    assert SCHEMA.lookup("ping") is SCHEMA.lookup("Host.ping")
    assert SCHEMA.lookup("getVdsCapabilities").name == "Host.getCapabilities"
    assert SCHEMA.lookup("getVdsStats").name == "Host.getStats"


def test_unknown_method() -> None:
    with pytest.raises(MethodNotFound):
        SCHEMA.lookup("Host.nope")


def test_duplicate_declarations_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        Schema([Verb("A.b", "x"), Verb("A.b", "y")])
    with pytest.raises(ValueError, match="alias"):
        Schema([Verb("A.b", "x", aliases=("c",)), Verb("A.d", "y", aliases=("c",))])


def test_every_declared_verb_is_documented() -> None:
    for verb in SCHEMA:
        assert verb.doc, verb.name
        assert "." in verb.name
        for param in verb.params:
            assert param.type.describe()


def test_missing_and_unknown_params_name_the_param() -> None:
    verb = SCHEMA.lookup("VM.destroy")
    with pytest.raises(InvalidParams, match="vmID"):
        verb.check_params({})
    with pytest.raises(InvalidParams, match="bogus"):
        verb.check_params({"vmID": VM_ID, "bogus": 1})


@pytest.mark.parametrize("bad", ["x", "../../etc", "1234", VM_ID.upper() + "0", 5, None])
def test_ids_that_become_paths_must_be_uuids(bad: Any) -> None:
    with pytest.raises(InvalidParams, match="vmID"):
        SCHEMA.lookup("VM.destroy").check_params({"vmID": bad})


def test_uuid_is_normalised() -> None:
    assert Uuid().check(VM_ID.upper(), "x") == VM_ID


def test_nested_errors_give_the_dotted_path() -> None:
    verb = SCHEMA.lookup("VM.create")
    params = {
        "vmID": VM_ID,
        "vmParams": {"vmName": "a", "memSize": 128, "drives": [{"path": "/x"}, {"path": 3}]},
    }
    with pytest.raises(InvalidParams) as info:
        verb.check_params(params)
    assert info.value.param == "vmParams.drives[1].path"


def test_defaults_are_filled() -> None:
    params = SCHEMA.lookup("VM.create").check_params(
        {"vmID": VM_ID, "vmParams": {"vmName": "a", "memSize": 128}}
    )
    assert params["vmParams"]["smp"] == 1
    assert params["vmParams"]["drives"] == []


def test_types() -> None:
    with pytest.raises(InvalidParams):
        Int(min=1).check(0, "n")
    with pytest.raises(InvalidParams):
        Int().check(True, "n")
    with pytest.raises(InvalidParams):
        Str(max_len=2).check("abc", "s")
    with pytest.raises(InvalidParams):
        Path().check("relative/path", "p")
    with pytest.raises(InvalidParams):
        Path().check("/a\0b", "p")
    with pytest.raises(InvalidParams):
        ListOf(Int(), max_len=2).check([1, 2, 3], "l")
    struct = Struct((Field("a", Int()), Field("b", Str(), required=False, default="d")))
    assert struct.check({"a": 1}, "s") == {"a": 1, "b": "d"}


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([v.name for v in SCHEMA]), st.dictionaries(st.text(max_size=12), values))
def test_validation_only_raises_protocol_errors(method: str, params: dict[str, Any]) -> None:
    try:
        SCHEMA.lookup(method).check_params(params)
    except VdsmError as e:
        assert e.code == -32602


def test_api_docs_are_generated_from_the_schema() -> None:
    from pathlib import Path

    from messaging.apidoc import render

    docs = Path(__file__).resolve().parents[2] / "docs" / "api.md"
    assert docs.read_text() == render(), "run: python -m messaging.apidoc > docs/api.md"


def test_text_is_one_line_of_printable_text() -> None:
    text = Text(min_len=1, max_len=16, forbidden=",")
    for good in ("pool", "a b=c/..", "données", "名前", "emoji \U0001f600"):
        assert text.check(good, "name") == good
    for bad in ("a\x00", "a\n", "\t", "a\x1b", "\x7f", "a\u2028", "\u200b", "\u202e", "a,b",
                "\ud800", "\ue000"):
        with pytest.raises(InvalidParams) as refused:
            text.check(bad, "name")
        assert refused.value.param == "name"
    with pytest.raises(InvalidParams, match="length"):
        text.check("x" * 17, "name")
    assert check_text("plain", "p") == "plain"
