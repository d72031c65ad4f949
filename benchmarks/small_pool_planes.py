"""Small pools where the pairs differ in plane position: does co-learning on ~40 frames keep what the teacher knows?

Issue 10, goal 5. ``small_pool.py`` measures small pools on the dev protocol,
whose pairs differ by a synthetic corruption of the same HC18 frame. A
clinic's first try is judged on standard against substandard planes, which
differ mostly in where the plane cuts the anatomy. That is what the
simulator's held-out pairs measure: per seed, ``simulate_dataset`` renders
fetal abdomen sweeps (``--train-sweeps`` for the pool, ``--reference-sweeps``
whose best frames are the references, ``--test-sweeps`` held out with their
ground-truth pairs, each typed ``plane`` or ``acquisition`` by which factor of
the true quality differs more). The pool is ``--pool-size`` frames spread
evenly over the training sweeps. For each ``--variant`` of the training
settings, ``CRLUIQA`` with SonoNet-16 (the packaged weights) is fitted on the
pool and the references, and the held-out pairs are scored with the model and
with its teacher (the distance score, the anchored model's own pseudo-label
term). The held-out sweeps play no part in training or in choosing the epoch
kept.

Usage::

    python benchmarks/small_pool_planes.py [--seeds 0,1,2] [--pool-size 40] \
        [--variant "min_train_images=0"] [--tag NAME] [--workers 1]

Writes ``bench-out/small_pool_planes_<tag>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from small_pool import fit_and_score, write_results  # noqa: E402

OUT = ROOT / "bench-out" / "small_pool_planes"


def _accuracy(scores: dict, pairs: list) -> dict:
    from crl_uiqa.evaluation import pairwise_accuracy
    from crl_uiqa.tables import score_keys

    acc = pairwise_accuracy(score_keys(scores), pairs)
    out = {"accuracy": acc["overall"]["accuracy"], "ci": [acc["overall"]["ci_low"], acc["overall"]["ci_high"]],
           "n": acc["overall"]["n"]}
    out.update({f"acc_{t}": v["accuracy"] for t, v in acc["by_type"].items()})
    out.update({f"n_{t}": v["n"] for t, v in acc["by_type"].items()})
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--pool-size", type=int, default=40)
    ap.add_argument("--train-sweeps", type=int, default=4)
    ap.add_argument("--reference-sweeps", type=int, default=10)
    ap.add_argument("--test-sweeps", type=int, default=6)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--variant", action="append", default=None, metavar="KEY=VALUE,...",
                    help="training settings over the defaults (repeatable; '' = the defaults)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tag", default="default")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    n_pool_max = args.train_sweeps * args.frames
    if not 2 <= args.pool_size <= n_pool_max:
        raise SystemExit(f"--pool-size must lie in [2, {n_pool_max}] (train sweeps x frames)")

    import numpy as np

    from crl_uiqa.data.simulate import simulate_dataset
    from crl_uiqa.io import list_images
    from crl_uiqa.tables import pair_keys, read_pairs

    variants = args.variant if args.variant is not None else ["min_train_images=0"]
    rows = []
    t_all = time.perf_counter()
    for seed in seeds:
        ds = simulate_dataset(OUT / f"data_s{seed}", planes=("abdomen",), n_train_sweeps=args.train_sweeps,
                              n_reference_sweeps=args.reference_sweeps, n_test_sweeps=args.test_sweeps,
                              n_frames=args.frames, seed=1000 + seed, progress=False)
        train = list_images(ds.train_dir)
        pick = np.linspace(0, len(train) - 1, args.pool_size).round().astype(int)
        pool = [train[i] for i in pick]
        refs = list_images(ds.references_dir)
        pairs = pair_keys(read_pairs(ds.pairs_csv), ds.root)
        test_paths = list_images(ds.test_dir)
        for spec in variants:
            est, full, teacher, common = fit_and_score(pool, refs, spec, test_paths, args.workers)
            row = {"seed": seed, **common, "teacher": _accuracy(teacher, pairs), "model": _accuracy(full, pairs)}
            row["gain"] = row["model"]["accuracy"] - row["teacher"]["accuracy"]
            rows.append(row)
            t, m = row["teacher"], row["model"]
            print(f"seed {seed} [{row['variant']}]: teacher {t['accuracy']:.3f} (plane {t.get('acc_plane', float('nan')):.3f}, "
                  f"acquisition {t.get('acc_acquisition', float('nan')):.3f}), model {m['accuracy']:.3f} (plane "
                  f"{m.get('acc_plane', float('nan')):.3f}, acquisition {m.get('acc_acquisition', float('nan')):.3f}), "
                  f"{row['gain']:+.3f}, kept epoch {row['kept_epoch']}/{row['epochs_run']}, {m['n']} pairs "
                  f"({m.get('n_plane', 0)} plane), fit {row['fit_seconds']:.0f} s, {len(est.warnings_)} warning(s)", flush=True)
    meta = write_results(f"small_pool_planes_{args.tag}", "small_pool_planes.py", argv, rows, t_all)
    print("| seed | variant | pairs (plane) | teacher: all / plane / acquisition | model: all / plane / acquisition "
          "| gain | kept epoch | fit s | warned |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t, m = r["teacher"], r["model"]
        print(f"| {r['seed']} | {r['variant']} | {m['n']} ({m.get('n_plane', 0)}) | {t['accuracy']:.3f} / "
              f"{t.get('acc_plane', float('nan')):.3f} / {t.get('acc_acquisition', float('nan')):.3f} | "
              f"{m['accuracy']:.3f} / {m.get('acc_plane', float('nan')):.3f} / {m.get('acc_acquisition', float('nan')):.3f} "
              f"| {r['gain']:+.3f} | {r['kept_epoch']} of {r['epochs_run']} | {r['fit_seconds']} | "
              f"{'yes' if r['warnings'] else 'no'} |")
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
