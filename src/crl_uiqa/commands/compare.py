"""``crl-uiqa compare``: the paper's Table 2 on your pairs (every method, same pairs, one table).

A thin layer over :func:`crl_uiqa.compare.compare_methods`.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ._common import add_backbone, add_crop, add_runtime_eval, add_training, crop_tuple, option_value, training_configs


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare quality methods (CRL-UIQA, distance, BRISQUE, NIQE, MSSIM, SER-FIQ, SDD-FIQA(*), weighted) "
        "on better/worse pairs",
        description="Score the test images with each method, evaluate the pairwise accuracy T/(T+F) with a "
        "bootstrap 95 % interval overall and per pair type, and print a Table-2-style table with the wall time "
        "of each method. Writes OUT/compare.csv, compare.md, compare.json and OUT/scores_<method>.csv; a rerun "
        "with unchanged inputs reuses those scores. Methods that cannot run (no model, no references, a missing "
        "package or weight file) are listed as skipped with the reason. --detections and --structure-weights are read "
        "before any scoring: a malformed one stops the run.",
    )
    p.add_argument("--pairs", required=True, help="CSV with columns better,worse[,type]")
    p.add_argument("--images", required=True, nargs="+", metavar="SRC",
                   help="the test images (folder(s), glob(s), manifest CSV(s) or path lists (.txt)); every pair image must be among "
                   "them. A manifest's label column gives SDD-FIQA its classes (plane types or subject/video ids)")
    p.add_argument("--references", nargs="+", default=None, metavar="SRC",
                   help="high-quality reference planes (for distance, mssim, niqe-ref and the weighted score's "
                   "target plane)")
    p.add_argument("--model", default=None, metavar="RUN_DIR", help="trained CRL-UIQA run directory (method crl-uiqa)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default: all). Known: crl-uiqa, distance, every `crl-uiqa baseline "
                   "--list` name, sddfiqa* (needs --train-images)")
    p.add_argument("--train-images", nargs="+", default=None, metavar="SRC",
                   help="training images for SDD-FIQA* (our model trained on SDD-FIQA pseudo-labels)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (tables and score caches)")
    p.add_argument("--root", default=None,
                   help="folder the pair paths are relative to (default: the pairs CSV's folder, then --images)")
    p.add_argument("--k", type=int, default=5, help="nearest references averaged by the distance method (default 5)")
    add_backbone(p)
    g = p.add_argument_group("method options")
    g.add_argument("--plane", default=None,
                   help="target plane of the weighted score (e.g. 4CH, abdominal; default: the references' most "
                   "frequent predicted plane)")
    g.add_argument("--detections", default=None, metavar="CSV",
                   help="weighted score from a structure detector: CSV path,structure,confidence (needs "
                   "--structure-weights)")
    g.add_argument("--structure-weights", default=None, metavar="CSV", help="CSV structure,weight for --detections")
    g.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="extra method option, VALUE parsed as JSON when possible, repeatable (e.g. "
                   "--option serfiq.passes=20 --option sddfiqa.signed=true --option mssim.reduction=max)")
    g.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the 95%% intervals (default 2000, at most 1000000; 0: no interval)")
    g.add_argument("--no-cache", action="store_true", help="recompute every method even when cached scores match")
    add_crop(p)
    add_crop(p, "--reference-crop", "references (default: --crop)")
    add_training(p)
    add_runtime_eval(p)
    p.set_defaults(func=run)


def parse_method_options(items: list[str]) -> dict[str, dict]:
    """``["serfiq.passes=20", ...]`` -> ``{"serfiq": {"passes": 20}}`` (VALUE as JSON when it parses)."""
    out: dict[str, dict] = {}
    for item in items:
        lhs, sep, raw = item.partition("=")
        method, dot, key = lhs.strip().rpartition(".")
        key = key.strip().replace("-", "_")
        if not sep or not dot or not method or not key:
            raise ConfigError(f"--option expects METHOD.KEY=VALUE, got {item!r}")
        out.setdefault(method.strip().lower(), {})[key] = option_value(raw)
    return out


def run(args) -> int:
    from ..compare import compare_methods, format_table

    options = parse_method_options(args.option)
    weighted = options.setdefault("weighted", {})
    if args.plane is not None:
        weighted["plane"] = args.plane
    if args.detections is not None:
        weighted["detections"] = args.detections
    if args.structure_weights is not None:
        weighted["structure_weights"] = args.structure_weights
    if (args.detections is None) != (args.structure_weights is None):
        raise ConfigError("--detections and --structure-weights go together")
    if not weighted:
        del options["weighted"]
    tc, mc = training_configs(args)
    rows = compare_methods(
        args.pairs, args.methods, images=args.images, references=args.references, model=args.model,
        out_dir=args.out, root=args.root, train_images=args.train_images, options=options, weights=args.weights,
        backbone=args.backbone, layer=args.layer, k=args.k, device=args.device, crop=crop_tuple(args.crop),
        reference_crop=crop_tuple(args.reference_crop), train_config=tc, model_config=mc, n_boot=args.n_boot,
        use_cache=not args.no_cache, num_workers=args.workers, progress=not args.quiet,
    )
    print(format_table(rows))
    print(f"\nwritten to {Path(args.out) / 'compare.csv'}, compare.md, compare.json")
    if not any(r["status"] == "ok" for r in rows):  # as score's "none of the images could be read": nothing measured
        from ..errors import InputError

        raise InputError("no method could be evaluated (" + "; ".join(f"{r['method']}: {r['status']}, {r['note']}"
                                                                      for r in rows) + ")")
    return 0
