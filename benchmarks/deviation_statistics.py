"""How well does the deviation-from-references feature alone rank the leave-one-family-out pairs, per statistic set?

Issue 10, goal 3 (offline: no model, no training). For every image of the
leave-one-family-out pairs (``bench-out/lofo``: clean > mild > severe of 200
held-out HC18 test images per family, written by ``leave_one_family_out.py``)
and for the reference planes of the dev protocol, this computes the six
statistics of :func:`crl_uiqa.reference_stats.image_statistics` at 224x288 and
three candidates more (the fraction of pixels below 0.05, the 5th percentile
and the median of the gray levels), maps each image to ``log(1 + |z|)``
against the references' mean and spread (as :class:`ReferenceDeviation`), and
ranks each pair by the root mean square over a set of statistics (lower =
better). It prints the pairwise accuracy per family for each set.

Usage::

    python benchmarks/deviation_statistics.py
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SETS = {"six (the default)": [0, 1, 2, 3, 4, 5], "six + dark fraction": [0, 1, 2, 3, 4, 5, 6],
        "six + 5th percentile": [0, 1, 2, 3, 4, 5, 7], "six + median": [0, 1, 2, 3, 4, 5, 8]}


def statistics(paths: list[str]) -> np.ndarray:
    """(N, 9): the six statistics of ``image_statistics``, the dark fraction, the 5th percentile, the median."""
    import torch

    from crl_uiqa.io import iter_batches
    from crl_uiqa.reference_stats import SIX_STATISTICS, image_statistics

    out = []
    for b in iter_batches(paths, size=(224, 288), batch_size=64, num_workers=1, progress=False):
        x = b.images.float()
        flat = x.flatten(1)
        extra = torch.stack([(flat < 0.05).float().mean(1), torch.quantile(flat, 0.05, dim=1),
                             torch.quantile(flat, 0.5, dim=1)], 1)
        out.append(torch.cat([image_statistics(x, SIX_STATISTICS), extra], 1))
    return torch.cat(out).numpy()


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default=str(ROOT / "bench-out" / "lofo" / "pairs.csv"))
    ap.add_argument("--references", default=str(ROOT / "bench-out" / "dev" / "references.txt"))
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from crl_uiqa.reference_stats import MIN_SCALE

    root = Path(args.pairs).parent
    if not Path(args.pairs).is_file() or not Path(args.references).is_file():
        raise SystemExit(f"needs {args.pairs} and {args.references}: run leave_one_family_out.py first")
    with open(args.pairs, newline="") as fh:
        pairs = list(csv.DictReader(fh))
    paths = sorted({str(root / p[k]) for p in pairs for k in ("better", "worse")})
    refs = [line.strip() for line in open(args.references) if line.strip()]
    ref_stats, img_stats = statistics(refs), statistics(paths)
    index = {p: i for i, p in enumerate(paths)}
    z = np.log1p(np.abs((img_stats - ref_stats.mean(0)) / np.maximum(ref_stats.std(0), MIN_SCALE)))
    families = sorted({p["type"] for p in pairs})
    print("| statistics | " + " | ".join(families) + " | mean |")
    print("|---" * (len(families) + 2) + "|")
    for name, cols in SETS.items():
        d = np.sqrt((z[:, cols] ** 2).mean(1))
        acc = [np.mean([d[index[str(root / p["better"])]] < d[index[str(root / p["worse"])]]
                        for p in pairs if p["type"] == f]) for f in families]
        print(f"| {name} | " + " | ".join(f"{a:.2f}" for a in acc) + f" | {np.mean(acc):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
