"""Co-learning on the development protocol: the paper's Table 1 on HC18.

Trains each ablation configuration on the HC18 training pool (pseudo-labels
from the 45 references) at a CPU-feasible resolution and evaluates it on the
dev-protocol pairs, next to the untrained distance score. Reports accuracy
overall, on the non-blur degradations (noise, JPEG, contrast, gamma) and on
the blur pairs separately (blur is what the relativity loss trains on).

Usage::

    python benchmarks/colearning.py [--lr 1e-3] [--epochs 35] [--image-size 112 144] \
        [--rows all|regression|full] [--tag NAME]

Writes ``bench-out/colearning_<tag>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dev_protocol import BLUR_TYPES, MAIN_TYPES, build_dev_protocol  # noqa: E402

FULL = {"smoothing": True, "consistency": True, "relativity": True}
ROWS = {
    "all": None,
    "regression": ["pseudo-label", "+ smoothing"],
    "full": ["+ smoothing + L_c + L_r (CRL-UIQA)"],
    "regression+full": ["+ smoothing", "+ smoothing + L_c + L_r (CRL-UIQA)"],
    # the paper's lr against the lr that the feasibility run found to learn, full model, same epochs
    "lr": [("CRL-UIQA lr 1e-3 (paper)", {**FULL, "lr": 1e-3}), ("CRL-UIQA lr 1e-2", {**FULL, "lr": 1e-2})],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hc18", default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=35)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--image-size", nargs=2, type=int, default=[112, 144])
    ap.add_argument("--rows", choices=sorted(ROWS), default="all")
    ap.add_argument("--strong-views", default="paper")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--layer", default="block4")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)

    import torch

    from crl_uiqa.ablation import format_table, run_ablation
    from crl_uiqa.model import ModelConfig
    from crl_uiqa.training import TrainConfig

    dev = build_dev_protocol(args.hc18)
    tag = args.tag or f"lr{args.lr:g}_e{args.epochs}_{args.rows}"
    out = ROOT / "bench-out" / f"colearning_{tag}"
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, strong_views=args.strong_views)
    mc = ModelConfig(image_size=tuple(args.image_size))
    t0 = time.perf_counter()
    table = run_ablation(dev.train, dev.references, dev.pairs_csv, out, k=args.k, layer=args.layer, train_config=tc,
                         model_config=mc, rows=ROWS[args.rows], device="cpu", num_workers=args.workers,
                         progress=False)
    for r in table:
        main_acc = [r[f"acc_{t}"] for t in MAIN_TYPES if f"acc_{t}" in r]
        blur_acc = [r[f"acc_{t}"] for t in BLUR_TYPES if f"acc_{t}" in r]
        r["acc_non_blur_mean"] = sum(main_acc) / len(main_acc)
        r["acc_blur_mean"] = sum(blur_acc) / len(blur_acc)
    meta = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
            "command": "python benchmarks/colearning.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "train_config": tc.to_dict(), "image_size": args.image_size, "k": args.k, "layer": args.layer,
            "n_train": len(dev.train), "n_references": len(dev.references),
            "total_seconds": round(time.perf_counter() - t0, 1)}
    (ROOT / "bench-out").mkdir(exist_ok=True)
    (ROOT / "bench-out" / f"colearning_{tag}.json").write_text(json.dumps({"meta": meta, "table": table}, indent=2))
    md = format_table(table)
    (ROOT / "bench-out" / f"colearning_{tag}.md").write_text(json.dumps(meta, indent=1) + "\n\n" + md + "\n")
    print(md)
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
