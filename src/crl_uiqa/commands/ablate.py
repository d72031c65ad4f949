"""``crl-uiqa ablate``: the paper's Table 1 on your data."""
from __future__ import annotations

from ._common import add_backbone, add_crop, add_runtime_eval, add_training, crop_tuple, training_configs


def register(sub) -> None:
    p = sub.add_parser("ablate", help="run the five Table-1 configurations and print the ablation table",
                       description="Pseudo-label regression, + smoothing, + L_c, + L_r, + both; each trained with "
                       "the same settings and evaluated on the same pairs. Writes OUT/ablation.csv/.json and one run "
                       "directory per configuration.")
    p.add_argument("--images", required=True, nargs="+", help="training images")
    p.add_argument("--references", required=True, nargs="+", help="reference standard planes")
    p.add_argument("--pairs", required=True, help="test pairs CSV better,worse[,type]")
    p.add_argument("--root", default=None, help="folder the pair paths are relative to (default: the CSV's folder)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--k", type=int, default=5, help="nearest references averaged (default 5)")
    add_backbone(p)  # P(.) of the pseudo-labels, also the trunk of the trained models
    add_crop(p)
    add_training(p)
    add_runtime_eval(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..ablation import format_table, run_ablation

    tc, mc = training_configs(args)
    table = run_ablation(args.images, args.references, args.pairs, args.out, k=args.k, layer=args.layer,
                         backbone=args.backbone, weights=args.weights, train_config=tc, model_config=mc,
                         device=args.device, crop=crop_tuple(args.crop), num_workers=args.workers,
                         progress=not args.quiet, root=args.root)
    print(format_table(table))
    return 0
