"""``crl-uiqa simulate``: write a simulated fetal ultrasound dataset with ground-truth quality."""
from __future__ import annotations

PLANE_CHOICES = ("abdomen", "4ch", "head", "all")


def register(subparsers) -> None:
    """Add the ``simulate`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "simulate",
        help="write simulated fetal ultrasound sweeps (train / references / test, manifest, pairs)",
        description=(
            "Simulate freehand sweeps through fetal standard planes (B-mode with speckle, focusing, "
            "attenuation, noise, shadows and probe motion) and write 8-bit PNGs laid out for CRL-UIQA: "
            "OUT/train/<sweep>/<frame>.png (unlabeled pool), OUT/references/<sweep>.png (best frame "
            "of each reference sweep), OUT/test/<sweep>/<frame>.png, OUT/manifest.csv (ground-truth "
            "quality and every generating parameter) and OUT/pairs.csv (better/worse test pairs). "
            "Deterministic for a seed."),
    )
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created; a previous simulation there is replaced; a file of yours named like its "
                   "outputs is refused)")
    p.add_argument("--plane", choices=PLANE_CHOICES, default="abdomen",
                   help="standard plane to simulate, or all three (default abdomen)")
    p.add_argument("--sweeps", type=int, default=12, metavar="N",
                   help="training sweeps per plane (default 12)")
    p.add_argument("--reference-sweeps", type=int, default=6, metavar="N",
                   help="reference sweeps per plane; the best frame of each becomes a reference "
                        "standard plane (default 6)")
    p.add_argument("--test-sweeps", type=int, default=4, metavar="N",
                   help="held-out test sweeps per plane (default 4)")
    p.add_argument("--frames", type=int, default=40, metavar="F",
                   help="frames per sweep (default 40, at most 2000; and at most 2**30 pixels a sweep)")
    p.add_argument("--size", type=int, nargs=2, default=(256, 320), metavar=("H", "W"),
                   help="frame size in pixels (default 256 320)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--pairs", type=int, default=400, metavar="N",
                   help="maximum number of test pairs per plane (default 400)")
    p.add_argument("--pair-margin", type=float, default=0.15, metavar="M",
                   help="minimum true-quality difference of a test pair (default 0.15)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    """Handler of ``crl-uiqa simulate``: write the dataset and print a summary."""
    from collections import Counter

    from ..data.simulate import PLANES, simulate_dataset
    from ..files import read_csv

    planes = PLANES if args.plane == "all" else (args.plane,)
    # every setting is checked by simulate_dataset, before anything in --out changes
    ds = simulate_dataset(
        args.out, planes=planes, n_train_sweeps=args.sweeps,
        n_reference_sweeps=args.reference_sweeps, n_test_sweeps=args.test_sweeps,
        n_frames=args.frames, size=tuple(args.size), seed=args.seed, progress=not args.quiet,
        n_pairs=args.pairs, pair_margin=args.pair_margin)

    rows = read_csv(ds.manifest_csv)
    pairs = read_csv(ds.pairs_csv)
    print(f"simulated {', '.join(planes)} sweeps ({args.frames} frames of "
          f"{args.size[0]}x{args.size[1]}, seed {args.seed}) in {ds.root}")
    for split, folder in (("train", ds.train_dir), ("reference", ds.references_dir),
                          ("test", ds.test_dir)):
        q = sorted(float(r["true_quality"]) for r in rows if r["split"] == split)
        sweeps = len({r["sweep"] for r in rows if r["split"] == split})
        if q:
            stats = f"true_quality median {q[len(q) // 2]:.2f}, range {q[0]:.2f}-{q[-1]:.2f}"
        else:
            stats = "none"
        print(f"  {split:9s} {len(q):5d} images from {sweeps:3d} sweeps  {stats}  -> {folder}")
    types = Counter(p["type"] for p in pairs)
    detail = ", ".join(f"{n} {t}" for t, n in sorted(types.items())) or "none"
    print(f"  pairs     {len(pairs):5d} ({detail})  -> {ds.pairs_csv}")
    print(f"  manifest  {len(rows):5d} rows  -> {ds.manifest_csv}")
    return 0
