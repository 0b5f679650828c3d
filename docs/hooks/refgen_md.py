"""Markdown helpers shared by the reference generators: text from the code is escaped, never read as Markdown."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# Characters Python-Markdown would read as markup in help text and comments (``_target_`` is not emphasis here).
_MARKUP = re.compile(r"([\\`*_\[\]])")


def text(value: str) -> str:
    """Plain text as Markdown that renders as the same text."""
    return _MARKUP.sub(r"\\\1", value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


# What the code's prose marks as code: reST's ``literal``, a role (:func:`name`) and Markdown's `code`.
_CODE = re.compile(r"``(.+?)``|(?::[a-z]+:)?`([^`]+)`")


def prose(value: str) -> str:
    """Text from a docstring, comment or help as one Markdown line: code marked as code, the rest escaped."""
    joined, out, last = " ".join(value.split()), [], 0
    for match in _CODE.finditer(joined):
        out += [text(joined[last:match.start()]), code(match[1] or match[2])]
        last = match.end()
    return "".join(out) + text(joined[last:])


def cell(value: str) -> str:
    """Prose for a table cell, with ``|`` escaped for the table (a code span keeps its pipes: the table reads past
    them)."""
    parts = re.split(r"((?<!\\)`[^`]*`)", prose(value))
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def code(value: str) -> str:
    """Inline code (a backtick inside is fenced by two)."""
    value = " ".join(value.split())
    fence = "``" if "`" in value else "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}" if value else ""


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def paragraphs(value: str) -> str:
    """A docstring or help text as Markdown paragraphs (reST's ``double backticks`` become code)."""
    return "\n\n".join(prose(block) for block in re.split(r"\n\s*\n", value.strip()))


GENERATED = ("!!! note \"Generated\"\n    This page is generated from the code each time the site is built "
             "(`docs/hooks/{module}.py`): edit {source}, not this page.\n")
