"""HTML quality report for a CSV of per-image scores (``crl-uiqa report``).

The scores CSV has the columns ``path`` and ``score`` (higher = better) and may
carry ``frame``, ``time``, ``sweep``, ``true_quality`` or any other column. The
report shows a summary, the best and worst images ranked, one quality curve per
group of frames (a sweep, or the folder of each image) with its best frame, the
predicted score against ``true_quality`` when present, and the pairwise
accuracy on a CSV of ``better,worse[,type]`` pairs when one is given.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import validate
from ..errors import ConfigError, InputError
from ..tables import csv_folder, path_key, read_pairs, read_score_table, table_base
from .html import SCORE_SCALE, Report

__all__ = ["ScoreRecord", "load_scores", "group_records", "load_pairs", "build_score_report", "SCAN_COLUMNS"]

log = logging.getLogger(__name__)

#: longest side, in pixels, of the images drawn in the report figures
THUMB_SIZE = 256


@dataclass
class ScoreRecord:
    """One row of a scores CSV.

    Attributes
    ----------
    key : str
        The ``path`` value as written in the CSV (used to match pairs).
    file : Path
        That path resolved against the root folder.
    score : float
        Quality score (NaN when the cell is empty).
    row : int
        Line number in the CSV (the header is line 1).
    extra : dict
        The other columns, as strings.
    """

    key: str
    file: Path
    score: float
    row: int
    extra: dict[str, str] = field(default_factory=dict)


def _parse_float(text: str | None, what: str) -> float:
    if text is None or str(text).strip() == "":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a number") from None


def load_scores(scores_csv: str | os.PathLike, root: str | os.PathLike | None = None) -> list[ScoreRecord]:
    """Read a scores CSV (:func:`crl_uiqa.tables.read_score_table`; empty score cells give NaN).

    Parameters
    ----------
    scores_csv : path
        CSV with at least the columns ``path`` and ``score``.
    root : path, optional
        Folder that relative paths are resolved against; by default the rule
        of :mod:`crl_uiqa.tables` (the current folder when the images are
        there, as ``score`` writes them, else the CSV's folder).

    Returns
    -------
    list of ScoreRecord
        In file order.
    """
    rows = read_score_table(scores_csv, allow_empty=True)
    base = table_base(scores_csv, [r.path for r in rows], root)
    return [ScoreRecord(key=r.path, file=base / os.path.expanduser(r.path), score=r.value, row=r.line,
                        extra=r.extra) for r in rows]


def _numeric_column(records: list[ScoreRecord], column: str) -> np.ndarray | None:
    """The column as floats, or None when absent or not all numeric."""
    if not records or column not in records[0].extra:
        return None
    try:
        return np.array([_parse_float(r.extra.get(column), column) for r in records], dtype=np.float64)
    except ValueError:
        return None


def group_records(records: list[ScoreRecord], group_by: str = "auto") -> dict[str, list[ScoreRecord]]:
    """Split records into groups of frames (sweeps, scans), each in frame order.

    Parameters
    ----------
    records : list of ScoreRecord
        From :func:`load_scores`.
    group_by : str
        A column name; ``"folder"`` for the folder of each image; ``"auto"``
        for the ``sweep`` column when present, else ``"folder"``; ``"none"``
        for a single group.

    Returns
    -------
    dict
        Group name -> records, sorted by the ``frame`` column when it is
        numeric, else by ``time``, else in file order.
    """
    if not records:
        return {}
    columns = set(records[0].extra)
    if group_by == "auto":
        group_by = "sweep" if "sweep" in columns else "folder"
    groups: dict[str, list[ScoreRecord]] = {}
    if group_by == "none":
        groups["all images"] = list(records)
    elif group_by in columns:
        for r in records:
            groups.setdefault(r.extra.get(group_by, "") or "(empty)", []).append(r)
    elif group_by == "folder":
        for r in records:
            groups.setdefault(str(Path(r.key).parent), []).append(r)
    else:
        raise ConfigError(
            f"--group-by {group_by!r}: no such column; use one of "
            f"{', '.join(sorted(columns)) or '(none)'}, 'auto', 'folder' or 'none'"
        )
    for name, members in groups.items():
        for column in ("frame", "time"):
            values = _numeric_column(members, column)
            if values is not None and np.isfinite(values).all():
                order = np.argsort(values, kind="stable")
                groups[name] = [members[i] for i in order]
                break
    return groups


def load_pairs(pairs_csv: str | os.PathLike) -> list[tuple[str, str, str | None]]:
    """Read a CSV of ranked pairs ``better,worse[,type]`` as tuples (:func:`crl_uiqa.tables.read_pairs`)."""
    return read_pairs(pairs_csv)


def _match_pairs(
    pairs: list[tuple[str, str, str | None]], records: list[ScoreRecord], base: Path
) -> tuple[list[tuple[str, str, str | None]], int]:
    """Map pair paths onto score keys (by file; by the path as written only when the pair's file is not on disk,
    so another folder's images with the same relative names never match); count the unmatched."""
    by_key = {r.key: r.key for r in records}
    by_file = {path_key(r.file): r.key for r in records}

    def find(p: str) -> str | None:
        k = path_key(p, base)
        if k in by_file:
            return by_file[k]
        return by_key.get(p) if not os.path.exists(k) else None

    matched, unmatched = [], 0
    for better, worse, ptype in pairs:
        b, w = find(better), find(worse)
        if b is None or w is None:
            unmatched += 1
        else:
            matched.append((b, w, ptype))
    return matched, unmatched


def _read_thumb(record: ScoreRecord, failures: dict[str, str]) -> np.ndarray | None:
    """The record's image shrunk to :data:`THUMB_SIZE`, or None (failure noted) if unreadable."""
    if record.key in failures:
        return None
    from PIL import Image

    from ..io import read_gray

    try:
        img = read_gray(record.file)
    except (OSError, ValueError) as exc:
        failures[record.key] = str(exc)
        log.warning("cannot read %s: %s", record.file, exc)
        return None
    pil = Image.fromarray(np.asarray(img, dtype=np.float32), mode="F")
    pil.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(pil, dtype=np.float32), 0.0, 1.0)


def _strip(report: Report, records: list[ScoreRecord], title: str, failures: dict[str, str],
           has_truth: bool, first_rank: int = 1) -> None:
    """Thumbnails of ``records`` (ranked) in a grid that wraps (two per row on a phone): rank, score, folder and
    file name (whole, wrapped), the true quality when known."""
    report.add_heading(title, level=3)
    thumbs = [_read_thumb(r, failures) for r in records]
    if all(img is None for img in thumbs):
        report.add_text("None of these images could be read.")
        return
    titles = [f"#{first_rank + k} \u00b7 score {r.score:.3f}" for k, r in enumerate(records)]
    captions = []
    for r, img in zip(records, thumbs):
        lines = ["/".join(Path(r.key).parts[-2:])]  # folder and file; the table below has the whole path
        if has_truth:
            lines.append(f"true quality {_parse_float(r.extra.get('true_quality'), 'true_quality'):.3f}")
        if img is None:
            lines.append("(unreadable)")
        captions.append("\n".join(lines))
    report.add_thumbnails(thumbs, titles, captions, size=THUMB_SIZE)


#: Columns that say the rows are frames of scans (sweeps), not unrelated stills.
SCAN_COLUMNS = ("sweep", "frame", "time")


def build_score_report(
    scores_csv: str | os.PathLike,
    out: str | os.PathLike,
    *,
    pairs_csv: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    group_by: str = "auto",
    top: int = 8,
    title: str | None = None,
    max_groups: int = 24,
    timestamp: Any = None,
    curves: bool | None = None,
) -> Path:
    """Write an HTML report about the scores in ``scores_csv``.

    Parameters
    ----------
    scores_csv : path
        CSV with ``path,score`` and optional ``frame``, ``time``, ``sweep``,
        ``true_quality`` columns.
    out : path
        The HTML file to write (atomically).
    pairs_csv : path, optional
        CSV of ranked pairs ``better,worse[,type]`` (paths as in the scores
        CSV, or resolving to the same files); adds a pairwise accuracy table.
    root : path, optional
        Folder that relative paths are resolved against; by default the rule
        of :mod:`crl_uiqa.tables` for the scores, the pairs CSV's folder for the pairs.
    group_by : str
        Column that groups frames into sweeps; ``"auto"`` uses ``sweep`` when
        present, else each image's folder; ``"none"`` makes one group.
    top : int
        Number of best and of worst images shown.
    title : str, optional
        Report title.
    max_groups : int
        Most quality curves drawn (the largest groups); all groups are listed
        in the table.
    timestamp : datetime or str, optional
        Fixed generation time (for reproducible output).
    curves : bool, optional
        Draw a quality curve along each group. Default: only when the rows
        are frames of scans (a ``sweep``, ``frame`` or ``time`` column) or
        ``group_by`` is given; a folder of unrelated stills is not a sweep.

    Returns
    -------
    Path
        ``out``.
    """
    top = validate.integer("top (--top)", top, minimum=1)
    max_groups = validate.integer("max_groups", max_groups, minimum=0)
    scores_csv = Path(scores_csv)
    records = load_scores(scores_csv, root)
    groups = group_records(records, group_by)
    if curves is None:
        curves = group_by != "auto" or any(c in records[0].extra for c in SCAN_COLUMNS)
    truth = _numeric_column(records, "true_quality")
    has_truth = truth is not None and np.isfinite(truth).sum() >= 2
    failures: dict[str, str] = {}
    report = Report(title or f"Quality report: {scores_csv.name}", timestamp=timestamp)
    ranked = _summary_section(report, scores_csv, records, groups, truth if has_truth else None)
    if pairs_csv is not None:
        _pairs_section(report, pairs_csv, records, root)
    _best_worst_section(report, ranked, top, failures, has_truth)
    _groups_section(report, groups, failures, max_groups if curves else 0, curves)
    if has_truth:
        from .figures import score_scatter

        report.add_heading("Score against true quality")
        fig = score_scatter(truth, np.array([r.score for r in records], dtype=np.float64), xlabel="true quality",
                            ylabel="predicted score", title="Predicted score vs true quality")
        report.add_figure(fig, caption="Each point is one image; rho is Spearman's rank correlation.")
    if failures:
        report.add_heading("Unreadable images")
        report.add_table([{"path": k, "error": v} for k, v in sorted(failures.items())],
                         caption=f"{len(failures)} image(s) could not be read and are not shown")
    return report.write(out)


def _summary_section(report: Report, scores_csv: Path, records: list[ScoreRecord],
                     groups: dict[str, list[ScoreRecord]], truth: np.ndarray | None) -> list[ScoreRecord]:
    """The summary table; returns the finite-scored records, best first."""
    from .figures import spearman_rho

    scores = np.array([r.score for r in records], dtype=np.float64)
    finite = np.isfinite(scores)
    if not finite.any():
        raise InputError(f"{scores_csv}: no finite scores to report")
    ranked = sorted((r for r in records if math.isfinite(r.score)), key=lambda r: -r.score)
    n_ok = int(finite.sum())
    summary: dict[str, Any] = {
        "scores file": str(scores_csv),
        "images": len(records),
    }
    if n_ok < len(records):
        summary["images with a score"] = n_ok
    if len(groups) > 1:
        summary["groups (folders or sweeps)"] = len(groups)
    summary.update({
        "highest score (best image)": f"{ranked[0].score:.3f}  {ranked[0].key}",
        "median score": f"{float(np.median(scores[finite])):.3f}",
        "mean score": f"{float(np.mean(scores[finite])):.3f}",
        "lowest score (worst image)": f"{ranked[-1].score:.3f}  {ranked[-1].key}",
    })
    if n_ok > 1:
        summary["spread (standard deviation)"] = f"{float(np.std(scores[finite])):.3f}"
    if truth is not None:
        summary["Spearman rho (score vs true_quality)"] = spearman_rho(truth, scores)
    report.add_heading("Summary")
    report.add_note(SCORE_SCALE)
    report.add_key_values(summary)
    if n_ok >= 3:
        from .figures import score_histogram

        report.add_figure(score_histogram(scores[finite], title=f"Scores of the {n_ok} images"),
                          caption=f"How many images got each score (higher = better, to the right); dashed line: "
                          f"the median. Every score is in {scores_csv.name}.")
    return ranked


def _pairs_section(report: Report, pairs_csv: str | os.PathLike, records: list[ScoreRecord],
                   root: str | os.PathLike | None) -> None:
    from ..evaluation import pairwise_accuracy

    pairs = load_pairs(pairs_csv)
    base = Path(root) if root is not None else csv_folder(pairs_csv)
    matched, unmatched = _match_pairs(pairs, records, base)
    scored = {r.key: r.score for r in records if math.isfinite(r.score)}
    unscored = sum(1 for b, w, _ in matched if b not in scored or w not in scored)
    matched = [p for p in matched if p[0] in scored and p[1] in scored]
    left_out = []
    if unmatched:
        left_out.append(f"{unmatched} name an image missing from the scores file")
        log.warning("%d of the %d pairs of %s name an image missing from the scores file (pair paths are taken "
                    "from %s; --root sets that folder)", unmatched, len(pairs), pairs_csv, base)
    if unscored:
        left_out.append(f"{unscored} name an image without a score")
    report.add_heading("Pairwise accuracy")
    report.add_text(
        f"Ranked pairs from `{pairs_csv}`: a pair counts as correct when the image marked "
        f"better gets the higher score (a tie counts half). {len(matched)} of {len(pairs)} pairs "
        f"have both images scored" + (f"; left out: {', '.join(left_out)}." if left_out else ".")
    )
    if matched:
        result = pairwise_accuracy(scored, matched)
        rows = [{"pairs": "all", **result["overall"]}]
        rows += [{"pairs": str(t), **v} for t, v in sorted(result.get("by_type", {}).items(),
                                                            key=lambda kv: str(kv[0]))]
        columns = ["pairs", "accuracy", "n", "ci_low", "ci_high"]
        report.add_table(rows, columns=columns, caption="Pairwise accuracy T/(T+F) with 95% interval")


def _best_worst_section(report: Report, ranked: list[ScoreRecord], top: int, failures: dict[str, str],
                        has_truth: bool) -> None:
    n_top = min(top, len(ranked))
    report.add_heading("Best and worst images")
    everything = len(ranked) <= 2 * n_top
    if everything:
        _strip(report, ranked, "The scored image" if len(ranked) == 1 else f"All {len(ranked)} scored images, best first",
               failures, has_truth)
    else:
        _strip(report, ranked[:n_top], f"Top {n_top} (highest scores)", failures, has_truth)
        _strip(report, ranked[-n_top:], f"Bottom {n_top} (lowest scores)", failures, has_truth,
               first_rank=len(ranked) - n_top + 1)
    table = []
    for rank, r in enumerate(ranked, start=1):
        if rank <= n_top or rank > len(ranked) - n_top:
            row = {"rank": rank, "path": r.key, "score": r.score}
            if has_truth:
                row["true_quality"] = _parse_float(r.extra.get("true_quality"), "true_quality")
            table.append(row)
    caption = (("The scored image" if len(ranked) == 1 else f"All {len(ranked)} scored images, best first") if everything
               else f"The {n_top} best and the {n_top} worst of {len(ranked)} scored images")
    report.add_table(table, caption=caption, float_format="{:.3f}")


def _group_row(name: str, members: list[ScoreRecord]) -> dict:
    s = np.array([m.score for m in members], dtype=np.float64)
    if not np.isfinite(s).any():
        return {"group": name, "frames": len(members), "best": "", "best score": float("nan"),
                "mean score": float("nan")}
    b = int(np.nanargmax(s))
    return {"group": name, "frames": len(members), "best": members[b].key, "best score": float(s[b]),
            "mean score": float(np.nanmean(s))}


def _groups_section(report: Report, groups: dict[str, list[ScoreRecord]], failures: dict[str, str],
                    max_groups: int, curves: bool) -> None:
    """The best frame of each group and, for sweeps, a quality curve along the largest ones.

    Nothing for one group of stills: its best image is in the summary already."""
    if not curves and len(groups) <= 1:
        return
    report.add_heading("Quality along each sweep" if curves else "Best image of each group")
    if not curves:
        report.add_text("The rows have no sweep, frame or time column, so the images are taken as unrelated "
                        "stills: no curves are drawn (give --group-by to draw one per group).")
    curve_groups = sorted((g for g in groups.items() if len(g[1]) >= 2), key=lambda g: -len(g[1]))[:max_groups]
    if curve_groups:
        report.add_text(
            "Each curve is the score of every frame in the group in frame order; the star marks the "
            "best frame, shown on the right."
        )
    for name, members in sorted(curve_groups, key=lambda g: g[0]):
        _curve(report, name, members, failures)
    skipped = len([g for g in groups.values() if len(g) >= 2]) - len(curve_groups)
    if curves and skipped > 0:
        report.add_text(f"Curves drawn for the {len(curve_groups)} largest groups; {skipped} more are in the table.")
    report.add_table(sorted((_group_row(n, m) for n, m in groups.items()), key=lambda r: r["group"]),
                     caption="Best frame of each group", float_format="{:.3f}")


def _curve(report: Report, name: str, members: list[ScoreRecord], failures: dict[str, str]) -> None:
    from .figures import quality_curve

    s = np.array([m.score for m in members], dtype=np.float64)
    if not np.isfinite(s).any():
        return
    b = int(np.nanargmax(s))
    times = _numeric_column(members, "time")
    frames = _numeric_column(members, "frame")
    if times is not None and np.isfinite(times).all():
        x, xlabel = times, "time (s)"
    elif frames is not None and np.isfinite(frames).all():
        x, xlabel = frames, "frame"
    else:
        x, xlabel = None, "frame (order in the scores file)"
    thumb = _read_thumb(members[b], failures)
    fig = quality_curve(s, times=x, best=b, title=f"{name} ({len(members)} frames)", thumbnails=thumb, xlabel=xlabel)
    report.add_figure(fig, caption=f"{name}: best frame {members[b].key} (score {s[b]:.3f})")
