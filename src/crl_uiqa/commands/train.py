"""``crl-uiqa train``: co-learning on a pseudo-label CSV."""
from __future__ import annotations

from ._common import (
    add_crop,
    add_runtime_eval,
    add_training,
    crop_tuple,
    report_training,
    training_configs,
    val_pairs_arg,
)


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train the quality model on pseudo-labels (consistency + relativity co-learning)",
        description="Train a CRL-UIQA quality regressor on a labels CSV (path,pseudo_label as written by "
        "`crl-uiqa pseudo-label`). OUT receives model.safetensors/.json, history.csv, training_curves.png "
        "and a per-epoch checkpoint last.* for --resume.",
    )
    p.add_argument("--labels", required=True, help="CSV with columns path,pseudo_label (relative paths: from the current folder when the "
                   "images are there, as pseudo-label writes them, else from the CSV's folder)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--references", nargs="+", default=None,
                   help="the reference planes the labels were computed against: the default anchored head needs "
                   "them and learns from their distance score, so at the backbone's own size labels that do not "
                   "follow that score (Spearman < 0.9) are refused (at another --image-size the score is refitted "
                   "there and a disagreement is a warning); without them the paper's head and settings are used "
                   "(--paper), which learn the labels themselves")
    p.add_argument("--k", type=int, default=5, help="nearest references of the anchored head's score (default 5)")
    p.add_argument("--layer", default="block4", help="embedding layer of the anchored head's score (default block4)")
    p.add_argument("--no-smoothing", action="store_true", help="the labels were made without Yeo-Johnson smoothing")
    p.add_argument("--backbone", default="sononet16", help="pretrained trunk (default sononet16)")
    p.add_argument("--weights", default=None, metavar="PATH", help="backbone weights file or folder")
    add_crop(p)
    add_training(p)
    add_runtime_eval(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..checkpoint import check_run_dir
    from ..tables import read_score_table, table_base
    from ..training import train

    check_run_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    rows = read_score_table(args.labels, "pseudo_label")  # paths: the rule of crl_uiqa.tables
    base = table_base(args.labels, [r.path for r in rows])
    paths = [r.path if Path(r.path).is_absolute() or base == Path.cwd() else str(base / r.path) for r in rows]
    labels = [r.value for r in rows]
    if not args.references and args.head is None and not args.paper:
        import logging

        logging.getLogger(__name__).info("no --references, so the paper's head and settings (--paper): the default "
                                         "anchored head starts from the distance to the reference planes")
        args.paper = True
    tc, mc = training_configs(args)
    from ..io import list_images

    res = train(paths, labels, config=tc, model_config=mc, weights=args.weights, run_dir=args.out,
                resume=args.resume, overwrite=args.overwrite, device=args.device, crop=crop_tuple(args.crop),
                num_workers=args.workers, val_pairs=val_pairs_arg(args.val_pairs), progress=not args.quiet,
                references=list_images(args.references) if args.references else None)
    return report_training(res.history, args.out, res.kept_epoch, res.failures, res.warnings, args.strict)
