"""What ``select`` and ``live`` draw and write.

``select``: the picks, per-frame and picks CSVs, the quality-over-time plot, the region picture,
``selection.json`` and the HTML report of one scan (:func:`write_selection`), and the summary of
several scans (:func:`write_summary`). ``live``: its quality over stream time (:func:`live_figure`).

Every file goes under the output folder given; :func:`scan_folder` turns a scan's name into a safe
sub-folder name (a scan called ``...mp4`` or ``..`` cannot write beside the output folder).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import InputError
from ..files import safe_name
from ..video.region import draw_region

if TYPE_CHECKING:
    from ..video.live import LiveResult
    from ..video.select import SelectionResult

__all__ = ["write_selection", "write_summary", "quality_figure", "scan_folder", "live_figure", "why_picked",
           "SELECTION_FILES", "SUMMARY_FILES", "check_selection_outputs"]

#: the files :func:`write_selection` writes into a scan's folder (``best_*``: the picks), and :func:`write_summary`
#: into the output folder
SELECTION_FILES = ("best_*_frame*.png", "frames.csv", "picks.csv", "quality.png", "region.png", "selection.json",
                   "report.html")
SUMMARY_FILES = ("summary.csv", "report.html")


def check_selection_outputs(out_dir: str | os.PathLike, scan_names: Sequence[str] | None = None, *,
                            report: bool = True) -> None:
    """Refuse, before any scan is read, a file in ``out_dir`` that ``select`` would replace and no crl-uiqa run wrote
    (:func:`crl_uiqa.files.check_outputs_free`). ``scan_names``: the names of several scans, each written to its
    folder (:func:`scan_folder`); None: one scan, written into ``out_dir`` itself. ``report``: HTML reports too.
    The files of a ``select`` run from before crl-uiqa kept records are recognised by its layout
    (:func:`_check_free`)."""
    from ..files import glob_escape

    files = _selection_files(report)
    summary = list(SUMMARY_FILES if report else SUMMARY_FILES[:1])
    if scan_names is None:
        _check_free(out_dir, summary + list(files))
        return
    _check_free(out_dir, summary)
    used: set[str] = set()
    for name in scan_names:
        folder = scan_folder(out_dir, name, used)
        _check_free(out_dir, [f"{glob_escape(folder.name)}/{n}" for n in files])


#: what marks a folder written by ``select`` before crl-uiqa kept records of its outputs: its selection.json's keys
_SELECTION_KEYS = {"scan", "kind", "runtime", "frames_scored", "eligible", "picks", "settings"}


def _select_wrote(path: Path) -> bool:
    """Whether the file ``path`` reads as the ``select`` output of its name: a selection.json with select's keys, a
    CSV with select's header, a PNG (matplotlib's for quality.png), an HTML page crl-uiqa generated. Read with a size bound; a link, anything
    unreadable or anything else (a user's file of that name) is not."""
    import json

    from ..video.select import FRAME_COLUMNS, PICK_COLUMNS, SUMMARY_COLUMNS

    headers = {"summary.csv": SUMMARY_COLUMNS, "frames.csv": FRAME_COLUMNS, "picks.csv": PICK_COLUMNS}
    try:
        if path.is_symlink() or not path.is_file():
            return False
        if path.name == "selection.json":
            if path.stat().st_size >= 1 << 24:
                return False
            data = json.loads(path.read_bytes())
            return isinstance(data, dict) and _SELECTION_KEYS <= set(data)
        with path.open("rb") as fh:
            head = fh.read(4096)
        if path.name in headers:
            return head.split(b"\n", 1)[0].decode("utf-8", "replace").strip() == ",".join(headers[path.name])
        if path.name == "quality.png":  # select's plot: matplotlib's PNG, which names its software up front
            return head.startswith(b"\x89PNG\r\n\x1a\n") and b"tEXtSoftware\x00Matplotlib" in head
        if path.suffix == ".png":  # a picked frame (best_*_frame*.png) or region.png: select's names, a PNG
            return head.startswith(b"\x89PNG\r\n\x1a\n")
        if path.name == "report.html":
            return b'<meta name="generator" content="crl-uiqa ' in head
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
        return False
    return False


def _earlier_selection(folder: Path) -> bool:
    """Whether ``folder`` holds a ``select`` run's outputs from before crl-uiqa kept records of them: no record,
    and a ``selection.json`` (one scan) with select's keys or a ``summary.csv`` (several scans) with select's
    header (:func:`_select_wrote`)."""
    from ..files import OUTPUTS_RECORD

    if os.path.lexists(folder / OUTPUTS_RECORD):
        return False
    return _select_wrote(folder / "selection.json") or _select_wrote(folder / "summary.csv")


def _check_free(out_dir: str | os.PathLike, names: Sequence[str]) -> None:
    """:func:`crl_uiqa.files.check_outputs_free` for ``select``'s files in ``out_dir`` (``names`` in it or in a scan's
    folder just below it), counting as a run's the files of an earlier ``select`` run from before records
    (:func:`_earlier_selection`) that read as select's (:func:`_select_wrote`): a user's file beside them (a
    report.html of their own next to a --no-report run's files) is still refused. Only when nothing is refused are
    those files recorded as a run's (in their own folder's record), so this run replaces them; a refused run
    records nothing."""
    from ..files import adopt_outputs, check_outputs_free, foreign_outputs

    root = Path(out_dir)
    earlier: dict[str, bool] = {}

    def old_select(rel: str) -> bool:
        parent = rel.rpartition("/")[0]
        if "/" in parent:
            return False
        if parent not in earlier:
            folder = root / parent if parent else root
            earlier[parent] = folder.is_dir() and not folder.is_symlink() and _earlier_selection(folder)
        return earlier[parent] and _select_wrote(root / rel)

    found = foreign_outputs(root, names)
    if not found:  # the usual case: nothing unrecorded, so nothing to recognise or adopt
        return
    check_outputs_free(root, names, also=old_select)
    by_folder: dict[str, list[str]] = {}
    for rel in found:  # every one an earlier run's (old_select), or the check refused it
        parent, _, name = rel.rpartition("/")
        by_folder.setdefault(parent, []).append(name)
    for parent, files in by_folder.items():
        adopt_outputs(root / parent if parent else root, files)


def _selection_files(report: bool) -> tuple[str, ...]:
    return SELECTION_FILES if report else tuple(n for n in SELECTION_FILES if n != "report.html")


def scan_folder(out_dir: str | os.PathLike, name: str, used: set[str] | None = None) -> Path:
    """``out_dir/<name>``, the name made safe (:func:`crl_uiqa.files.safe_name`) and unique among ``used``.

    Two scans with the same name get ``name``, ``name-2``, ``name-3``...; the
    folder is always a direct child of ``out_dir``.
    """
    base = safe_name(name, default="scan")
    used = set() if used is None else used
    out, k = base, 2
    while out in used:
        out, k = f"{base}-{k}", k + 1
    used.add(out)
    return Path(out_dir) / out


def _rgb_png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def quality_figure(result: SelectionResult):
    """Quality over time with the picks marked (raw scores faint when smoothed, ineligible frames shaded)."""
    from .figures import quality_curve, shade_ineligible

    if result.n_scored == 0:
        raise InputError(f"{result.scan}: no frame was scored, nothing to plot")
    pos = {int(f): i for i, f in enumerate(result.frames)}
    pick_pos = [pos[p.frame] for p in result.picks]
    smoothing = result.settings.get("smooth", 0.0) > 0
    title = f"{result.name}: quality over time"
    if result.plane:
        title += f" ({result.plane} >= {result.plane_threshold:g})"
    fig = quality_curve(
        result.quality_smoothed, times=result.times, best=pick_pos[0] if pick_pos else None,
        picks=pick_pos[1:], title=title, mark_best=bool(pick_pos),
        thumbnails={pick_pos[0]: result.picks[0].image} if pick_pos else None,
    )
    ax = fig.axes[0]
    if smoothing:
        ax.plot(result.times, result.quality, color="0.6", linewidth=0.7, alpha=0.6, zorder=1,
                label="raw score")
    shade_ineligible(ax, result.times, result.eligible)
    ax.set_ylabel("quality score" + (f" (smoothed +-{result.settings['smooth']:g} s)" if smoothing else ""))
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return fig


def write_selection(result: SelectionResult, out_dir: str | os.PathLike, *, report: bool = True) -> dict[str, Path]:
    """Write a selection: picks, CSVs, plot, region picture and HTML report.

    Files in ``out_dir``: ``best_<rank>_frame<index>.png`` (the picks, cut to
    the region, at full resolution), ``frames.csv`` (:data:`FRAME_COLUMNS`),
    ``picks.csv``, ``quality.png``, ``region.png`` (the region drawn on the
    first frame) and ``report.html``.

    Returns
    -------
    dict
        Name -> path of every file written.
    """
    from ..files import write_bytes, write_csv, write_json
    from ..io import write_gray_png
    from ..video.select import FRAME_COLUMNS, PICK_COLUMNS
    from .figures import fig_to_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_free(out, _selection_files(report))
    written: dict[str, Path] = {}
    digits = max(4, len(str(int(result.frames.max())))) if result.n_scored else 4
    for p in result.picks:
        p.path = write_gray_png(out / f"best_{p.rank:02d}_frame{p.frame:0{digits}d}.png", p.image)
        written[f"pick_{p.rank}"] = p.path
    written["frames_csv"] = write_csv(out / "frames.csv", result.rows(), FRAME_COLUMNS)
    written["picks_csv"] = write_csv(out / "picks.csv", [
        {"rank": p.rank, "frame": p.frame, "time": round(p.time, 6), "quality": p.quality,
         "quality_smoothed": p.quality_smoothed,
         "plane_probability": "" if p.plane_probability is None else p.plane_probability,
         "file": p.path.name if p.path else ""}
        for p in result.picks
    ], PICK_COLUMNS)
    plot_png = None
    if result.n_scored:
        plot_png = fig_to_png(quality_figure(result))
        written["plot"] = write_bytes(out / "quality.png", plot_png)
    region_png = None
    if result.region is not None and result.region_frame is not None:
        region_png = _rgb_png(draw_region(result.region_frame, result.region))
        written["region"] = write_bytes(out / "region.png", region_png)
    written["json"] = write_json(out / "selection.json", _summary_json(result))
    if report:
        written["report"] = _report(result, plot_png, region_png).write(out / "report.html")
    return written


def _summary_json(result: SelectionResult) -> dict:
    det = result.region
    return {
        "scan": result.scan, "kind": result.kind, "runtime": result.runtime, "image_size": list(result.image_size),
        "frames_scored": result.n_scored, "eligible": int(result.eligible.sum()),
        "region": None if det is None else {"method": det.method, "box": list(det.box.as_tuple())},
        "picks": [{"rank": p.rank, "frame": p.frame, "time": p.time, "quality": p.quality,
                   "quality_smoothed": p.quality_smoothed, "plane_probability": p.plane_probability,
                   "file": p.path.name if p.path else None} for p in result.picks],
        "settings": result.settings, "seconds": round(result.seconds, 3),
        "error": None if result.error is None else str(result.error),
    }


#: how the ultrasound region was found, in words (RegionDetection.method -> text)
_REGION_METHODS = {
    "temporal-std": "found from the pixels that change over the clip",
    "intensity": "found from the bright pixels of the first frames",
    "full-frame": "no image area found: the whole frame",
    "dicom": "from the DICOM file's region",
    "manual": "given with --crop",
    "none": "the whole frame (--region none)",
}


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def why_picked(result: SelectionResult) -> str:
    """Why each frame was picked, in plain words (the rules that picked it and where its score stands)."""
    n = result.n_scored
    q = np.asarray(result.quality_smoothed, dtype=np.float64)
    ok = np.asarray(result.eligible, dtype=bool) & np.isfinite(q)
    n_ok = int(ok.sum())
    smooth = float(result.settings.get("smooth", 0.0) or 0.0)
    gap = float(result.settings.get("min_gap", 0.0) or 0.0)
    top_k = int(result.settings.get("top_k", 1))
    score = f"score averaged over \u00b1{smooth:g} s" if smooth > 0 else "score"
    if n == 1:
        rules = ["The scan has one scored frame; its quality score (higher = better) is "
                 f"{float(q[0]):.3f}."]
        if result.picks:
            return " ".join(rules) + "\n\n" + f"- **#1: frame {result.picks[0].frame}**: the only frame" + (
                f"; {result.plane} probability {float(result.picks[0].plane_probability):.2f}." if result.plane
                and result.picks[0].plane_probability is not None else ".")
    rules = [f"Each of the {n} scored frames got a quality score (higher = better)."]
    if smooth > 0:
        rules.append(f"Frames were ranked by their score averaged over \u00b1{smooth:g} s around them, so a single "
                     "lucky frame between poor ones does not win.")
    if result.plane:
        rules.append(f"Only frames that SonoNet-16 takes for the {result.plane} plane (probability at least "
                     f"{result.plane_threshold:g}) could be picked: {n_ok} of {n}"
                     + ("; the others are the grey bands in the curve below." if n_ok < n else "."))
    rules.append("Pick #1 is the eligible frame with the highest " + score
                 + (f"; each further pick is the best eligible frame at least {gap:g} s from the picks before it "
                    f"(up to {top_k})." if top_k > 1 else "."))
    finite = q[np.isfinite(q)]
    if finite.size:
        rules.append(f"In this scan the {score}s run from {finite.min():.3f} to {finite.max():.3f} "
                     f"(median {np.median(finite):.3f}).")
    lines = []
    for p in result.picks:
        v = float(p.quality_smoothed)
        better_than = float(np.mean(finite < v)) if finite.size else float("nan")
        text = f"**#{p.rank}: frame {p.frame} at {p.time:.2f} s**, {score} {v:.3f}"
        if p.rank == 1:
            text += f": the highest of the {n_ok} eligible frames"
            higher = int(np.sum(np.isfinite(q) & ~ok & (q > v)))
            if higher:
                text += (f" ({higher} frame{'s' if higher > 1 else ''} that failed the plane check scored higher "
                         "and could not be picked)")
        else:
            text += f", better than {_pct(better_than)} of this scan's frames"
            if finite.size and v < float(np.median(finite)):
                text += (": below the scan's median, a weak frame, picked only because "
                         f"{top_k} picks at least {gap:g} s apart were asked for")
        if p.plane_probability is not None and result.plane:
            text += f"; {result.plane} probability {float(p.plane_probability):.2f}"
        lines.append(f"- {text}.")
    if not result.picks:
        lines.append("- No frame was picked: "
                     + (f"no frame reached the {result.plane} probability {result.plane_threshold:g}."
                        if result.plane and n_ok == 0 else "no frame had a finite score."))
    return " ".join(rules) + "\n\n" + "\n".join(lines)


def _report(result: SelectionResult, plot_png: bytes | None, region_png: bytes | None):
    from .html import SCORE_SCALE, Report

    rep = Report(f"Best frames of {result.name}")
    det = result.region
    info = {
        "scan": result.scan,
        "type": result.kind,
        "source frame rate": result.source_fps if result.source_fps else "unknown",
        "frames in the source": result.source_frames if result.source_frames else "unknown",
        "frames scored": result.n_scored,
        "sampling": f"every {result.settings.get('every', 1)} frame(s)"
        + (f", at most {result.settings['fps']:g}/s" if result.settings.get("fps") else ""),
        "ultrasound region": "n/a" if det is None else f"{det.box.height} x {det.box.width} pixels from top "
        f"{det.box.top}, left {det.box.left} ({_REGION_METHODS.get(det.method, det.method)})",
        "model": f"{result.runtime} runtime, frames scored at {result.image_size[0]} x {result.image_size[1]} pixels",
        "plane check": (f"{result.plane}, probability >= {result.plane_threshold:g} "
                        f"({int(result.eligible.sum())} of {result.n_scored} frames eligible)")
        if result.plane else "none (every frame eligible)",
        "smoothing": f"+-{result.settings['smooth']:g} s (Gaussian)" if result.settings.get("smooth") else "none",
        "picks": f"top {result.settings.get('top_k')} at least {result.settings.get('min_gap'):g} s apart",
        "time": f"{result.seconds:.1f} s ({result.frames_per_second:.1f} frames/s)",
    }
    rep.add_heading("Summary").add_key_values(info)
    rep.add_note(SCORE_SCALE)
    if result.error is not None:
        rep.add_text(f"**Read error:** {result.error}. The {result.n_scored} frames decoded before it were "
                     "scored; the picks come from them.")
    rep.add_heading("Selected frames")
    if result.picks:
        rep.add_images([p.image for p in result.picks],
                       [f"#{p.rank}: frame {p.frame}, {p.time:.2f} s, score {p.quality_smoothed:.3f}"
                        for p in result.picks], size=288)
        rep.add_table([{"rank": p.rank, "frame": p.frame, "time (s)": p.time, "quality": p.quality,
                        "smoothed": p.quality_smoothed,
                        **({"plane probability": p.plane_probability} if result.plane else {})}
                       for p in result.picks])
    else:
        rep.add_text("No frame was eligible" + (f" (no frame reached {result.plane} probability "
                                                f"{result.plane_threshold:g})." if result.plane else "."))
    short = result.shortfall()
    if result.picks and short:
        rep.add_text(f"Fewer picks than asked for: {short}.")
    census = result.plane_census()
    if census:
        rep.add_text(f"Plane check: {census}.")
    if result.n_scored:
        rep.add_heading("Why these frames")
        rep.add_text(why_picked(result))
    if plot_png is not None:
        marks = ("; star: best pick" + (", triangles: other picks" if len(result.picks) > 1 else "")
                 if result.picks else "")
        grey = "; grey bands: frames that failed the plane check" if result.plane else ""
        rep.add_heading("Quality over time").add_figure(
            plot_png, f"Quality score of each scored frame over time (higher = better){marks}{grey}.")
    if region_png is not None:
        rep.add_heading("Ultrasound region").add_figure(
            region_png, "The first frame of the scan. Red: the box every frame is cut to before scoring (the "
            "image area, without the scanner's text and menus); green, where it differs: the image area found. "
            "Scores are of this box, so a frame saved as an image and given to `crl-uiqa score` (which scores the "
            "whole image) can score differently; `--region none` scores whole frames as `score` does.")
    return rep


def write_summary(results: Sequence[SelectionResult], out_dir: str | os.PathLike,
                  *, errors: Sequence[tuple[str, str]] = (), report: bool = True,
                  folders: Sequence[str | os.PathLike] | None = None) -> dict[str, Path]:
    """Write ``summary.csv`` (:data:`SUMMARY_COLUMNS`) and a ``report.html`` for several scans.

    ``errors`` lists ``(scan, message)`` of scans that could not be opened at all; ``folders`` the
    folder each result was written to (:func:`write_selection`), which the page links to.
    """
    from ..files import write_csv
    from ..video.select import SUMMARY_COLUMNS
    from .html import SCORE_SCALE, Report

    out = Path(out_dir)
    _check_free(out, SUMMARY_FILES if report else SUMMARY_FILES[:1])
    rows = [r.summary_row() for r in results]
    rows += [{"scan": s, "frames_scored": 0, "eligible": 0, "best_frame": "", "time": "", "score": "", "error": m}
             for s, m in errors]
    written = {"summary_csv": write_csv(out / "summary.csv", rows, SUMMARY_COLUMNS)}
    if report:
        rep = Report("Best frames of several scans")
        rep.add_heading("Summary")
        rep.add_note(SCORE_SCALE)
        shown = []
        for r in results:
            row = r.summary_row()
            note = row["error"]
            if r.best is None and not note:  # "0 of the 3 frames asked for: <why>" -> "no frame picked: <why>"
                note = "no frame picked: " + (r.shortfall() or "").split(": ", 1)[-1]
            shown.append({"scan": row["scan"], "frames scored": row["frames_scored"],
                          "eligible frames": row["eligible"], "best frame": row["best_frame"],
                          "at (s)": row["time"], "score": row["score"], "note": note})
        shown += [{"scan": s, "frames scored": 0, "eligible frames": 0, "note": f"could not be opened: {m}"}
                  for s, m in errors]
        rep.add_table(shown, ["scan", "frames scored", "eligible frames", "best frame", "at (s)", "score", "note"],
                      caption="One row per scan: the best frame, the time it shows in the scan and its score "
                      "(also in summary.csv)")
        best = [r for r in results if r.best is not None]
        if best:
            rep.add_heading("Best frame of each scan")
            rep.add_images([r.best.image for r in best],
                           [f"{r.name}: frame {r.best.frame}, {r.best.time:.2f} s, score {r.best.quality_smoothed:.3f}"
                            for r in best], size=256)
        if folders is not None and len(folders) == len(results):
            rep.add_heading("Report of each scan")
            rep.add_text("Each scan's folder holds its own report (why its frames were picked, its quality over "
                         "time), its frames.csv and the picked frames as PNG files:")
            rep.add_links([(r.scan, f"{Path(f).name}/report.html") for r, f in zip(results, folders)])
        else:
            rep.add_text("Each scan's folder holds its own report, frames.csv and picks.")
        written["report"] = rep.write(out / "report.html")
    return written


def live_figure(result: LiveResult):
    """Quality of the scored frames over stream time, the best frame marked."""
    from .figures import quality_curve

    if result.scored == 0:
        raise InputError("no frame was scored, nothing to plot")
    best = int(np.flatnonzero(result.frames == result.best_frame)[0]) if result.best_frame is not None else None
    return quality_curve(
        result.scores, times=result.times, best=best,
        title=f"{os.path.basename(result.source)}: live quality ({result.scored} scored, {result.dropped} dropped)",
        thumbnails=result.best_image if result.best_image is not None else None,
    )
