"""``crl-uiqa fit``: pseudo-label + train in one step."""
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
        "fit", help="pseudo-label images against reference planes, then train the quality model",
        description="The whole method in one command: pseudo-labels (paper Eq. 1-3) then co-learning (Eq. 4-7). "
        "OUT receives labels.csv, the model and its training history.",
    )
    p.add_argument("--images", required=True, nargs="+", help="training images: folder(s), glob(s), manifest CSV(s) or path lists (.txt)")
    p.add_argument("--references", required=True, nargs="+", help="high-quality reference standard planes")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--k", type=int, default=5, help="nearest references averaged for the pseudo-label (default 5)")
    p.add_argument("--layer", default="block4", help="embedding layer of P(.) (default block4, chosen on the dev protocol)")
    p.add_argument("--no-smoothing", action="store_true", help="no Yeo-Johnson smoothing of the pseudo-labels")
    p.add_argument("--backbone", default="sononet16", help="P(.) and pretrained trunk (default sononet16)")
    p.add_argument("--weights", default=None, metavar="PATH", help="backbone weights file or folder")
    add_crop(p)
    add_crop(p, "--reference-crop", "references (default: --crop)")
    add_training(p, calibrate_margins=True)
    add_runtime_eval(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..estimator import CRLUIQA

    tc, mc = training_configs(args)
    est = CRLUIQA(k=args.k, layer=args.layer, smoothing=not args.no_smoothing, backbone=args.backbone,
                  weights=args.weights, device=args.device, num_workers=args.workers, progress=not args.quiet,
                  train_config=tc, model_config=mc, calibrate_margins=args.calibrate_margins)
    est.fit(args.images, args.references, run_dir=args.out, resume=args.resume, overwrite=args.overwrite,
            crop=crop_tuple(args.crop),
            reference_crop=crop_tuple(args.reference_crop), val_pairs=val_pairs_arg(args.val_pairs))
    if est.calibration_ is not None:
        print("calibrated margin weights (mean 1; stored in model.json under train_config.calibration):")
        print(est.calibration_.to_markdown())
    # a resumed run does not know the first run's labelling failures: it keeps the list the first run wrote
    return report_training(est.history_, args.out, est.kept_epoch_, est.failures_, est.warnings_, args.strict,
                           list_failures=bool(est.failures_) or not args.resume)
