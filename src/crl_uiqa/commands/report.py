"""``crl-uiqa report``: an offline HTML quality report from a CSV of scores."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the ``report`` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="write a self-contained HTML quality report from a CSV of scores",
        description=(
            "Write one HTML file (pictures embedded, opens offline) about per-image quality scores: "
            "a summary, the best and worst images, a quality curve per sweep with its best frame, "
            "predicted score vs true quality when a true_quality column is present, and pairwise "
            "accuracy when --pairs is given."
        ),
    )
    parser.add_argument(
        "--scores", required=True, metavar="CSV",
        help="CSV with columns path,score (higher = better) and optionally frame, time, sweep, true_quality",
    )
    parser.add_argument(
        "--pairs", metavar="CSV",
        help="CSV of ranked pairs with columns better,worse[,type] (paths as in --scores); adds pairwise accuracy",
    )
    parser.add_argument(
        "--root", metavar="DIR",
        help="folder that relative image paths are resolved against (default: the current folder when the "
             "images are there, as `score` writes them, else the folder of the CSV)",
    )
    parser.add_argument(
        "--group-by", default="auto", metavar="COLUMN|auto",
        help="column that groups frames into sweeps (one quality curve each); 'auto' (default) uses the "
             "sweep column if present, else the folder of each image; 'folder' and 'none' (one group) "
             "are also accepted",
    )
    parser.add_argument(
        "--top", type=int, default=8, metavar="N",
        help="number of best and of worst images shown (default: 8)",
    )
    parser.add_argument(
        "--curves", action="store_true",
        help="draw a quality curve along each group even when the rows are unrelated stills (by default curves "
             "are drawn only for frames of scans: a sweep, frame or time column, or an explicit --group-by)",
    )
    parser.add_argument("--title", help="report title (default: 'Quality report: <scores file name>')")
    parser.add_argument(
        "--out", required=True, metavar="HTML", help="the HTML report to write, e.g. report.html",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the report described by ``args``; print where it was written."""
    from ..reporting.scores import build_score_report

    path = build_score_report(
        args.scores,
        args.out,
        pairs_csv=args.pairs,
        root=args.root,
        group_by=args.group_by,
        top=args.top,
        title=args.title,
        curves=True if args.curves else None,
    )
    print(f"report written to {path}")
    return 0
