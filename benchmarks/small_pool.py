"""Co-learning on a pool of only ~40 images: does the trained model still beat its teacher?

Issue 10, goal 5. A clinic's first try has a few dozen images and a handful of
reference planes. For each of ``--pools`` disjoint slices of the dev
protocol's training pool (``dev.train[i*N:(i+1)*N]``, N = ``--pool-size``) and
disjoint reference sets (``dev.references[i*R:(i+1)*R]``, R =
``--n-references``), fit ``CRLUIQA`` with every default and score the
dev-protocol pairs (3600; benchmarks/dev_protocol.py) with the model and with
its teacher (the distance score the pseudo-labels come from: the anchored
model's own pseudo-label term, so both come from one pass). The dev pairs play
no part in training or in choosing the epoch kept.

Reports per pool and variant: teacher and model accuracy, the epoch kept, the
label-free validation criterion before training and at the epoch kept, the
number of clean-over-corrupted validation pairs it counted, the warnings, and
the seconds of ``fit`` (pseudo-labels + training).

Usage::

    python benchmarks/small_pool.py [--pools 4] [--pool-size 40] [--n-references 10] \
        [--variant ""] [--variant "min_val_pairs=0"] [--only I] [--tag NAME] [--workers 1]

``--variant`` (repeatable) is a comma list of training settings over the
defaults (``crl_uiqa.training.settings()``); ``""`` is the defaults.
Writes ``bench-out/small_pool_<tag>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _run_info as run_info  # noqa: E402
from colearning import _parse_variant as _parse_settings  # noqa: E402
from colearning import _score_both, _summarise  # noqa: E402
from dev_protocol import MAIN_TYPES, build_dev_protocol  # noqa: E402


def _parse_variant(spec: str) -> dict:
    """``KEY=VALUE,...`` of TrainConfig fields (colearning's parser); '' = the defaults."""
    if not spec.strip():
        return {}
    _, t_v, m_v = _parse_settings("variant:" + spec.replace(",", ";"))
    if m_v:
        raise SystemExit(f"--variant: {sorted(m_v)} are ModelConfig settings; only TrainConfig fields vary here")
    return t_v


def fit_and_score(pool: list[str], refs: list[str], spec: str, test_paths: list[str], workers: int):
    """Fit ``CRLUIQA`` (the defaults with ``--variant`` ``spec``) on ``pool`` and ``refs`` and score
    ``test_paths`` with the model and its teacher: (estimator, model scores, teacher scores, the row's common
    fields: variant, sizes, epoch kept, epochs run, fit seconds, warnings)."""
    from crl_uiqa import CRLUIQA

    est = CRLUIQA(device="cpu", num_workers=workers, progress=False, **_parse_variant(spec))
    t0 = time.perf_counter()
    est.fit(pool, refs)
    t_fit = time.perf_counter() - t0
    full, teacher = _score_both(est.model_, test_paths, workers)
    row = {"variant": spec or "defaults", "pool_images": len(pool), "references": len(refs),
           "kept_epoch": est.kept_epoch_, "epochs_run": max(int(r["epoch"]) for r in est.history_),
           "fit_seconds": round(t_fit, 1), "warnings": est.warnings_}
    return est, full, teacher, row


def write_results(name: str, script: str, argv, rows: list[dict], t_all: float, **meta_extra) -> dict:
    """Write ``bench-out/<name>.json`` ({"meta", "rows"}) and return the meta: date, machine, command, load at
    the end, total seconds and ``meta_extra``."""
    meta = {"date": str(date.today()), "machine": run_info.machine(), "command": run_info.command(script, argv),
            "uptime_at_end": run_info.uptime(), "total_seconds": round(time.perf_counter() - t_all, 1), **meta_extra}
    (ROOT / "bench-out").mkdir(exist_ok=True)
    (ROOT / "bench-out" / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return meta


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hc18", default=None)
    ap.add_argument("--pools", type=int, default=4)
    ap.add_argument("--only", type=int, action="append", default=None, metavar="I",
                    help="run pool I only (repeatable; the pools stay the same slices)")
    ap.add_argument("--pool-size", type=int, default=40)
    ap.add_argument("--n-references", type=int, default=10)
    ap.add_argument("--variant", action="append", default=None, metavar="KEY=VALUE,...",
                    help="training settings over the defaults (repeatable; '' = the defaults)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tag", default="default")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    from crl_uiqa.evaluation import align, read_pairs
    from crl_uiqa.training import selection_criterion

    dev = build_dev_protocol(args.hc18, progress=False)
    if args.pools * args.pool_size > len(dev.train) or args.pools * args.n_references > len(dev.references):
        raise SystemExit(f"{args.pools} disjoint pools of {args.pool_size} images and {args.n_references} references "
                         f"do not fit in {len(dev.train)} training images and {len(dev.references)} references")
    if args.only is not None and not all(0 <= i < args.pools for i in args.only):
        raise SystemExit(f"--only: pool indices run from 0 to {args.pools - 1}")
    _, pairs = align({}, read_pairs(dev.pairs_csv), pairs_root=dev.out_dir)
    test_paths = sorted({p for pr in pairs for p in pr[:2]})
    variants = args.variant if args.variant is not None else [""]
    rows = []
    t_all = time.perf_counter()
    for i in args.only if args.only is not None else range(args.pools):
        pool = dev.train[i * args.pool_size:(i + 1) * args.pool_size]
        refs = dev.references[i * args.n_references:(i + 1) * args.n_references]
        for spec in variants:
            est, full, teacher, common = fit_and_score(pool, refs, spec, test_paths, args.workers)
            h = {int(r["epoch"]): r for r in est.history_}
            row = {"pool": i, **common,
                   "criterion_before": selection_criterion(h[0]),
                   "criterion_kept": selection_criterion(h[est.kept_epoch_]),
                   "criterion_by_epoch": [round(selection_criterion(h[e]), 4) for e in sorted(h)],
                   "val_pairs": h[0].get("val_strong_pairs")}
            t = _summarise("teacher", teacher, pairs, 0.0)
            m = _summarise("model", full, pairs, 0.0)
            for name, r in (("teacher", t), ("model", m)):
                row[f"{name}_accuracy"] = r["accuracy"]
                row[f"{name}_ci"] = [r["ci_low"], r["ci_high"]]
                row[f"{name}_non_blur"] = sum(r[f"acc_{k}"] for k in MAIN_TYPES) / len(MAIN_TYPES)
            row["gain"] = row["model_accuracy"] - row["teacher_accuracy"]
            rows.append(row)
            print(f"pool {i} [{row['variant']}]: teacher {row['teacher_accuracy']:.3f}, model "
                  f"{row['model_accuracy']:.3f} ({row['gain']:+.3f}), kept epoch {row['kept_epoch']}/"
                  f"{row['epochs_run']}, criterion {row['criterion_before']:.3f} -> {row['criterion_kept']:.3f}, "
                  f"fit {row['fit_seconds']:.0f} s, {len(est.warnings_)} warning(s)", flush=True)
    meta = write_results(f"small_pool_{args.tag}", "small_pool.py", argv, rows, t_all, n_pairs=len(pairs))
    print("| pool | variant | teacher | model | gain | non-blur teacher / model | kept epoch | val pairs: criterion before -> kept "
          "| fit s | warned |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pool']} | {r['variant']} | {r['teacher_accuracy']:.3f} | {r['model_accuracy']:.3f} | "
              f"{r['gain']:+.3f} | {r['teacher_non_blur']:.3f} / {r['model_non_blur']:.3f} | {r['kept_epoch']} of "
              f"{r['epochs_run']} | {r['val_pairs']}: {r['criterion_before']:.3f} -> {r['criterion_kept']:.3f} | {r['fit_seconds']} | "
              f"{'yes' if r['warnings'] else 'no'} |")
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
