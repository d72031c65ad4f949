"""``crl-uiqa pseudo-label``: quality pseudo-labels (paper Eq. 1-3) for a set of images."""
from __future__ import annotations

from ._common import add_backbone, add_crop, add_runtime, crop_tuple, report_failures


def register(sub) -> None:
    p = sub.add_parser(
        "pseudo-label",
        help="pseudo-label images by their distance to high-quality reference planes (paper Eq. 1-3)",
        description=(
            "Embed every image and every reference standard plane with a pretrained ultrasound "
            "classifier, take s_i = -mean of the k smallest Euclidean distances to the references, "
            "smooth with Yeo-Johnson and scale to [0, 1]. Writes path,distance,score,smoothed,pseudo_label "
            "(pseudo_label 1 = closest to the references = best)."
        ),
    )
    p.add_argument("--images", required=True, nargs="+", help="folder(s), glob(s), manifest CSV(s) or path lists (.txt) of images")
    p.add_argument("--references", required=True, nargs="+", help="folder, glob or manifest of high-quality standard planes")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--k", type=int, default=5, help="number of nearest references averaged (default 5; must be <= n)")
    p.add_argument("--no-smoothing", action="store_true", help="skip the Yeo-Johnson transform (ablation row 1)")
    add_crop(p)
    add_crop(p, "--reference-crop", "references (default: --crop)")
    add_backbone(p)
    add_runtime(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pseudo_labels import label_images

    res = label_images(
        args.images, args.references, k=args.k, layer=args.layer, backbone=args.backbone, weights=args.weights,
        smoothing=not args.no_smoothing, batch_size=args.batch_size, device=args.device, crop=crop_tuple(args.crop),
        reference_crop=crop_tuple(args.reference_crop), strict=args.strict, num_workers=args.workers,
        progress=not args.quiet,
    )
    res.to_csv(args.out)
    lam = res.labels.lmbda
    print(f"wrote {len(res.paths)} pseudo-labels to {args.out} (k={args.k}, layer={res.layer}"
          + (f", Yeo-Johnson lambda={lam:.4g})" if lam is not None else ", no smoothing)"))
    report_failures(res.failures, args.out)
    return 0
