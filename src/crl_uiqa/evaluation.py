"""Evaluation: the paper's pairwise accuracy T / (T + F) and rank correlations.

A *pair* says that ``better`` is known to have higher quality than ``worse``.
A method is right on a pair when it scores ``better`` higher; a tie counts
0.5 (the paper's T/(T+F) does not say; counting ties as half keeps a constant
scorer at 0.5 instead of 0 or 1). Intervals are percentile bootstrap 95 %
intervals over pairs (``n_boot=0``: no interval, ``ci_low``/``ci_high`` NaN).

Scores must be finite numbers and a pair must name two different images: a
NaN score (which would silently count as a loss) or a self-pair (which could
only tie) is an error, as in the CSV readers of :mod:`crl_uiqa.tables`.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from . import validate
from .errors import ConfigError, InputError
from .tables import Pair, csv_folder, on_disk, pair_keys, read_pairs, read_score_table, score_keys, table_base

__all__ = ["Pair", "pair_outcomes", "bootstrap_ci", "check_n_boot", "MAX_N_BOOT", "pairwise_accuracy", "correlations",
           "read_scores", "read_pairs", "align", "evaluate_files", "format_result"]


def pair_outcomes(better: np.ndarray, worse: np.ndarray) -> np.ndarray:
    """1 where better > worse, 0.5 on ties, 0 otherwise."""
    b, w = np.asarray(better, dtype=np.float64), np.asarray(worse, dtype=np.float64)
    return np.where(b > w, 1.0, np.where(b == w, 0.5, 0.0))


#: most bootstrap resamples: their means are held at once (8 bytes each, and as much again for the quantiles:
#: 2**31 - 1 would take 32 GiB, and took terabytes when all the draws were made at once, a MemoryError after all
#: the scoring), each draws one index per pair, and the Monte-Carlo error of a 95 % percentile interval is already
#: far below the interval's width at 10**4
MAX_N_BOOT = 10**6
#: pair indices drawn at once by :func:`bootstrap_ci` (16 MiB of them, and as much of the outcomes they pick)
_BOOT_DRAWS = 2**21


def check_n_boot(n_boot) -> int:
    """``n_boot`` if it is an integer in [0, :data:`MAX_N_BOOT`] (0: no bootstrap interval), else
    :class:`ConfigError`."""
    return validate.integer("n_boot (--n-boot; 0: no bootstrap interval)", n_boot, minimum=0, maximum=MAX_N_BOOT)


def bootstrap_ci(outcomes: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``outcomes`` (NaN, NaN for no outcomes or ``n_boot=0``)."""
    n_boot = check_n_boot(n_boot)
    level = validate.real("level", level, minimum=0, maximum=1, strict_min=True, strict_max=True)
    o = np.asarray(outcomes, dtype=np.float64)
    if o.size == 0 or n_boot == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    # the resamples a block at a time, so that memory does not grow with n_boot x pairs (the generator draws the
    # same numbers whatever the blocks: the intervals are those of one draw of all of them)
    step = max(1, _BOOT_DRAWS // o.size)
    means = np.concatenate([o[rng.integers(0, o.size, size=(min(step, n_boot - i), o.size))].mean(axis=1)
                            for i in range(0, n_boot, step)])
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def _summary(o: np.ndarray, n_boot: int, seed: int) -> dict:
    lo, hi = bootstrap_ci(o, n_boot=n_boot, seed=seed)
    return {"accuracy": float(o.mean()) if o.size else float("nan"), "n": int(o.size), "ci_low": lo, "ci_high": hi}


def _path(p):
    """A path given as ``pathlib.Path`` as its string, so it matches the same path given as a string."""
    return os.fspath(p) if isinstance(p, os.PathLike) else p


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
    where each summary holds ``accuracy``, ``n``, ``ci_low``, ``ci_high``
    (NaN with ``n_boot=0``).
    ``missing="error"`` raises when a pair names an unscored image;
    ``"skip"`` drops such pairs and counts them. A pair of one image with
    itself, or a NaN or infinite score of a pair image, is an error.
    Paths given as ``pathlib.Path`` match the same paths given as strings; ``pairs`` may be any iterable.
    Every problem with the inputs raises :class:`crl_uiqa.errors.InputError` (a ``ValueError``).
    """
    n_boot = check_n_boot(n_boot)
    if missing not in ("error", "skip"):
        raise ConfigError(f"missing must be 'error' or 'skip', got {missing!r}")
    if not isinstance(scores, Mapping):
        raise InputError(f"scores must map each image path to its score (a dict), got {type(scores).__name__}")
    scores = {_path(p): s for p, s in scores.items()}
    pairs = list(pairs)
    if len(pairs) == 0:
        raise InputError("no pairs to evaluate")
    b, w, types, n_missing = [], [], [], 0
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or len(pair) not in (2, 3):
            raise InputError(f"pair {i + 1}: expected (better, worse) or (better, worse, type), got {pair!r}")
        better, worse = _path(pair[0]), _path(pair[1])
        typ = pair[2] if len(pair) > 2 else None
        if better == worse:
            raise InputError(f"pair {i + 1}: better and worse are the same image ({better})")
        if better not in scores or worse not in scores:
            if missing == "error":
                absent = better if better not in scores else worse
                raise InputError(f"no score for {absent!r} (named in the pairs); check --root or the paths")
            n_missing += 1
            continue
        for p in (better, worse):
            try:
                finite = math.isfinite(scores[p])
            except TypeError:
                raise InputError(f"the score of {p} is {scores[p]!r}, not a number") from None
            if not finite:
                raise InputError(f"the score of {p} is {scores[p]}, not a finite number")
        b.append(scores[better])
        w.append(scores[worse])
        types.append(typ)
    if not b:
        raise InputError("none of the pairs has both images scored")
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
        raise InputError("correlations need two equally long score lists with at least 3 entries")
    for values, what in ((p, "the scores"), (t, "the reference scores (MOS)")):
        if np.ptp(values) == 0:
            raise InputError(f"correlations are undefined: {what} of all {p.size} images are equal")
    return {
        "srcc": float(stats.spearmanr(p, t).statistic),
        "plcc": float(stats.pearsonr(p, t).statistic),
        "krcc": float(stats.kendalltau(p, t).statistic),
        "n": int(p.size),
    }


# ------------------------------------------------------------------ files
# The CSV readers and the path rule live in crl_uiqa.tables; these names stay importable from here.


def read_scores(path: str | os.PathLike, column: str = "score") -> dict[str, float]:
    """Read a ``path,score`` CSV into a dict keyed by the path strings as written (see :mod:`crl_uiqa.tables`)."""
    return {r.path: r.value for r in read_score_table(path, column)}


def align(scores: Mapping[str, float], pairs: Sequence[Pair], *, scores_root=None,
          pairs_root=None) -> tuple[dict[str, float], list[Pair]]:
    """Key scores and pairs by normalised absolute paths so they match.

    Relative paths in the scores resolve against ``scores_root`` (or the
    current folder), those in the pairs against ``pairs_root``.
    """
    return score_keys(scores, scores_root), pair_keys(pairs, pairs_root)


def _keyed(values: Mapping[str, float], csv_path, wanted: set[str], *fallback_roots) -> dict[str, float]:
    """``values`` keyed by the rule of :mod:`crl_uiqa.tables`; when no key is among ``wanted`` and the paths
    are not on disk, the first of ``fallback_roots`` that matches some is used instead. (Paths on disk name
    their images: scores of one folder are never moved onto another folder's images of the same names.)"""
    keyed = score_keys(values, table_base(csv_path, values))
    if keyed.keys() & wanted or on_disk(keyed):
        return keyed
    for r in fallback_roots:
        alt = score_keys(values, r)
        if alt.keys() & wanted:
            return alt
    return keyed


def evaluate_files(scores_csv, pairs_csv, *, root=None, mos_csv=None, n_boot: int = 2000,
                   missing: str = "error", scores_root=None) -> dict:
    """Pairwise accuracy (and correlations with a ``path,mos`` CSV) from files.

    Pair paths are relative to ``root``, else to the pairs CSV's folder; the
    paths of the scores CSV are relative to ``scores_root`` when given (the
    folder ``score`` ran in), else they and the MOS CSV's follow the rule of
    :mod:`crl_uiqa.tables` (the current folder, else the CSV's folder), and
    when none of them match (images not on disk) the scores are also tried
    relative to the pairs' folder and the MOS relative to its own folder.
    """
    n_boot = check_n_boot(n_boot)
    pairs_root = root if root is not None else csv_folder(pairs_csv)
    pairs = pair_keys(read_pairs(pairs_csv), pairs_root)
    values = read_scores(scores_csv)
    if scores_root is not None:
        s = score_keys(values, table_base(scores_csv, values, root=scores_root))
    else:
        s = _keyed(values, scores_csv, {x for pr in pairs for x in pr[:2]}, pairs_root)
    result = pairwise_accuracy(s, pairs, n_boot=n_boot, missing=missing)
    if mos_csv is not None:
        mos = _keyed(read_scores(mos_csv, column="mos"), mos_csv, set(s), csv_folder(mos_csv))
        unscored = [k for k in mos if k not in s]
        if unscored and missing == "error":
            # as for the pairs: an image graded but not scored is a path mistake, not a row to drop silently
            raise InputError(f"no score for {unscored[0]!r} (named in {os.fspath(mos_csv)}, {len(unscored)} of its "
                             f"{len(mos)} images unscored); check the paths, or --skip-missing to leave them out")
        common = [k for k in s if k in mos]
        result["correlation"] = correlations([s[k] for k in common], [mos[k] for k in common])
        result["correlation"]["n_missing"] = len(unscored)
    return result


def format_result(result: dict) -> str:
    """Human-readable table of :func:`pairwise_accuracy` output."""
    lines = [f"{'pairs':<16}{'n':>6}  {'accuracy':>8}  95% CI"]

    def row(name, s):
        ci = "--" if math.isnan(s["ci_low"]) else f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
        lines.append(f"{name:<16}{s['n']:>6}  {s['accuracy']:>8.3f}  {ci}")

    row("all", result["overall"])
    for t, s in result.get("by_type", {}).items():
        row(t, s)
    if result.get("n_missing"):
        lines.append(f"({result['n_missing']} pairs skipped: unscored images)")
    if "correlation" in result:
        c = result["correlation"]
        lines.append(f"SRCC {c['srcc']:.3f}  PLCC {c['plcc']:.3f}  KRCC {c['krcc']:.3f}  (n={c['n']})")
        if c.get("n_missing"):
            lines.append(f"({c['n_missing']} MOS images skipped: unscored)")
    return "\n".join(lines)
