"""``crl-uiqa demo``: the whole method on built-in simulated data."""
from __future__ import annotations

from ._common import add_device


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole method on built-in simulated sweeps and write an HTML report",
                       description="Simulate fetal abdomen sweeps, pseudo-label them, train the co-learning model "
                       "briefly, score held-out sweeps against ground truth beside the baselines, pick the best "
                       "frame of each sweep and write OUT/report.html. Offline; a few minutes on 2 CPU cores.")
    p.add_argument("--out", default="crl-uiqa-demo", help="output folder (default ./crl-uiqa-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8, a demo budget)")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="SonoNet16.npz (file or folder); default: $CRL_UIQA_WEIGHTS_DIR, else the weights shipped "
                   "in the package, else the cache, else a fallback encoder trained on simulated planes")
    add_device(p)
    p.add_argument("--quick", action="store_true", help="a smaller data set (for tests and slow machines)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..demo import DemoSettings, quick, run_demo

    st = DemoSettings(out_dir=Path(args.out), seed=args.seed, epochs=args.epochs, weights=args.weights,
                      device=args.device, progress=not args.quiet)
    if args.quick:
        quick(st)
    run_demo(st)
    return 0
