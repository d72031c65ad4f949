"""Evaluation: the paper's pairwise accuracy T / (T + F) and rank correlations.

A *pair* says that ``better`` is known to have higher quality than ``worse``.
A method is right on a pair when it scores ``better`` higher; a tie counts
0.5 (the paper's T/(T+F) does not say; counting ties as half keeps a constant
scorer at 0.5 instead of 0 or 1). Intervals are percentile bootstrap 95 %
intervals over pairs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

Pair = tuple[str, str, "str | None"]


def pair_outcomes(better: np.ndarray, worse: np.ndarray) -> np.ndarray:
    """1 where better > worse, 0.5 on ties, 0 otherwise."""
    b, w = np.asarray(better, dtype=np.float64), np.asarray(worse, dtype=np.float64)
    return np.where(b > w, 1.0, np.where(b == w, 0.5, 0.0))


def bootstrap_ci(outcomes: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``outcomes``."""
    o = np.asarray(outcomes, dtype=np.float64)
    if o.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = o[rng.integers(0, o.size, size=(n_boot, o.size))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def _summary(o: np.ndarray, n_boot: int, seed: int) -> dict:
    lo, hi = bootstrap_ci(o, n_boot=n_boot, seed=seed)
    return {"accuracy": float(o.mean()) if o.size else float("nan"), "n": int(o.size), "ci_low": lo, "ci_high": hi}


def pairwise_accuracy(
    scores: Mapping[str, float],
    pairs: Sequence[Pair] | Sequence[tuple[str, str]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    missing: str = "error",
) -> dict:
    """Pairwise accuracy of ``scores`` (path -> score) on ``pairs``.

    Returns ``{"overall": {...}, "by_type": {type: {...}}, "n_missing": int}``
    where each summary holds ``accuracy``, ``n``, ``ci_low``, ``ci_high``.
    ``missing="error"`` raises when a pair names an unscored image;
    ``"skip"`` drops such pairs and counts them.
    """
    if len(pairs) == 0:
        raise ValueError("no pairs to evaluate")
    b, w, types, n_missing = [], [], [], 0
    for pair in pairs:
        better, worse = pair[0], pair[1]
        typ = pair[2] if len(pair) > 2 else None
        if better not in scores or worse not in scores:
            if missing == "error":
                absent = better if better not in scores else worse
                raise ValueError(f"no score for {absent!r} (named in the pairs); check --root or the paths")
            n_missing += 1
            continue
        b.append(scores[better])
        w.append(scores[worse])
        types.append(typ)
    if not b:
        raise ValueError("none of the pairs has both images scored")
    o = pair_outcomes(np.array(b), np.array(w))
    result = {"overall": _summary(o, n_boot, seed), "by_type": {}, "n_missing": n_missing}
    tarr = np.array([t if t is not None else "" for t in types], dtype=object)
    for t in sorted({t for t in types if t}):
        result["by_type"][t] = _summary(o[tarr == t], n_boot, seed)
    return result


def correlations(pred: Sequence[float], target: Sequence[float]) -> dict:
    """SRCC, PLCC and KRCC of predicted scores against reference scores (e.g. MOS)."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.size < 3:
        raise ValueError("correlations need two equally long score lists with at least 3 entries")
    return {
        "srcc": float(stats.spearmanr(p, t).statistic),
        "plcc": float(stats.pearsonr(p, t).statistic),
        "krcc": float(stats.kendalltau(p, t).statistic),
        "n": int(p.size),
    }


# ------------------------------------------------------------------ files
def _key(path: str, root: str | os.PathLike | None) -> str:
    p = Path(path)
    if root is not None and not p.is_absolute():
        p = Path(root) / p
    return os.path.normpath(os.path.abspath(p))


def read_scores(path: str | os.PathLike, column: str = "score") -> dict[str, float]:
    """Read a ``path,score`` CSV into a dict keyed by the path strings as written."""
    from .files import read_csv

    rows = read_csv(path)
    if not rows or "path" not in rows[0] or column not in rows[0]:
        raise ValueError(f"{path} must have columns path,{column}")
    out = {}
    for r in rows:
        try:
            out[r["path"]] = float(r[column])
        except ValueError:
            raise ValueError(f"{path}: non-numeric {column} {r[column]!r} for {r['path']}") from None
    return out


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Read a pairs CSV with columns ``better,worse[,type]``."""
    from .files import read_csv

    rows = read_csv(path)
    if not rows or "better" not in rows[0] or "worse" not in rows[0]:
        raise ValueError(f"{path} must have columns better,worse[,type]")
    return [(r["better"], r["worse"], (r.get("type") or None)) for r in rows]


def align(scores: Mapping[str, float], pairs: Sequence[Pair], *, scores_root=None, pairs_root=None) -> tuple[dict[str, float], list[Pair]]:
    """Key scores and pairs by normalised absolute paths so they match.

    Relative paths in the scores resolve against ``scores_root`` (or the
    current folder), those in the pairs against ``pairs_root``.
    """
    s = {_key(p, scores_root): v for p, v in scores.items()}
    pr = [(_key(b, pairs_root), _key(w, pairs_root), t) for b, w, t in pairs]
    return s, pr


def evaluate_files(scores_csv, pairs_csv, *, root=None, mos_csv=None, n_boot: int = 2000, missing: str = "error") -> dict:
    """Pairwise accuracy (and correlations with a ``path,mos`` CSV) from files."""
    scores = read_scores(scores_csv)
    pairs = read_pairs(pairs_csv)
    pairs_root = root if root is not None else Path(pairs_csv).parent
    s, p = align(scores, pairs, scores_root=None, pairs_root=pairs_root)
    if not set(x for pr in p for x in pr[:2]) & set(s):  # scores relative to the pairs' root?
        s, p = align(scores, pairs, scores_root=pairs_root, pairs_root=pairs_root)
    result = pairwise_accuracy(s, p, n_boot=n_boot, missing=missing)
    if mos_csv is not None:
        mos = {_key(k, Path(mos_csv).parent): v for k, v in read_scores(mos_csv, column="mos").items()}
        common = [k for k in s if k in mos]
        result["correlation"] = correlations([s[k] for k in common], [mos[k] for k in common])
    return result


def format_result(result: dict) -> str:
    """Human-readable table of :func:`pairwise_accuracy` output."""
    lines = [f"{'pairs':<16}{'n':>6}  {'accuracy':>8}  95% CI"]

    def row(name, s):
        lines.append(f"{name:<16}{s['n']:>6}  {s['accuracy']:>8.3f}  [{s['ci_low']:.3f}, {s['ci_high']:.3f}]")

    row("all", result["overall"])
    for t, s in result.get("by_type", {}).items():
        row(t, s)
    if result.get("n_missing"):
        lines.append(f"({result['n_missing']} pairs skipped: unscored images)")
    if "correlation" in result:
        c = result["correlation"]
        lines.append(f"SRCC {c['srcc']:.3f}  PLCC {c['plcc']:.3f}  KRCC {c['krcc']:.3f}  (n={c['n']})")
    return "\n".join(lines)
