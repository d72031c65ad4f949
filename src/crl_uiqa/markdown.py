"""The one writer of the Markdown tables crl-uiqa prints and saves (``compare.md``, the ablation table, the
margin calibration).

Cells can hold text the user wrote (a pair type from a pairs CSV, a failure note): a ``|`` in one would split
the cell and move every later value under the wrong column, and ``<tag>`` text would be rendered as HTML by
Markdown viewers. Each cell is therefore escaped: ``|`` as ``\\|``, ``&``, ``<`` and ``>`` as HTML entities
(shown as the characters themselves), line breaks as spaces.
"""
from __future__ import annotations

from typing import Iterable, Sequence

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "\n": " ", "\r": " "})


def cell(value: object) -> str:
    """One table cell: ``str(value)`` with the characters that would break the table or render as HTML escaped."""
    return str(value).translate(_ESCAPES)


def table(head: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown (GitHub) table: a header row, the separator, one line per row, every cell escaped."""
    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
