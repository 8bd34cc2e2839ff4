"""The docs that live in the repo say what the code does: the README points into docs/,
protocol.md's exit codes are vdsm-client's, and every verb protocol.md names in its first
table is declared (second-wave verbs are listed as such)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from messaging.cli import exitcodes
from messaging.schema import SCHEMA

pytestmark = pytest.mark.timeout(30)

DOCS = Path(__file__).resolve().parents[2] / "docs"
README = DOCS.parent / "README.md"


def test_the_readme_points_to_the_docs_in_the_repo() -> None:
    text = README.read_text()
    assert "../shared" not in text and "PROTOCOL.md" not in text
    for page in ("protocol.md", "quickstart.md", "api.md", "architecture.md"):
        assert f"docs/{page}" in text
        assert (DOCS / page).is_file()


def test_protocol_md_has_the_clients_exit_codes() -> None:
    text = (DOCS / "protocol.md").read_text()
    table = text[text.index("Exit codes (also in"):]
    table = table[:table.index("\n\n", table.index("| code |"))]
    rows = dict(re.findall(r"^\| (\d) \| (.+?) \|$", table, re.MULTILINE))
    assert set(rows) == {"0", "1", "2", "3", "4", "5"}
    for code, word in ((exitcodes.NOT_FOUND, "not found"), (exitcodes.USAGE, "usage"),
                       (exitcodes.NO_REPLY, "no reply"), (exitcodes.INVALID, "invalid"),
                       (exitcodes.FAILED, "other error")):
        assert word in rows[str(code)], (code, rows[str(code)])
        assert word in exitcodes.HELP.split(f"\n  {code}  ", 1)[1].split("\n  ")[0], code
    assert exitcodes.LEGACY_ENV in text


def test_every_verb_of_the_first_table_is_declared() -> None:
    text = (DOCS / "protocol.md").read_text()
    first = text[text.index("## Verbs"):text.index("### Verbs of the second wave")]
    cells = [line.split(" | ")[0] for line in first.splitlines() if line.startswith("| `")]
    named = {name for cell in cells
             for name in re.findall(r"`([A-Z][A-Za-z]+\.[a-z][A-Za-z0-9]+)`", cell)}
    assert named and not named - {v.name for v in SCHEMA}, named - {v.name for v in SCHEMA}
