"""The CSV tables crl-uiqa reads (scores, pairs) and the one rule for the image paths in them.

**Scores** (``path,score[,...]``, written by ``score``, ``baseline``, ``compare``...)
and **pairs** (``better,worse[,type]``) each have one reader here,
:func:`read_score_table` and :func:`read_pairs`; a bad file fails with the file,
the line and what is wrong (:class:`~crl_uiqa.errors.InputError`, a ``ValueError``):

* a file that is not UTF-8 text (:func:`crl_uiqa.files.read_csv`);
* a score that is not a finite number: NaN and +-inf are refused (an empty
  cell too), except that readers showing unscored images (``report``) read
  empty and NaN cells as "no score" (``allow_empty``); infinite scores are
  refused by every reader;
* one image listed twice with different scores (paths compared after
  normalisation, values within :data:`DUPLICATE_TOLERANCE`); a repeated row
  with the same score, as ``score`` writes when an image is given twice, is
  kept;
* a pair whose better and worse image are the same path (it can only tie).

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
paths are relative to ``--root``, else to the pairs CSV's folder. A CSV's folder is
that of the file itself: a symbolic link to a CSV is followed (:func:`csv_folder`).

Paths are compared as **keys**: the file's real path (:func:`path_key`), so
``a/../b.png``, ``./b.png``, ``/abs/b.png`` and the same file reached through a
symbolic link name one image; two spellings of one image with different scores,
or a pair whose two sides are one file, are refused (:func:`score_keys`,
:func:`pair_keys`).
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, NotFoundError
from .files import read_csv

__all__ = ["Pair", "ScoreRow", "path_key", "csv_folder", "on_disk", "table_base", "read_score_table", "read_pairs", "score_keys", "pair_keys",
           "DUPLICATE_TOLERANCE"]

#: ``(better, worse, type or None)``
Pair = tuple[str, str, "str | None"]

#: Relative paths looked up on disk to decide where a CSV's paths are relative to.
_PROBE = 32

#: Two rows of one image in a scores table agree when their values differ by at most this much (absolute or
#: relative): the same image scored twice in different batches can differ in the last float32 digits.
DUPLICATE_TOLERANCE = 1e-6


def path_key(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """The key an image path is matched by: the file's real path (absolute, symbolic links resolved as the
    operating system resolves them, ``..`` included), relative paths taken from ``root``."""
    p = Path(os.path.expanduser(str(path)))
    if root is not None and not p.is_absolute():
        p = Path(root) / p
    return os.path.realpath(p)


def csv_folder(csv_path: str | os.PathLike) -> Path:
    """The folder a CSV's own relative paths are taken from: the folder of the file itself, a symbolic link to the
    CSV followed (its paths were written where it lies)."""
    return Path(csv_path).resolve().parent


def on_disk(paths: Iterable[str | os.PathLike]) -> bool:
    """Whether any of the first :data:`_PROBE` paths exists: the one test of whether a table's paths name images
    on disk (:func:`table_base`, and the fallback of :func:`crl_uiqa.evaluation.evaluate_files`)."""
    return any(os.path.exists(p) for p in itertools.islice(paths, _PROBE))


def table_base(csv_path: str | os.PathLike, paths: Iterable[str], root: str | os.PathLike | None = None) -> Path:
    """The folder the relative paths of a CSV resolve against (the rule of the module docstring)."""
    if root is not None:
        base = Path(root)
        if not base.is_dir():
            raise NotFoundError(f"--root folder not found: {base}")
        return base
    relative = [p for p in paths if p and not Path(os.path.expanduser(p)).is_absolute()][:_PROBE]
    if not relative:
        return Path.cwd()
    here, there = Path.cwd(), csv_folder(csv_path)
    if on_disk(here / p for p in relative):
        return here
    if on_disk(there / p for p in relative):
        return there
    return here


def _table_key(path: str) -> str:
    """A path string of a table, normalised: two rows of one table name one file when their keys are equal
    (they resolve against the same folder)."""
    return os.path.normpath(os.path.expanduser(path))


def _columns_error(path: Path, rows: list[dict], need: Sequence[str]) -> InputError | None:
    if not rows:
        return InputError(f"{path}: no rows (expected a header {','.join(need)} and one row per line)")
    missing = [c for c in need if c not in rows[0]]
    if missing:
        return InputError(f"{path}: missing column(s) {', '.join(missing)} (expected columns {','.join(need)}); "
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

    An empty path, a non-numeric, NaN or infinite value, or one image listed
    twice with different values is an error naming the line (the rules of
    the module docstring). ``allow_empty`` (readers that show unscored
    images) reads an empty or NaN value as NaN, "no score"; infinite values
    are refused all the same.
    """
    path = Path(path)
    rows = read_csv(path)
    err = _columns_error(path, rows, ("path", column))
    if err is not None:
        raise err
    out = []
    seen: dict[str, ScoreRow] = {}
    for line, row in enumerate(rows, start=2):
        key = (row.get("path") or "").strip()
        if not key:
            raise InputError(f"{path}, line {line}: empty path")
        text = (row.get(column) or "").strip()
        if not text and allow_empty:
            value = math.nan
        else:
            try:
                value = float(text)
            except ValueError:
                raise InputError(f"{path}, line {line}: non-numeric {column} {text!r} for {key}") from None
            if not math.isfinite(value) and not (allow_empty and math.isnan(value)):
                raise InputError(f"{path}, line {line}: {column} {text!r} for {key} is not a finite number "
                                 "(NaN and infinite values are refused)")
        extra = {k: (v or "") for k, v in row.items() if k not in ("path", column) and k is not None}
        rec = ScoreRow(key, value, line, extra)
        first = seen.setdefault(_table_key(key), rec)
        if first is not rec and not _agree(first.value, value):
            raise InputError(f"{path}, line {line}: {key} is listed twice with different {column} values "
                             f"({first.value} on line {first.line}, {value} here)")
        out.append(rec)
    return out


def _agree(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=DUPLICATE_TOLERANCE, abs_tol=DUPLICATE_TOLERANCE)


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Read a pairs CSV with columns ``better,worse[,type]``.

    An empty path, or a pair whose better and worse image are the same path,
    is an error naming the line.
    """
    path = Path(path)
    rows = read_csv(path)
    err = _columns_error(path, rows, ("better", "worse"))
    if err is not None:
        raise err
    out = []
    for line, row in enumerate(rows, start=2):
        better, worse = (row.get("better") or "").strip(), (row.get("worse") or "").strip()
        if not better or not worse:
            raise InputError(f"{path}, line {line}: empty better or worse path")
        if _table_key(better) == _table_key(worse):
            raise InputError(f"{path}, line {line}: better and worse are the same image ({better})")
        out.append((better, worse, (row.get("type") or "").strip() or None))
    return out


def score_keys(scores: Mapping[str, float], root: str | os.PathLike | None = None) -> dict[str, float]:
    """``{path: score}`` keyed by :func:`path_key` (relative paths from ``root``, else the current folder).

    Two spellings of one file (a symbolic link and its target, ``a/../b`` and ``b``) with scores that differ by
    more than :data:`DUPLICATE_TOLERANCE` are refused with an :class:`~crl_uiqa.errors.InputError`, as a table
    that lists one image twice with different scores is.
    """
    out: dict[str, float] = {}
    spelled: dict[str, str] = {}
    for p, v in scores.items():
        k = path_key(p, root)
        if k in out and not _agree(float(out[k]), float(v)):
            raise InputError(f"{p} and {spelled[k]} are the same image ({k}) with different scores ({v} and "
                             f"{out[k]})")
        out.setdefault(k, v)
        spelled.setdefault(k, str(p))
    return out


def pair_keys(pairs: Iterable[Sequence], root: str | os.PathLike | None = None) -> list[Pair]:
    """Pairs with both paths turned into :func:`path_key` keys (relative paths from ``root``); a pair whose two
    sides are one file, however spelled, is refused (it can only tie)."""
    out = []
    for p in pairs:
        b, w = path_key(p[0], root), path_key(p[1], root)
        if b == w:
            raise InputError(f"pair {p[0]},{p[1]}: better and worse are the same image ({b})")
        out.append((b, w, p[2] if len(p) > 2 else None))
    return out
