"""The CSV tables crl-uiqa reads (scores, pairs) and the one rule for the image paths in them.

**Scores** (``path,score[,...]``, written by ``score``, ``baseline``, ``compare``...)
and **pairs** (``better,worse[,type]``) each have one reader here,
:func:`read_score_table` and :func:`read_pairs`; a bad file fails with the file,
the line and what is wrong.

**Paths.** ``score`` writes each path string as it was given, so a relative path
is relative to the folder ``score`` ran in. Every reader of a CSV resolves a
relative path with the same rule (:func:`table_base`):

1. against ``--root`` when one is given;
2. else against the **current folder** when the images are found there (the
   way ``score`` wrote them);
3. else against the **CSV's own folder** when they are found there (a CSV that
   travelled with its images);
4. else against the current folder.

Pairs CSVs are the exception that their documentation has always stated: their
paths are relative to ``--root``, else to the pairs CSV's folder.

Paths are compared as **keys**: absolute, normalised (:func:`path_key`), so
``a/../b.png``, ``./b.png`` and ``/abs/b.png`` name one image.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .files import read_csv

__all__ = ["Pair", "ScoreRow", "path_key", "table_base", "read_score_table", "read_pairs", "score_keys",
           "pair_keys"]

#: ``(better, worse, type or None)``
Pair = tuple[str, str, "str | None"]

#: Relative paths looked up on disk to decide where a CSV's paths are relative to.
_PROBE = 32


def path_key(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """The key an image path is matched by: absolute and normalised, relative paths taken from ``root``."""
    p = Path(os.path.expanduser(str(path)))
    if root is not None and not p.is_absolute():
        p = Path(root) / p
    return os.path.normpath(os.path.abspath(p))


def table_base(csv_path: str | os.PathLike, paths: Iterable[str], root: str | os.PathLike | None = None) -> Path:
    """The folder the relative paths of a CSV resolve against (the rule of the module docstring)."""
    if root is not None:
        base = Path(root)
        if not base.is_dir():
            raise FileNotFoundError(f"--root folder not found: {base}")
        return base
    relative = [p for p in paths if p and not Path(os.path.expanduser(p)).is_absolute()][:_PROBE]
    if not relative:
        return Path.cwd()
    here, there = Path.cwd(), Path(csv_path).resolve().parent
    if any((here / p).exists() for p in relative):
        return here
    if any((there / p).exists() for p in relative):
        return there
    return here


def _columns_error(path: Path, rows: list[dict], need: Sequence[str]) -> ValueError | None:
    if not rows:
        return ValueError(f"{path}: no rows (expected a header {','.join(need)} and one row per line)")
    missing = [c for c in need if c not in rows[0]]
    if missing:
        return ValueError(f"{path}: missing column(s) {', '.join(missing)} (expected columns {','.join(need)}); "
                          f"found {', '.join(map(str, rows[0]))}")
    return None


@dataclass
class ScoreRow:
    """One row of a scores CSV: the path as written, its value, its line (header = line 1), other columns."""

    path: str
    value: float
    line: int
    extra: dict[str, str] = field(default_factory=dict)


def read_score_table(path: str | os.PathLike, column: str = "score", *, allow_empty: bool = False) -> list[ScoreRow]:
    """Read a ``path,<column>`` CSV (any further columns kept in :attr:`ScoreRow.extra`).

    An empty path, a non-numeric value, or (unless ``allow_empty``, which
    reads it as NaN) an empty value is an error naming the line.
    """
    path = Path(path)
    rows = read_csv(path)
    err = _columns_error(path, rows, ("path", column))
    if err is not None:
        raise err
    out = []
    for line, row in enumerate(rows, start=2):
        key = (row.get("path") or "").strip()
        if not key:
            raise ValueError(f"{path}, line {line}: empty path")
        text = (row.get(column) or "").strip()
        if not text and allow_empty:
            value = math.nan
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}, line {line}: non-numeric {column} {text!r} for {key}") from None
        extra = {k: (v or "") for k, v in row.items() if k not in ("path", column) and k is not None}
        out.append(ScoreRow(key, value, line, extra))
    return out


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Read a pairs CSV with columns ``better,worse[,type]`` (an empty path is an error naming the line)."""
    path = Path(path)
    rows = read_csv(path)
    err = _columns_error(path, rows, ("better", "worse"))
    if err is not None:
        raise err
    out = []
    for line, row in enumerate(rows, start=2):
        better, worse = (row.get("better") or "").strip(), (row.get("worse") or "").strip()
        if not better or not worse:
            raise ValueError(f"{path}, line {line}: empty better or worse path")
        out.append((better, worse, (row.get("type") or "").strip() or None))
    return out


def score_keys(scores: Mapping[str, float], root: str | os.PathLike | None = None) -> dict[str, float]:
    """``{path: score}`` keyed by :func:`path_key` (relative paths from ``root``, else the current folder)."""
    return {path_key(p, root): v for p, v in scores.items()}


def pair_keys(pairs: Iterable[Sequence], root: str | os.PathLike | None = None) -> list[Pair]:
    """Pairs with both paths turned into :func:`path_key` keys (relative paths from ``root``)."""
    return [(path_key(p[0], root), path_key(p[1], root), p[2] if len(p) > 2 else None) for p in pairs]
