"""``crl-uiqa evaluate``: pairwise accuracy of scores on known better/worse pairs."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="pairwise accuracy T/(T+F) of a scores CSV on better/worse pairs",
        description="Accuracy on pairs where one image is known to be better (ties count 0.5), with a "
        "bootstrap 95% interval, per pair type when pairs.csv has a type column; SRCC/PLCC/KRCC with --mos.",
    )
    p.add_argument("--scores", required=True, help="CSV with columns path,score (higher = better)")
    p.add_argument("--pairs", required=True, help="CSV with columns better,worse[,type]")
    p.add_argument("--root", default=None, help="folder the pair paths are relative to (default: the pairs CSV's folder)")
    p.add_argument("--scores-root", metavar="DIR", default=None,
                   help="folder the scores CSV's relative paths are relative to: the folder `score` ran in (default: "
                   "the current folder when its images are there, else the scores CSV's folder)")
    p.add_argument("--mos", default=None, help="optional CSV path,mos for SRCC/PLCC/KRCC")
    p.add_argument("--skip-missing", action="store_true", help="ignore pairs (and --mos images) whose images have no score (counted)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..evaluation import evaluate_files, format_result

    res = evaluate_files(args.scores, args.pairs, root=args.root, mos_csv=args.mos,
                         missing="skip" if args.skip_missing else "error", scores_root=args.scores_root)
    print(json.dumps(res, indent=2) if args.json else format_result(res))
    return 0
