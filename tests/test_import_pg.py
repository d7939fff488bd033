"""What only a PostgreSQL store does differently on import: a NUL character, which SQLite
stores and PostgreSQL text cannot hold, refuses the file in one line with nothing applied."""

from __future__ import annotations

import pytest
from conftest import Workspace
from test_import_recipients import CONFIG, data, run, run_installed

# PostgreSQL's own limit: on SQLite these files import (test_nul_characters_stay_on_sqlite).
pytestmark = pytest.mark.stores("postgres")

REFUSAL = (
    "the file holds a NUL character (\\0) in a value, which a PostgreSQL store cannot hold; "
    "nothing was applied; remove it from the file"
)


@pytest.fixture
def cs(ws: Workspace) -> Workspace:
    ws.write_config(text=CONFIG)
    return ws


@pytest.mark.parametrize(
    ("job", "content"),
    [
        ("rec", "email,first_name\nc@x.de,Carla\nd@x.de,An\x00na\n"),  # a field (jsonb)
        ("block", "pattern,reason\n*@x.de,spam\x00\n"),  # a text column
        ("unsub", "email,list,reason\nd@x.de,,gone\x00\n"),
    ],
)
def test_a_nul_character_refuses_the_file_with_nothing_applied(
    cs: Workspace, job: str, content: str
) -> None:
    run(cs, "rec", "email,first_name\na@x.de,Anna\n")
    before = data(cs)
    code, doc = run_installed(cs, job, content.encode())
    assert code == 1, doc
    assert doc["error"].endswith(REFUSAL)
    assert data(cs) == before


def test_the_text_of_a_nul_escape_is_no_nul(cs: Workspace) -> None:
    # A cell holding the six characters \u0000 is text like any other.
    code, doc = run(cs, "rec", "email,first_name\na@x.de,\\u0000\nb@x.de,x\\\\u0000\n")
    assert code == 0, doc
    assert cs.recipients("news") == {
        "a@x.de": ("active", {"first_name": "\\u0000"}),
        "b@x.de": ("active", {"first_name": "x\\\\u0000"}),
    }


@pytest.mark.stores("sqlite")  # the other half of the difference: SQLite keeps the character
def test_nul_characters_stay_on_sqlite(cs: Workspace) -> None:
    code, doc = run(cs, "rec", "email,first_name\nd@x.de,An\x00na\n")
    assert code == 0, doc
    assert cs.recipients("news") == {"d@x.de": ("active", {"first_name": "An\x00na"})}
