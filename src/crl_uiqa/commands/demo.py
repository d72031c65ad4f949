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
    p.add_argument("--head", choices=["auto", "anchored", "paper"], default="auto",
                   help="anchored (as fit): the model starts at the distance score and learns a correction, trunk "
                   "frozen, 6 epochs at lr 0.5, the epoch kept by the label-free criterion; with SonoNet-16 at its "
                   "224x288, trained on 112x144 windows; paper: the paper's head trained end to end at 112x144, 8 "
                   "epochs at lr 1e-2; auto (default): anchored (it beat its teacher and picked closer frames with "
                   "either encoder; BENCHMARKS.md)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: 6 anchored, 8 paper; at most 10000)")
    p.add_argument("--encoder", choices=["auto", "sononet", "fallback"], default="auto",
                   help="P(.): auto (default) uses SonoNet-16 when its weights are found, else the fallback; sononet "
                   "requires the weights; fallback trains a SonoNet-16 on simulated planes in the demo, as a machine "
                   "without the weights does")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="SonoNet16.npz (file or folder); default: $CRL_UIQA_WEIGHTS_DIR, else the weights shipped "
                   "in the package, else the cache, else a fallback encoder trained on simulated planes")
    p.add_argument("--smooth", type=float, default=3.0, metavar="FRAMES",
                   help="pick each held-out sweep's best frame on its scores smoothed over +-FRAMES frames "
                   "(Gaussian, as select --smooth); 0: the top raw score (default 3; BENCHMARKS.md)")
    p.add_argument("--plane-threshold", type=float, default=0.0, metavar="P",
                   help="pick only among frames whose probability of the abdominal plane (the encoder's classifier) "
                   "is at least P, as select --plane; a sweep with no such frame is picked on all its frames; "
                   "0: every frame (default 0: the plane match below replaced it; BENCHMARKS.md)")
    p.add_argument("--plane-match", type=float, default=0.5, metavar="W",
                   help="pick on the model's score plus W times the plane match (template matching against the "
                   "reference planes about where the encoder's class map puts the plane), each standardised over the "
                   "sweep; 0: the model's score alone (default 0.5, which picked closer than the plane check on "
                   "unseen seeds; --plane-match 0 --plane-threshold 0.5 restores the picks before it; BENCHMARKS.md)")
    p.add_argument("--plane-classifier", type=float, default=0.0, metavar="W",
                   help="add W times the logit of p(abdominal plane) from a plane classifier trained on simulated "
                   "planes (the fallback encoder), standardised over the sweep, to the pick score; with SonoNet-16 "
                   "weights the demo then trains that classifier too (about 100 s on 2 cores). 0: no such term "
                   "(default 0: weight 1 lost the rule fixed in advance with the fallback encoder; BENCHMARKS.md)")
    add_device(p)
    p.add_argument("--quick", action="store_true", help="a smaller data set (for tests and slow machines)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..demo import DemoSettings, quick, run_demo

    st = DemoSettings(out_dir=Path(args.out), seed=args.seed, head=args.head, epochs=args.epochs,
                      encoder=args.encoder, weights=args.weights, device=args.device, smooth=args.smooth,
                      plane_threshold=args.plane_threshold, plane_match=args.plane_match,
                      plane_classifier=args.plane_classifier,
                      progress=not args.quiet)
    if args.quick:
        quick(st)
    run_demo(st)
    return 0
