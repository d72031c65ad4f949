"""``crl-uiqa classify``: SonoNet standard-plane predictions."""
from __future__ import annotations

from ._common import add_backbone, add_crop, add_runtime, crop_tuple, report_failures


def register(sub) -> None:
    p = sub.add_parser("classify", help="predict the fetal standard plane of each image (SonoNet)",
                       description="Print (and optionally write) the predicted plane and its probability per image.")
    p.add_argument("--images", required=True, nargs="+", help="folder(s), glob(s), manifest CSV(s) or path lists (.txt)")
    p.add_argument("--out", default=None, help="optional CSV: path,plane,probability and one column per class")
    add_crop(p)
    add_backbone(p, layer=False)
    add_runtime(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..classify import classify_images

    res = classify_images(args.images, backbone=args.backbone, weights=args.weights, batch_size=args.batch_size,
                          device=args.device, crop=crop_tuple(args.crop), strict=args.strict,
                          num_workers=args.workers, progress=not args.quiet)
    for row in res.rows():
        print(f"{row['plane']:<14} {row['probability']:.3f}  {row['path']}")
    if args.out:
        res.to_csv(args.out)
        print(f"wrote {args.out}")
    report_failures(res.failures, args.out)
    return 0
