"""``crl-uiqa select``: the best frames of ultrasound scans (videos, DICOM cine loops, image sequences)."""
from __future__ import annotations

import argparse

from ._common import add_engine, add_frame_batch, add_scan_region


def register(sub) -> None:
    p = sub.add_parser(
        "select",
        help="pick the best-quality frames (optionally of one standard plane) from videos or DICOM scans",
        description=(
            "Stream every sampled frame of each scan, cut it to the ultrasound region, score its quality and "
            "(with --plane) check that it shows the target standard plane; then pick the top-K eligible frames "
            "at distinct moments. Writes the picks (PNG), frames.csv (frame,time,plane,plane_probability,"
            "quality,quality_smoothed,eligible), picks.csv, quality.png, region.png and report.html; with "
            "several scans, one folder per scan plus summary.csv. A damaged scan keeps the frames decoded "
            "before the fault; the error is reported and the exit code is 1."
        ),
    )
    p.add_argument("--model", required=True,
                   help="run directory of `train`/`fit` (or its model.safetensors), or a file from `export`")
    p.add_argument("--input", required=True, nargs="+", metavar="SCAN",
                   help="video (.mp4, .avi...), DICOM file, folder of frame images or glob pattern; several allowed")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    g = p.add_argument_group("standard plane")
    g.add_argument("--plane", default=None, metavar="NAME",
                   help="require this SonoNet plane (e.g. 4CH, abdominal, brain-tv); frames below "
                   "--plane-threshold are not eligible. Default: no plane check")
    g.add_argument("--plane-threshold", type=float, default=None, metavar="P",
                   help="smallest probability of the target plane (default 0.5); needs --plane")
    g.add_argument("--weights", default=None, metavar="PATH",
                   help="SonoNet-16 weight file or folder (default: $CRL_UIQA_WEIGHTS_DIR, the packaged weights, the cache, a download)")
    g.add_argument("--plane-weights", dest="weights", default=None, help=argparse.SUPPRESS)  # the old spelling
    g = p.add_argument_group("picking")
    g.add_argument("--top", type=int, default=1, metavar="K", help="number of frames to pick per scan (default 1, at most 1000)")
    g.add_argument("--min-gap", type=float, default=1.0, metavar="SECONDS",
                   help="smallest time between two picks: non-maximum suppression in time (default 1.0)")
    g.add_argument("--smooth", type=float, default=0.0, metavar="SECONDS",
                   help="rank by the Gaussian-weighted mean score over +-SECONDS (default 0: raw scores)")
    g = p.add_argument_group("frames")
    g.add_argument("--every", type=int, default=1, metavar="N", help="score every N-th source frame (default 1)")
    g.add_argument("--fps", type=float, default=None, metavar="F",
                   help="then at most F frames per second (default: all)")
    add_scan_region(g, "the first 30 sampled frames")
    g = p.add_argument_group("runtime")
    add_engine(g, "the torch engines and the plane classifier")
    add_frame_batch(g)
    g.add_argument("--no-report", action="store_true", help="skip the HTML report(s)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from ..errors import CRLUIQAError
    from ..reporting.selection import check_selection_outputs, scan_folder, write_selection, write_summary
    from ..runtime import load_runtime
    from ..video.scan import _scan_name
    from ..video.select import SUMMARY_COLUMNS, SelectionSettings, _load_plane_model, select_frames

    if args.plane_threshold is not None and not args.plane:  # a threshold without a plane checked nothing
        from ..errors import ConfigError

        raise ConfigError("--plane-threshold needs --plane NAME (the plane whose probability it bounds); "
                          "without --plane no frame is checked")
    plane_threshold = SelectionSettings.plane_threshold if args.plane_threshold is None else args.plane_threshold
    out = Path(args.out)
    # a file of the user's named like an output: refused before any scan is read, not replaced at the end
    check_selection_outputs(out, [_scan_name(Path(s)) for s in args.input] if len(args.input) > 1 else None,
                            report=not args.no_report)
    runtime = load_runtime(args.model, args.runtime, device=args.device, threads=args.threads)
    plane_model = None
    if args.plane:
        from ..classify import plane_index

        plane_index(args.plane)  # unknown names fail before any work
        plane_model, _ = _load_plane_model(None, args.weights, args.device)
    several = len(args.input) > 1
    used: set[str] = set()
    results, folders, failed, status = [], [], [], 0
    for scan in args.input:
        try:
            res = select_frames(
                runtime, scan, device=args.device, plane=args.plane, plane_threshold=plane_threshold,
                plane_model=plane_model, top_k=args.top, min_gap=args.min_gap, every=args.every, fps=args.fps,
                frame_rate=args.frame_rate, crop=args.crop, region=args.region, smooth=args.smooth,
                batch_size=args.batch_size, progress=not args.quiet,
            )
        except (CRLUIQAError, FileNotFoundError) as exc:  # that scan's fault; any other exception is a bug
            if not several:
                raise
            print(f"crl-uiqa select: error: {exc}", file=sys.stderr)
            failed.append((scan, str(exc)))
            status = 1
            continue
        dest = scan_folder(out, res.name, used) if several else out
        write_selection(res, dest, report=not args.no_report)
        results.append(res)
        folders.append(dest)
        best = res.best
        msg = (f"{scan}: {res.n_scored} frames scored in {res.seconds:.1f} s ({res.frames_per_second:.1f}/s); "
               + (f"best frame {best.frame} at {best.time:.2f} s, score {best.quality_smoothed:.4f}"
                  if best else "no eligible frame") + f" -> {dest}")
        print(msg)
        short, census = res.shortfall(), res.plane_census()
        for note in (short, None if short and census and census in short else census):
            if note:
                print(f"  {note}")
        if res.error is not None:
            print(f"crl-uiqa select: error: {res.error} (the {res.n_scored} frames before it were scored and "
                  "written)", file=sys.stderr)
            status = 1
    written = write_summary(results, out, errors=failed, report=several and not args.no_report, folders=folders)
    _print_table([r.summary_row() for r in results] + [
        {"scan": s, "frames_scored": 0, "best_frame": "", "time": "", "score": "", "error": "could not be opened"}
        for s, _ in failed], SUMMARY_COLUMNS)
    print(f"summary: {out / 'summary.csv'}")
    if not args.no_report:
        if "report" in written:
            print(f"report: {written['report']} (open it in a browser; it links to each scan's report)")
        elif results:
            print(f"report: {folders[0] / 'report.html'} (open it in a browser)")
    return status


#: the terminal table's heading and number format of each summary.csv column (the CSV keeps its names)
_HEADINGS = {"scan": ("scan", None), "frames_scored": ("frames scored", "{:d}"), "eligible": ("eligible frames", "{:d}"),
             "best_frame": ("best frame", "{:d}"), "time": ("time (s)", "{:.2f}"), "score": ("score", "{:.4f}"),
             "error": ("error", None)}


def _print_table(rows: list[dict], columns: list[str]) -> None:
    """The summary of the scans, one row each, with readable headings and units: numbers right-aligned, text
    left-aligned; "eligible" only when a plane check left fewer frames than were scored, "error" only when one
    scan failed."""
    def shown(c):
        if c == "eligible":
            return any(r.get(c, "") not in ("", r.get("frames_scored")) for r in rows)
        return c != "error" or any(r.get("error") for r in rows)

    cols = [c for c in columns if shown(c)]
    heads = [_HEADINGS.get(c, (c.replace("_", " "), None))[0] for c in cols]
    cells = [[_fmt(r.get(c, ""), c) for c in cols] for r in rows]
    numeric = [_HEADINGS.get(c, (c, None))[1] is not None for c in cols]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    print(line(heads))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def _fmt(v, column: str = "") -> str:
    """One cell: numbers in the column's format, a long scan path shortened from the left (its file name stays),
    other long text from the right."""
    fmt = _HEADINGS.get(column, (column, None))[1]
    if fmt is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
        return fmt.format(float(v) if "f" in fmt else int(v))
    text = str(v)
    if len(text) <= 60:
        return text
    return "..." + text[-57:] if column == "scan" else text[:57] + "..."
