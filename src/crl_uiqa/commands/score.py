"""``crl-uiqa score``: quality scores of images with a trained model."""
from __future__ import annotations

from ._common import AMP_SETTINGS, add_crop, add_runtime, crop_tuple, report_failures


def register(sub) -> None:
    p = sub.add_parser("score", help="score images with a trained model (path,score; higher = better)",
                       description="Writes path,score with the paths exactly as given. Unreadable files are skipped "
                       "and listed in OUT.skipped.csv (or stop the run with --strict).")
    p.add_argument("--model", required=True, help="run directory of `fit`/`train` (or its model.safetensors)")
    p.add_argument("--images", required=True, nargs="+", help="folder(s), glob(s), manifest CSV(s) or path lists (.txt)")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--amp", choices=list(AMP_SETTINGS), default="cuda",
                   help="bfloat16 autocast: cuda (default: on CUDA only), bf16 (on the CPU too: a faster forward where "
                   "the CPU has AVX-512 BF16, scores within about 0.02 of float32; BENCHMARKS.md), off")
    add_crop(p)
    add_runtime(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..embed import resolve_device
    from ..io import list_images
    from ..model import load_model
    from ..scoring import score_paths

    dev = resolve_device(args.device)
    model, _ = load_model(args.model, device=dev)
    res = score_paths(model, list_images(args.images), batch_size=args.batch_size, device=dev,
                      crop=crop_tuple(args.crop), strict=args.strict, num_workers=args.workers,
                      progress=not args.quiet, amp=AMP_SETTINGS[args.amp])
    res.to_csv(args.out)
    print(f"wrote {len(res.paths)} scores to {args.out}")
    if len(res.paths):
        import shlex

        import numpy as np

        hi, lo = int(np.argmax(res.scores)), int(np.argmin(res.scores))
        print(f"highest {res.scores[hi]:.3f} ({res.paths[hi]}), lowest {res.scores[lo]:.3f} ({res.paths[lo]}), "
              f"median {float(np.median(res.scores)):.3f}; higher = better")
        print(f"to see them in a browser: crl-uiqa report --scores {shlex.quote(str(args.out))} --out report.html")
    report_failures(res.failures, args.out)
    return 0
