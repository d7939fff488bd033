"""MkDocs hooks for the documentation site (mkdocs.yml names this file).

Some pages label a code fence with more than its language, e.g. "```sql optional" in
docs/postgresql.md, which tests/test_pg_docs.py reads to tell the statements apart. Markdown's
fenced-code syntax takes one word there, so the site is given the language alone; the page
itself keeps its label.
"""

from __future__ import annotations

import re
from typing import Any

# An opening fence whose info string is a language followed by more words.
_LABELLED_FENCE = re.compile(
    r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<lang>[\w#.+-]+)[ \t]+[^\n`]*$", re.M
)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return _LABELLED_FENCE.sub(r"\g<indent>\g<fence>\g<lang>", markdown)
