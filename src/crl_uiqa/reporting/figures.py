"""Matplotlib figures for quality reports.

Every function returns a :class:`matplotlib.figure.Figure` built directly on the
Agg canvas (no :mod:`matplotlib.pyplot`, no global state, no display needed), so
figures can be made from worker threads, servers and headless machines alike.
Turn one into PNG bytes with :func:`fig_to_png` or hand it to
:meth:`crl_uiqa.report.Report.add_figure`.

Images follow the package convention: float arrays ``(H, W)`` in ``[0, 1]``,
grayscale. Scores: higher means better quality.
"""
from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import validate
from ..errors import ArgumentTypeError, ImageError, InputError

__all__ = [
    "quality_curve",
    "shade_ineligible",
    "ranked_strip",
    "views_caption",
    "views_figure",
    "training_curves",
    "score_scatter",
    "spearman_rho",
    "fig_to_png",
    "score_histogram",
]

#: colour of the best frame marker (and of its thumbnail frame)
BEST_COLOR = "#d62728"
#: colour of additional picked frames
PICK_COLOR = "#ff7f0e"
#: history keys that are bookkeeping, not losses, in :func:`training_curves`
BOOKKEEPING_KEYS = frozenset({"epoch", "step", "steps", "lr", "learning_rate", "time", "seconds", "elapsed",
                              "val_strong_pairs",
                              # the kept-epoch criterion: a copy of val_strong_accuracy (or val_srcc), drawn there
                              "criterion"})
#: most frames per row in :func:`ranked_strip`
STRIP_COLUMNS = 8


#: attribute that marks the figures made here: their text is plain (see :func:`fig_to_png`)
_PLAIN_TEXT = "_crl_uiqa_plain_text"


def _new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas, with constrained layout, whose text is drawn as plain text."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    setattr(fig, _PLAIN_TEXT, True)
    return fig


def _plain_text(fig: Figure) -> None:
    """No mathtext in a figure made here: its titles, labels and legends carry scan, folder and file names,
    and a name with ``$`` in it (``$\\frac{a$``, ``scan_$x^2$``) failed the render or came out as a formula."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)


def _as_image(image: Any, what: str) -> np.ndarray:
    """Validate one grayscale image and return it as float32 clipped to [0, 1]."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.size == 0:
        raise ImageError(f"{what}: expected a grayscale image of shape (H, W), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ImageError(f"{what}: expected a real numeric image, got dtype {arr.dtype}")
    arr = np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(arr, 0.0, 1.0)


def _as_scores(scores: Any, what: str = "scores") -> np.ndarray:
    """Validate a 1-D sequence of scores (NaN allowed) and return it as float64."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: expected a sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise InputError(f"{what}: expected a 1-D sequence, got shape {arr.shape}")
    return arr


def _show(ax, image: np.ndarray) -> None:
    """Draw a grayscale [0, 1] image on ``ax`` without ticks."""
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="antialiased")
    ax.set_xticks([])
    ax.set_yticks([])


def _fmt_value(value: Any) -> str:
    """Short text for a caption value: numbers with 3 significant decimals."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if not math.isfinite(float(value)) else f"{float(value):.3f}"
    return str(value)


def _check_index(index: Any, n: int, what: str) -> int:
    try:
        i = int(index)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected a frame index, got {index!r}") from None
    if i != index or not 0 <= i < n:
        raise InputError(f"{what}: frame index {index!r} out of range for {n} scores")
    return i


def quality_curve(
    scores: Sequence[float] | np.ndarray,
    *,
    times: Sequence[float] | np.ndarray | None = None,
    best: int | None = None,
    picks: Sequence[int] = (),
    title: str = "",
    thumbnails: Any = None,
    xlabel: str | None = None,
    mark_best: bool = True,
    score_name: str = "score",
) -> Figure:
    """Quality score along a sweep or scan, with the chosen frame(s) marked.

    Parameters
    ----------
    scores : sequence of float
        One quality score per frame, in frame order (NaN = not scored, drawn as
        a gap).
    times : sequence of float, optional
        x position of each frame (e.g. seconds); the frame index when omitted.
    best : int, optional
        Index of the best frame, marked with a star and a dashed line. Defaults
        to the highest finite score; nothing is marked when all are NaN.
    picks : sequence of int
        Further chosen frames (e.g. the other top-k frames), marked with
        triangles.
    title : str
        Figure title.
    thumbnails : array, mapping or sequence, optional
        The best frame's image shown in a panel beside the curve. Either the
        image itself (``(H, W)`` in [0, 1]), a mapping ``{frame index: image}``
        or a sequence of images aligned with ``scores``. When it holds no image
        for the best frame, no panel is drawn.
    xlabel : str, optional
        x-axis label; ``"time (s)"`` when ``times`` is given, else ``"frame"``.
    mark_best : bool
        ``False``: mark no best frame at all (e.g. when no frame was eligible).
    score_name : str
        What the curve is, in a word or two, for the legend, the y axis and the
        thumbnail's title: ``"score"`` (a quality score); e.g. ``"pick score"``
        for a combination the best frame is picked on, which is not a quality
        score on the model's scale.

    Returns
    -------
    matplotlib.figure.Figure
        One axes for the curve, plus one image axes when a thumbnail is shown.
    """
    y = _as_scores(scores)
    n = y.size
    if n == 0:
        raise InputError("scores: need at least one score to draw a quality curve")
    if times is None:
        x = np.arange(n, dtype=np.float64)
    else:
        x = _as_scores(times, "times")
        if x.size != n:
            raise InputError(f"times: got {x.size} values for {n} scores")
    if not mark_best:
        best_i = None
    elif best is None:
        best_i = int(np.nanargmax(y)) if np.isfinite(y).any() else None
    else:
        best_i = _check_index(best, n, "best")
    pick_idx = [_check_index(p, n, "picks") for p in picks]
    pick_idx = [p for p in dict.fromkeys(pick_idx) if p != best_i]

    xlabel = xlabel or ("time (s)" if times is not None else "frame")

    def where(i: int) -> str:
        if times is None:
            return f"frame {i}"
        return f"{x[i]:g} s" if xlabel == "time (s)" else f"{xlabel} {x[i]:g}"

    thumb = None
    if thumbnails is not None and best_i is not None:
        if isinstance(thumbnails, np.ndarray) and thumbnails.ndim == 2:
            thumb = thumbnails
        elif isinstance(thumbnails, Mapping):
            thumb = thumbnails.get(best_i)
        else:
            if len(thumbnails) != n:
                raise InputError(
                    f"thumbnails: expected one image per score ({n}), a mapping or a single image; "
                    f"got {len(thumbnails)} items"
                )
            thumb = thumbnails[best_i]
        if thumb is not None:
            thumb = _as_image(thumb, f"thumbnail of frame {best_i}")

    if thumb is None:
        fig = _new_figure(8.0, 3.2)
        ax = fig.add_subplot()
    else:
        fig = _new_figure(10.5, 3.2)
        aspect = thumb.shape[1] / thumb.shape[0]
        gs = fig.add_gridspec(1, 2, width_ratios=[3.2, max(0.6, min(2.0, aspect)) * 1.0])
        ax = fig.add_subplot(gs[0, 0])
        tax = fig.add_subplot(gs[0, 1])
        _show(tax, thumb)
        for spine in tax.spines.values():
            spine.set_edgecolor(BEST_COLOR)
            spine.set_linewidth(2.5)
        tax.set_title(f"best: {where(best_i)}\n{score_name} {_fmt_value(y[best_i])}", fontsize=9, color=BEST_COLOR)

    ax.plot(x, y, color="#1f77b4", linewidth=1.3, marker="." if n <= 200 else None, markersize=4, label=score_name)
    if pick_idx:
        ax.plot(x[pick_idx], y[pick_idx], linestyle="none", marker="v", markersize=8,
                color=PICK_COLOR, markeredgecolor="black", markeredgewidth=0.5, label="picked", zorder=3)
    if best_i is not None:
        ax.axvline(x[best_i], color=BEST_COLOR, linestyle="--", linewidth=1.0, alpha=0.7)
        ax.plot([x[best_i]], [y[best_i]], linestyle="none", marker="*", markersize=15, color=BEST_COLOR,
                markeredgecolor="black", markeredgewidth=0.6,
                label=f"best ({where(best_i)}, {_fmt_value(y[best_i])})", zorder=4)
    finite_x = np.unique(x[np.isfinite(x)])
    if finite_x.size == 1:  # one frame: a unit-wide axis around it, not matplotlib's +-1e-17 offset axis
        ax.set_xlim(finite_x[0] - 1.0, finite_x[0] + 1.0)
    ax.ticklabel_format(axis="x", useOffset=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(("quality score" if score_name == "score" else score_name) + " (higher = better)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    if title:
        ax.set_title(title)
    return fig


def shade_ineligible(ax, times: Sequence[float] | np.ndarray, eligible: Sequence[bool] | np.ndarray) -> None:
    """Shade the stretches of frames that may not be picked (the plane check of ``select`` and the demo) on the
    axes of a :func:`quality_curve`; the first stretch is labelled "not eligible" for the legend."""
    t = np.asarray(times, dtype=np.float64)
    ok = np.asarray(eligible, dtype=bool)
    if ok.all():
        return
    half = float(np.median(np.diff(t))) / 2 if t.size > 1 else 0.5
    bad = np.concatenate([[False], ~ok, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(bad) == 1)
    stops = np.flatnonzero(np.diff(bad) == -1)  # exclusive
    for k, (a, b) in enumerate(zip(starts, stops)):
        ax.axvspan(t[a] - half, t[b - 1] + half, color="0.85", alpha=0.6, zorder=0, linewidth=0,
                   label="not eligible" if k == 0 else None)


def ranked_strip(
    images: Sequence[np.ndarray],
    scores: Sequence[float] | np.ndarray,
    *,
    labels: Sequence[Any] | None = None,
    n: int = 8,
    title: str = "",
    first_rank: int = 1,
) -> Figure:
    """Frames ranked from best to worst score, each captioned with its score.

    Parameters
    ----------
    images : sequence of ndarray
        Grayscale images ``(H, W)`` in [0, 1].
    scores : sequence of float
        One score per image; NaN scores rank last.
    labels : sequence, optional
        One extra caption line per image (e.g. the true quality); numbers are
        shown with 3 decimals.
    n : int
        Number of best-scored images shown (at most ``len(images)``); rows wrap
        after 8 frames.
    title : str
        Figure title.
    first_rank : int
        Rank printed on the first frame (``#first_rank``, then counting up);
        e.g. 93 for a strip of the 8 worst of 100 images.

    Returns
    -------
    matplotlib.figure.Figure
        One image axes per shown frame, best first.
    """
    y = _as_scores(scores)
    if len(images) != y.size:
        raise InputError(f"ranked_strip: got {len(images)} images but {y.size} scores")
    if labels is not None and len(labels) != y.size:
        raise InputError(f"ranked_strip: got {len(labels)} labels for {y.size} images")
    if y.size == 0:
        raise InputError("ranked_strip: no images to show")
    n = validate.integer("ranked_strip: n", n, minimum=1)
    # stable descending order, NaN last
    key = np.where(np.isnan(y), -np.inf, y)
    order = np.argsort(-key, kind="stable")
    order = np.concatenate([order[~np.isnan(y[order])], order[np.isnan(y[order])]])[:n]
    shown = [_as_image(images[i], f"image {i}") for i in order]

    cols = min(len(shown), STRIP_COLUMNS)
    rows = math.ceil(len(shown) / cols)
    aspect = float(np.median([im.shape[1] / im.shape[0] for im in shown]))
    cell_w = 1.7
    cell_h = cell_w / max(0.4, min(2.5, aspect)) + (0.55 if labels is not None else 0.4)
    fig = _new_figure(max(3.0, cols * cell_w), rows * cell_h + (0.4 if title else 0.0))
    for k, (i, im) in enumerate(zip(order, shown)):
        ax = fig.add_subplot(rows, cols, k + 1)
        _show(ax, im)
        caption = f"#{first_rank + k}  {_fmt_value(y[i])}"
        if labels is not None:
            caption += f"\n{_fmt_value(labels[i])}"
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def views_figure(
    source: np.ndarray,
    source_score: float,
    weak: Sequence[tuple[np.ndarray, float, str]],
    strong: Sequence[tuple[np.ndarray, float, str]],
    columns: int | None = None,
) -> Figure:
    """One image with its weak and strong views and their scores (paper Fig. 2).

    Layout: (a) the source view on the left; (b) the weakly augmented views
    (flip, rotation: same quality, scores should match the source) in the top
    row(s); (c) the strongly augmented views at increasing distortion degree
    (scores should drop) below, ``columns`` views per row (e.g. one family per row).

    Parameters
    ----------
    source : ndarray
        The source image ``(H, W)`` in [0, 1].
    source_score : float
        Its predicted quality score.
    weak, strong : list of (image, score, caption)
        The views, each with its score and a short caption (e.g. ``"hflip"``,
        ``"blur sigma=2"``).
    columns : int, optional
        Views per row (default: all of ``weak`` or ``strong`` on one row, at most 6).

    Returns
    -------
    matplotlib.figure.Figure
        ``1 + len(weak) + len(strong)`` image axes, at most 11.2 inches wide so that its
        labels (9 pt and up) stay legible in a report column about 1100 px wide at 100 dpi.
    """
    src = _as_image(source, "source")

    def _check(views, name):
        out = []
        for k, view in enumerate(views):
            if not isinstance(view, (tuple, list)) or len(view) != 3:
                raise InputError(f"{name}[{k}]: expected an (image, score, caption) tuple")
            img, score, caption = view
            out.append((_as_image(img, f"{name}[{k}] image"), score, str(caption)))
        return out

    weak_v = _check(weak, "weak")
    strong_v = _check(strong, "strong")
    cols = validate.integer("columns", columns, minimum=1) if columns else min(6, max(1, len(weak_v), len(strong_v)))
    rows_of = lambda v: max(1, math.ceil(len(v) / cols)) if v else 0  # noqa: E731
    n_weak_rows, n_strong_rows = rows_of(weak_v), rows_of(strong_v)
    n_rows = max(1, n_weak_rows + n_strong_rows)
    aspect = max(0.6, min(1.6, src.shape[1] / src.shape[0]))
    cell = min(1.9, 11.2 / ((cols + 2) * aspect))  # inches per view
    fig = _new_figure(cell * (cols + 2) * aspect, (cell + 0.45) * n_rows + 0.3)
    gs = fig.add_gridspec(n_rows, cols + 1, width_ratios=[2.0] + [1.0] * cols)
    ax = fig.add_subplot(gs[:, 0])
    _show(ax, src)
    ax.set_title(f"(a) source\nscore {_fmt_value(source_score)}", fontsize=11)
    for first_row, views, label in ((0, weak_v, "(b) weak"), (n_weak_rows, strong_v, "(c) strong")):
        for k, (img, score, caption) in enumerate(views):
            r, c = divmod(k, cols)
            vax = fig.add_subplot(gs[first_row + r, 1 + c])
            _show(vax, img)
            vax.set_title(f"{caption}\n{_fmt_value(score)}", fontsize=9)
            if c == 0:
                vax.set_ylabel(label, fontsize=10)
    return fig


def views_caption(source_score: float, weak: Sequence[tuple[str, float]],
                  strong: Sequence[tuple[str, float, float]]) -> str:
    """A caption for :func:`views_figure` that states what its numbers show.

    ``weak``: ``(name, score)``; ``strong``: ``(family, degree, score)``. The caption gives the
    range of the weak views' scores and the largest change, how each strong family's score moves
    with its degree, and whether the weak views move the score less than the strongest views do.
    """
    s0 = float(source_score)
    f = _fmt_value
    parts = [f"Source score {f(s0)}."]
    biggest = 0.0
    if weak:
        names, ws = zip(*[(str(n), float(v)) for n, v in weak])
        k = int(np.argmax(np.abs(np.array(ws) - s0)))
        biggest = abs(ws[k] - s0)
        parts.append(f"Weak views (trained to keep the source's score): {f(min(ws))} to {f(max(ws))}; "
                     f"largest change {names[k]}, {f(s0)} → {f(ws[k])}.")
    drops = []
    if strong:
        fams: dict[str, list[tuple[float, float]]] = {}
        for fam, deg, v in strong:
            fams.setdefault(str(fam), []).append((float(deg), float(v)))
        texts = []
        for fam, pts in fams.items():
            pts.sort()
            vals = [v for _, v in pts]
            drops.append(s0 - vals[-1])
            steps = np.diff([s0, *vals])
            if vals[-1] >= s0:
                how = "does not fall"
            elif np.all(steps < 0):
                how = "falls at every step"
            else:
                how = "falls overall, not at every step"
            chain = " → ".join(f(v) for v in [s0, *vals])
            texts.append(f"{fam} {chain} "
                         f"(degree {pts[0][0]:.2f} to {pts[-1][0]:.2f}: {how})")
        parts.append("Strong views of rising degree (trained to score lower): " + "; ".join(texts) + ".")
    if weak and drops:
        strongest = min(drops)
        if biggest < strongest:
            parts.append(f"Here the weak views move the score by at most {f(biggest)}, less than the strongest "
                         f"corruption lowers it (at least {f(strongest)}).")
        else:
            parts.append(f"Here a weak view moves the score by {f(biggest)}, as much as or more than the strongest "
                         f"corruption lowers it ({f(strongest)}): the model is not consistent on this frame.")
    return " ".join(parts)


def _history_series(history: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Epoch numbers and one NaN-padded float series per numeric key."""
    epochs = []
    keys: list[str] = []
    for i, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise InputError(f"history[{i}]: expected a dict of per-epoch values, got {type(row).__name__}")
        epochs.append(row.get("epoch", i + 1))
        for k, v in row.items():
            if k not in keys and _is_number(v):
                keys.append(k)
    series = {}
    for k in keys:
        vals = [row.get(k) for row in history]
        series[k] = np.array([float(v) if _is_number(v) else np.nan for v in vals], dtype=np.float64)
    try:
        x = np.asarray(epochs, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("history: the 'epoch' values must be numbers") from None
    return x, series


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def training_curves(history: Sequence[Mapping[str, Any]]) -> Figure:
    """Per-epoch training losses, and validation accuracies and rank correlations (SRCC).

    Parameters
    ----------
    history : list of dict
        One dict per epoch, e.g. ``{"epoch": 1, "loss": 0.8, "L_d": 0.5,
        "L_c": 0.1, "L_r": 0.2, "val_accuracy": 0.71}``. Every numeric key
        other than ``epoch`` and bookkeeping keys (``lr``, ``time``, ...; see
        :data:`BOOKKEEPING_KEYS`) is drawn in the loss panel, except keys
        containing ``accuracy``, which go to the accuracy panel (with the 95 %
        interval shaded when ``val_accuracy_ci_low``/``val_accuracy_ci_high``
        are present). Missing values leave gaps.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes (losses, accuracy) when an accuracy key is present, else one.
    """
    if len(history) == 0:
        raise InputError("history: no epochs to plot")
    x, series = _history_series(history)
    # pairwise accuracies and rank correlations share the right-hand [0, 1] panel
    acc_keys = [k for k in series if ("accuracy" in k or "srcc" in k) and not k.endswith(("_ci_low", "_ci_high"))]
    ci_keys = {k for k in series if k.endswith(("_ci_low", "_ci_high"))}
    loss_keys = [k for k in series if k not in BOOKKEEPING_KEYS and k not in acc_keys and k not in ci_keys]
    if not loss_keys and not acc_keys:
        raise InputError("history: no numeric loss or accuracy values besides 'epoch'")

    panels = (1 if loss_keys else 0) + (1 if acc_keys else 0)
    fig = _new_figure(5.2 * panels, 3.4)
    col = 1
    marker = "o" if x.size <= 30 else None
    if loss_keys:
        ax = fig.add_subplot(1, panels, col)
        col += 1
        for k in loss_keys:
            ok = np.isfinite(series[k])
            lw = 2.0 if k == "loss" else 1.2
            ax.plot(x[ok], series[k][ok], marker=marker, markersize=3, linewidth=lw, label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title("training losses")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if acc_keys:
        ax = fig.add_subplot(1, panels, col)
        for k in acc_keys:
            ok = np.isfinite(series[k])
            (line,) = ax.plot(x[ok], series[k][ok], marker=marker, markersize=3, linewidth=1.6, label=k)
            lo, hi = series.get(f"{k}_ci_low"), series.get(f"{k}_ci_high")
            if lo is not None and hi is not None:
                band = np.isfinite(lo) & np.isfinite(hi)
                ax.fill_between(x[band], lo[band], hi[band], color=line.get_color(), alpha=0.2,
                                label=f"{k} 95% CI")
        ax.axhline(0.5, color="gray", linestyle=":", linewidth=1.0, label="chance")
        seen = np.concatenate([series[k][np.isfinite(series[k])] for k in acc_keys])  # all NaN: nothing seen
        ax.set_ylim(min(0.4, float(seen.min()) - 0.05) if seen.size else 0.35, 1.02)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy / rank correlation")
        ax.set_title("validation")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return fig


def score_histogram(scores: Sequence[float] | np.ndarray, *, title: str = "", bins: int | None = None) -> Figure:
    """How many images got each score: a histogram with the median marked (NaN scores left out).

    Parameters
    ----------
    scores : sequence of float
        One score per image (higher = better).
    title : str
        Figure title.
    bins : int, optional
        Number of bars; by default about one per 5 images, between 5 and 40.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: score on x (higher = better, to the right), number of images on y.
    """
    y = _as_scores(scores)
    y = y[np.isfinite(y)]
    if y.size == 0:
        raise InputError("score_histogram: no finite scores")
    if bins is None:
        bins = int(min(40, max(5, round(y.size / 5))))
    bins = validate.integer("score_histogram: bins", bins, minimum=1)
    fig = _new_figure(7.0, 2.8)
    ax = fig.add_subplot()
    lo, hi = float(y.min()), float(y.max())
    ax.hist(y, bins=bins, range=(lo - 0.5, hi + 0.5) if hi == lo else None, color="#2b6cb0",
            edgecolor="white")
    med = float(np.median(y))
    ax.axvline(med, color="#c53030", linestyle="--", linewidth=1.2, label=f"median {med:.3f}")
    ax.set_xlabel("quality score (higher = better)")
    ax.set_ylabel("images")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def score_scatter(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Figure:
    """Scatter of two score series with Spearman's rank correlation in the title.

    Parameters
    ----------
    x, y : sequence of float
        Paired values (e.g. true quality and predicted score); pairs with a NaN
        are left out.
    xlabel, ylabel : str
        Axis labels.
    title : str
        Title; ``"Spearman rho = ..., n = ..."`` is appended.

    Returns
    -------
    matplotlib.figure.Figure
        One axes.
    """
    xs, ys = _finite_pairs(x, y, "score_scatter")
    rho = spearman_rho(xs, ys)
    stats = f"Spearman \u03c1 = {_fmt_value(rho)}, n = {xs.size}"
    fig = _new_figure(5.0, 4.2)
    ax = fig.add_subplot()
    ax.scatter(xs, ys, s=16, alpha=0.7, edgecolors="none")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{title}\n{stats}" if title else stats, fontsize=10)
    return fig


def _finite_pairs(x, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as float arrays of equal length, keeping the pairs where both are finite."""
    xs = _as_scores(x, "x")
    ys = _as_scores(y, "y")
    if xs.size != ys.size:
        raise InputError(f"{what}: x has {xs.size} values but y has {ys.size}")
    ok = np.isfinite(xs) & np.isfinite(ys)
    return xs[ok], ys[ok]


def spearman_rho(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation of finite pairs; NaN when undefined.

    Undefined means fewer than 2 finite pairs or a constant series.
    """
    from scipy.stats import spearmanr

    xs, ys = _finite_pairs(x, y, "spearman_rho")
    if xs.size < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return float("nan")
    return float(spearmanr(xs, ys).statistic)


def fig_to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (any canvas; rendered with Agg).
    dpi : int
        Resolution in dots per inch.

    Returns
    -------
    bytes
        The PNG file content.
    """
    if not isinstance(fig, Figure):
        raise ArgumentTypeError(f"fig_to_png: expected a matplotlib Figure, got {type(fig).__name__}")
    dpi = validate.integer("fig_to_png: dpi", dpi, minimum=1)
    if getattr(fig, _PLAIN_TEXT, False):
        _plain_text(fig)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # a file name in a script the font lacks (CJK, ...) is drawn as boxes; the HTML beside the figure
        # shows the name itself, so matplotlib's warning would only put a Python warning on the terminal
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from (current )?font", category=UserWarning)
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
