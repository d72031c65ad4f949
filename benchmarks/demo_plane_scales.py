"""The demo's plane match at several scales: does posing the templates larger and smaller move the picks closer?

Issue 10, goal 4. Since 2026-12-03 ``crl-uiqa demo`` picks each held-out
sweep's best frame on the model's score plus 0.5 x the plane match
(:mod:`crl_uiqa.plane_match`: normalised cross-correlation with templates cut
from the reference planes about where the encoder's class map puts the plane,
mirrored and rotated). One of its misses is a fetus 12 % larger than the
references (BENCHMARKS.md "Demo: acquisition normalisation, posed references
and template matching"). This script poses the templates at several sizes too
(``PlaneTemplates(scales=...)``; a frame's match is its best over every
template) and re-picks with the demo's rule, nothing else changed.

It needs the per-frame model scores that ``demo_picks.py run`` cached
(``bench-out/demo_picks/<config>_s<seed>.csv``). Per seed and configuration it
simulates the demo's data again (the same seed gives the same frames), takes
the encoder (the packaged SonoNet-16, or for ``fallback`` trains the demo's
fallback classifier again, as the demo does), computes the plane match of
every held-out frame for each scale set through the demo's own
``_plane_match``, checks that the single-scale match reproduces the cached
``plane_match`` column, and scores the picks on ``model + 0.5 x match``
(smoothed over +-3 frames, no plane check: the demo's rule) and on the match
alone.

The rule, fixed before any seed was scored with more than one scale:

* scale sets: ``1`` (the demo now), ``0.9,1,1.1``, ``0.85,0.925,1,1.075,1.15``
  and ``0.8,0.9,1,1.1,1.2``;
* choose, on SonoNet-16 seeds 0-4 and fallback seeds 0-1 (28 sweeps, the seeds
  the demo's weight was chosen on), the set whose picks land most often within
  2 frames (ties: lower mean frame error);
* adopt it as the demo's default only if, on SonoNet-16 seeds 10-19 and
  fallback seeds 10-14, it lands no fewer picks within 2 frames *and* has a
  lower mean frame error than the single scale, for each encoder. Those seeds
  decided the weight's adoption but never a scale.

Usage::

    python benchmarks/demo_plane_scales.py --seeds 0,1,2,3,4 --configs sononet [--threads 2]
    python benchmarks/demo_plane_scales.py --seeds 0,1 --configs fallback

Per-frame matches are cached in ``bench-out/demo_plane_scales/<config>_s<seed>.csv``.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _run_info as run_info  # noqa: E402

PICKS = ROOT / "bench-out" / "demo_picks"
OUT = ROOT / "bench-out" / "demo_plane_scales"
SCALE_SETS = {"1": (1.0,), "0.9-1.1": (0.9, 1.0, 1.1), "0.85-1.15": (0.85, 0.925, 1.0, 1.075, 1.15),
              "0.8-1.2": (0.8, 0.9, 1.0, 1.1, 1.2)}
WEIGHT = 0.5  # the demo's --plane-match
SMOOTH = 3.0  # the demo's --smooth


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def matches(cfg: str, seed: int) -> dict[tuple[str, int], dict[str, float]]:
    """{(sweep, frame): {scale set: plane match}} for the held-out frames of the demo of ``seed``."""
    from crl_uiqa.backbones import get_backbone
    from crl_uiqa.data.simulate import simulate_dataset
    from crl_uiqa.demo import DEMO_PLANE, SONONET_SIZE, DemoSettings
    from crl_uiqa.demo.pipeline import _fallback_encoder, _find_sononet, _plane_match
    from crl_uiqa.files import read_csv
    from crl_uiqa.io import list_images

    cache = OUT / f"{cfg}_s{seed}.csv"
    if cache.exists():
        rows = list(csv.DictReader(cache.open()))
        return {(r["sweep"], int(r["frame"])): {k: float(r[k]) for k in SCALE_SETS} for r in rows}
    work = OUT / "work" / f"{cfg}_s{seed}"
    shutil.rmtree(work, ignore_errors=True)
    st = DemoSettings(out_dir=work, seed=seed, encoder=cfg, progress=False)
    try:
        ds = simulate_dataset(work / "data", planes=(DEMO_PLANE,), n_train_sweeps=st.n_train_sweeps,
                              n_reference_sweeps=st.n_reference_sweeps, n_test_sweeps=st.n_test_sweeps,
                              n_frames=st.n_frames, seed=st.seed, progress=False)
        weights = _find_sononet(None) if cfg == "sononet" else _fallback_encoder(work, st)
        net = get_backbone("sononet16", weights)
        size = SONONET_SIZE if cfg == "sononet" else st.image_size
        ref_paths, test_paths = list_images(ds.references_dir), list_images(ds.test_dir)
        by_set = {k: _plane_match(net, ref_paths, test_paths, size, scales=v) for k, v in SCALE_SETS.items()}
        truth = {str((Path(ds.root) / r["path"]).resolve()): r for r in read_csv(ds.manifest_csv)}
        out = {}
        for p in test_paths:
            r = truth[str(Path(p).resolve())]
            out[(r["sweep"], int(r["frame"]))] = {k: by_set[k][p] for k in SCALE_SETS}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sweep", "frame", *SCALE_SETS])
        for (sweep, frame), m in sorted(out.items()):
            w.writerow([sweep, frame, *(repr(m[k]) for k in SCALE_SETS)])
    tmp.replace(cache)
    return out


def evaluate(cfg: str, seeds: list[int]) -> dict:
    from scipy.stats import spearmanr

    from crl_uiqa.demo import best_frame, pick_scores

    errs: dict[str, list[int]] = {f"model+{WEIGHT:g}match[{k}]": [] for k in SCALE_SETS}
    errs.update({f"match alone[{k}]": [] for k in SCALE_SETS})
    rho: dict[str, list[float]] = {k: [] for k in SCALE_SETS}
    drift = 0.0
    for seed in seeds:
        cached = PICKS / f"{cfg}_s{seed}.csv"
        if not cached.exists():
            print(f"{cfg} s{seed}: no cached demo_picks run ({cached}); run demo_picks.py run first", flush=True)
            continue
        t = time.perf_counter()
        m = matches(cfg, seed)
        sweeps: dict[str, list[dict]] = {}
        for r in csv.DictReader(cached.open()):
            sweeps.setdefault(r["sweep"], []).append(r)
        line = []
        for sweep, rows in sorted(sweeps.items()):
            rows.sort(key=lambda r: int(r["frame"]))
            frames = np.array([int(r["frame"]) for r in rows])
            tq = np.array([float(r["true_quality"]) for r in rows])
            model = np.array([float(r["CRL-UIQA"]) for r in rows])
            closeness = np.array([float(r["plane_closeness"]) for r in rows])
            drift = max(drift, float(np.max(np.abs(np.array([float(r["plane_match"]) for r in rows])
                                                   - np.array([m[(sweep, f)]["1"] for f in frames])))))
            best = int(frames[int(np.argmax(tq))])
            for k in SCALE_SETS:
                match = np.array([m[(sweep, f)][k] for f in frames])
                for tag, score in ((f"model+{WEIGHT:g}match[{k}]", pick_scores(model, match, WEIGHT)),
                                   (f"match alone[{k}]", match)):
                    pos, _ = best_frame(frames, score, SMOOTH)
                    errs[tag].append(abs(int(frames[pos]) - best))
                rho[k].append(float(spearmanr(match, closeness)[0]))
            line.append(f"{sweep} " + "/".join(str(errs[f'model+{WEIGHT:g}match[{k}]'][-1]) for k in SCALE_SETS))
        print(f"{cfg} s{seed} ({time.perf_counter() - t:.0f} s): errors per scale set {'/'.join(SCALE_SETS)}: "
              + "; ".join(line), flush=True)
    print(f"== {cfg}, seeds {','.join(map(str, seeds))}: the single scale against the cached plane_match: "
          f"max |difference| {drift:.2g}")
    result = {}
    for tag, e in errs.items():
        if not e:
            continue
        a = np.asarray(e)
        result[tag] = {"mean": float(a.mean()), "max": int(a.max()), "within_2": int((a <= 2).sum()), "n": int(a.size),
                       "errors": e}
        print(f"{tag:<28} mean {a.mean():5.2f}  max {a.max():>2}  within 2: {(a <= 2).sum()} of {a.size}")
    for k, r in rho.items():
        if r:
            result[f"spearman[{k}]"] = float(np.nanmean(r))
            print(f"within-sweep Spearman of the match [{k}] with the plane closeness {np.nanmean(r):+.2f}")
    result["max_drift"] = drift
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=_ints, required=True)
    p.add_argument("--configs", default="sononet", help="sononet, fallback or both, comma-separated")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {run_info.machine()}; {run_info.uptime()}", flush=True)
    results = {}
    for cfg in [c.strip() for c in args.configs.split(",") if c.strip()]:
        if cfg not in ("sononet", "fallback"):
            raise SystemExit(f"unknown configuration {cfg!r}; choose sononet or fallback")
        results[cfg] = evaluate(cfg, args.seeds)
    OUT.mkdir(parents=True, exist_ok=True)
    name = OUT / f"evaluate_{args.configs.replace(',', '-')}_{'-'.join(map(str, args.seeds))}.json"
    name.write_text(json.dumps(results, indent=1))
    print(f"# {run_info.uptime()}; {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
