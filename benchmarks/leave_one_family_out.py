"""Leave-one-family-out: do strong views beyond blur teach quality, or only "not this corruption"?

The paper's strongly augmented views are Gaussian and motion blur. A model that
is only pushed to rank a frame above its blurred copy may learn "sharper is
better" and nothing about the other ways an ultrasound frame goes bad. This
benchmark measures how the relativity loss generalises to a corruption family
the model never saw during training.

Pairs (built once in ``bench-out/lofo``, reused)
------------------------------------------------
Each of the 200 held-out test images of the development protocol
(``dev_protocol.py``) is read, resized to 224 x 288 (antialiased bilinear,
:func:`crl_uiqa.io.to_tensor`), quantised to 8 bits and written to
``clean/``; for every family F of :data:`crl_uiqa.corruptions.ULTRASOUND_FAMILIES`
it is corrupted with :func:`crl_uiqa.corruptions.corrupt` at degree 0.35
(``F/mild/``) and 0.7 (``F/severe/``). The random draws of image ``i`` (its
position in ``test.txt``) and family F come from a generator seeded with
``SeedSequence([seed, i, crc32(F)])``, the same for both degrees (the same
shadow, motion angle, noise field; only the strength differs). Pairs per image
and family: clean > mild, mild > severe, clean > severe (type = F).

Runs (one embedding pass, :func:`crl_uiqa.ablation.run_ablation`)
-----------------------------------------------------------------
* the untrained distance score (pseudo-label distance, at 224 x 288 and at the
  training resolution);
* ``paper blur-only``: strong views = Gaussian + motion blur;
* ``all but F``, for each evaluated family F: strong views = every ultrasound
  family except F, evaluated on F's pairs only (the other columns of that run
  are families it was trained on, so they are not reported).

With ``--calibrated`` the margins of each run are weighted by
:mod:`crl_uiqa.calibration` (one calibration table over all families on the 45
references, renormalised to mean 1 over each run's families).

Kendall-tau check
-----------------
Pairwise accuracy on corrupted pairs cannot see a model that scores every
clean image alike. Each trained model therefore also scores the held-out
clean test images (``dev.test``), and the table reports Kendall's tau
(:func:`scipy.stats.kendalltau`) between its scores and the distance score of
those images (the quantity the pseudo-labels are built from), with the spread
(standard deviation) of its scores.

CPU budget
----------
The default ``--epochs 5`` (the paper trains 35) keeps the full run (12
trainings on 754 images at 112 x 144) within a few hours of two CPU cores; the
output says so.

Mode ``--mode default``: the current default, whole groups held out
-------------------------------------------------------------------
The runs above train the paper's head at 112 x 144 (``--mode ablation``, the
default of this script, kept as it was). ``--mode default`` trains what
``crl-uiqa fit`` and ``CRLUIQA`` train today (:func:`crl_uiqa.training.settings`:
anchored head, trunk frozen, lr 0.5, 6 epochs, >= 60 steps, 224 x 288, best
epoch kept), through :func:`crl_uiqa.training.train` on the development
protocol's 754-image pool with its pseudo-labels from the 45 references, as
``colearning.py --rows before-after`` does (its helpers are reused). Eleven
~6-minute CPU trainings do not fit the budget, so whole corruption *groups*
(:data:`GROUPS`, by physics) are held out: the run "without G" trains with
every family outside G as strong views, and is evaluated on the pairs of each
family of G. This is stricter than leaving out one family: no related
corruption (e.g. motion blur when Gaussian blur is tested) is seen either.
The fixed strong views of the validation criterion that picks the kept epoch
come from the run's families only (:func:`crl_uiqa.training.strong_views_of`).

Rows per family: the teacher (the distance score at 224 x 288, i.e. the
anchored model's own pseudo-label term, the model at epoch 0), the default
trained on all eleven families (it has seen the family: an upper reference),
the default trained without the family's group (the generalisation number),
and ``niqe-ref``, NIQE and BRISQUE through :func:`crl_uiqa.compare.compare_methods`
on the same pairs (score caches in ``bench-out/lofo_compare_<tag>/``). Each
model also gets the Kendall-tau check and its accuracy on the dev protocol's
3600 pairs (its JPEG and contrast types are never among the training families
either). Trained runs in ``bench-out/lofo_runs_<tag>/`` are reused when
complete (``--retrain`` trains anew).

Usage::

    python benchmarks/leave_one_family_out.py --mode default [--groups blur,noise] [--threads 2] [--tag NAME]

    python benchmarks/leave_one_family_out.py [--epochs 5] [--lr 1e-2] [--image-size 112 144] \
        [--families shadow,over_gain] [--calibrated] [--limit-train N] [--limit-test N] [--tag NAME]

Writes ``bench-out/lofo_<tag>.json`` and ``.md`` and the runs in ``bench-out/lofo_runs_<tag>/``
(``--mode default``: ``bench-out/lofo_default_<tag>.json`` and ``.md``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _run_info as run_info  # noqa: E402
from dev_protocol import build_dev_protocol  # noqa: E402

LOFO_VERSION = 1
PAIR_SIZE = (224, 288)
DEGREES = {"mild": 0.35, "severe": 0.7}
PAPER_ROW = "paper blur-only"
#: The corruption groups ``--mode default`` holds out whole (by physics).
GROUPS: dict[str, tuple[str, ...]] = {
    "blur": ("gaussian_blur", "motion_blur", "low_resolution"),
    "noise": ("gaussian_noise", "speckle_noise"),
    "intensity": ("over_gain", "under_gain", "haze", "attenuation"),
    "occlusion": ("shadow", "partial_fov"),
}
BASELINE_METHODS = ("niqe-ref", "niqe", "brisque")
ALL_RUN = "all 11 families"


def _log(msg: str) -> None:
    print(f"[lofo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- pairs
def image_generator(seed: int, index: int, family: str):
    """Generator of image ``index`` (position in test.txt) and ``family``: the same for mild and severe."""
    import torch

    state = np.random.SeedSequence([seed, index, zlib.crc32(family.encode())]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def build_pairs(test_paths: list[str], indices: list[int], families: list[str], out_dir: Path, seed: int = 0,
                pairs_name: str = "pairs.csv") -> Path:
    """Write clean/mild/severe PNGs of the given test images (missing ones only) and a pairs CSV.

    ``indices`` are the images' positions in the full ``test.txt`` (they seed
    the corruptions, so a file does not depend on which subset is built).
    Existing files are reused when ``params.json`` matches this version,
    size, degrees and seed; otherwise everything is rewritten.
    """
    import torch
    from tqdm.auto import tqdm

    from crl_uiqa.corruptions import corrupt
    from crl_uiqa.files import write_csv, write_json
    from crl_uiqa.io import read_gray, to_tensor, write_gray_png

    params = {"version": LOFO_VERSION, "size": list(PAIR_SIZE), "degrees": DEGREES, "seed": seed}
    pfile = out_dir / "params.json"
    reuse = pfile.is_file() and json.loads(pfile.read_text()) == json.loads(json.dumps(params))
    if not reuse:
        pfile.unlink(missing_ok=True)
    names = [Path(p).name for p in test_paths]
    if len(set(names)) != len(names):
        raise ValueError("test image names are not unique")
    rows = []
    for path, i, name in tqdm(list(zip(test_paths, indices, names)), desc="lofo pairs", disable=None):
        clean_file = out_dir / "clean" / name
        wanted = [out_dir / f / s / name for f in families for s in DEGREES]
        if reuse and clean_file.is_file() and all(w.is_file() for w in wanted):
            x = None
        else:
            x = to_tensor(read_gray(path), PAIR_SIZE)[None]  # (1, 1, H, W)
            x = (x * 255).round() / 255  # exactly what the clean PNG holds
            if not (reuse and clean_file.is_file()):
                write_gray_png(clean_file, x[0, 0].numpy())
        for f in families:
            for s, d in DEGREES.items():
                target = out_dir / f / s / name
                if x is not None and not (reuse and target.is_file()):
                    y = corrupt(x, f, torch.tensor([d]), generator=image_generator(seed, i, f))
                    write_gray_png(target, y[0, 0].numpy())
            c, m, v = f"clean/{name}", f"{f}/mild/{name}", f"{f}/severe/{name}"
            rows += [(c, m, f), (m, v, f), (c, v, f)]
    write_json(pfile, params)
    pairs_csv = out_dir / pairs_name
    write_csv(pairs_csv, rows, ["better", "worse", "type"])
    return pairs_csv


# --------------------------------------------------------------------------- helpers
def _run_dir(out: Path, name: str) -> Path:
    """The run folder :func:`crl_uiqa.ablation.run_ablation` gives row ``name``."""
    slug = "".join(c if c.isalnum() else " " for c in name).split()
    return out / "_".join(slug).lower()


def _parse_names(spec: str | None, choices, flag: str) -> list[str]:
    """A comma-separated ``flag`` value, each name one of ``choices``; all of them when empty."""
    if not spec:
        return list(choices)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in choices]
    if bad or not names:
        raise SystemExit(f"{flag}: unknown {bad}; choose from {', '.join(choices)}")
    return names


def _parse_families(spec: str | None) -> list[str]:
    from crl_uiqa.corruptions import ULTRASOUND_FAMILIES

    return _parse_names(spec, ULTRASOUND_FAMILIES, "--families")


def _fmt(v) -> str:
    return "" if v is None else f"{v:.3f}"


def format_markdown(result: dict) -> str:
    meta, fam_rows, tau_rows = result["meta"], result["families"], result["kendall_tau"]
    res = meta["image_size"]
    lines = [
        f"Leave-one-family-out on the HC18 dev split ({meta['n_test']} held-out images x 3 pairs per family; "
        f"{meta['n_train']} training images, {meta['epochs']} epochs at lr {meta['lr']:g}, {res[0]}x{res[1]}, "
        f"margins {'calibrated' if meta['calibrated'] else 'uncalibrated'}).",
        "",
        f"Note: {meta['epochs_note']}",
        "",
        "Pairwise accuracy on the pairs of family F (clean > mild > severe). `all but F`: trained with every "
        "ultrasound family except F as strong views (F never seen). `paper blur-only`: Gaussian + motion blur "
        "(* = F is one of its training families).",
        "",
        f"| family F | distance score 224x288 | distance score {res[0]}x{res[1]} | paper blur-only | all but F | "
        "all but F - blur-only |",
        "|---|---|---|---|---|---|",
    ]
    for r in fam_rows:
        star = "*" if r["family"] in ("gaussian_blur", "motion_blur") else ""
        diff = None if r["all_but_f"] is None else r["all_but_f"] - r["paper_blur_only"]
        lines.append(f"| {r['family']} | {_fmt(r['distance_score'])} | {_fmt(r['distance_score_train_res'])} | "
                     f"{_fmt(r['paper_blur_only'])}{star} | {_fmt(r['all_but_f'])} | "
                     f"{'' if diff is None else f'{diff:+.3f}'} |")
    mean = result["mean"]
    mdiff = None if mean["all_but_f"] is None else mean["all_but_f"] - mean["paper_blur_only"]
    lines.append(f"| **mean** | {_fmt(mean['distance_score'])} | {_fmt(mean['distance_score_train_res'])} | "
                 f"{_fmt(mean['paper_blur_only'])} | {_fmt(mean['all_but_f'])} | "
                 f"{'' if mdiff is None else f'{mdiff:+.3f}'} |")
    lines += [
        "",
        f"Kendall-tau check: agreement of each trained model's score with the distance score (224x288) on the "
        f"{meta['n_test']} held-out clean images; a model that scores every clean image alike shows up as tau ~ 0 "
        "and a small spread.",
        "",
        "| run | strong views | Kendall tau | p | score std (clean) |",
        "|---|---|---|---|---|",
    ]
    for r in tau_rows:
        lines.append(f"| {r['run']} | {r['strong_views']} | {r['tau']:.3f} | {r['p']:.2g} | {r['score_std']:.4f} |")
    if result.get("calibration"):
        cal = result["calibration"]
        lines += ["", "Margin calibration on the references (delta of the pseudo-label distance per degree; "
                  "weights shown over all families, each run renormalises over its own):", "", cal["markdown"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- --mode default
def _parse_groups(spec: str | None) -> list[str]:
    return _parse_names(spec, GROUPS, "--groups")


def _acc(scores: dict, pairs: list, families) -> dict:
    """Accuracy and 95 % interval over the pairs of ``families``, and per family."""
    from crl_uiqa.evaluation import pairwise_accuracy

    sub = [p for p in pairs if p[2] in families]
    acc = pairwise_accuracy(scores, sub)
    return {"accuracy": acc["overall"]["accuracy"], "ci_low": acc["overall"]["ci_low"],
            "ci_high": acc["overall"]["ci_high"], "n": acc["overall"]["n"],
            **{f"acc_{t}": v["accuracy"] for t, v in acc["by_type"].items()}}


def _train_or_reuse(name, tc, mc, li, transform, dev, run_dir: Path, args) -> tuple:
    """Train the run (or load it when ``run_dir`` holds a finished one and not ``--retrain``)."""
    from crl_uiqa.training import load_model, train

    if (run_dir / "model.safetensors").is_file() and not args.retrain:
        model, meta = load_model(run_dir)
        _log(f"{name}: reusing the finished run in {run_dir} (--retrain trains anew)")
        info = run_dir / "lofo_run.json"
        secs = json.loads(info.read_text()).get("train_seconds") if info.is_file() else None
        return model, meta.get("history", []), meta.get("kept_epoch"), meta.get("warnings", []), secs
    _log(f"{name}: training ({tc.strong_views}) in {run_dir}")
    t0 = time.perf_counter()
    res = train(li.paths, li.labels.label, config=tc, model_config=mc, run_dir=run_dir, device="cpu",
                num_workers=args.workers, progress=False, references=dev.references, anchor_transform=transform,
                overwrite=True, extra_meta={"lofo_run": name})
    secs = round(time.perf_counter() - t0, 1)
    from crl_uiqa.files import write_json

    write_json(run_dir / "lofo_run.json", {"name": name, "train_seconds": secs})
    return res.model, res.history, res.kept_epoch, res.warnings, secs


def _scores_cached(model, paths: list[str], workers, cache_file: Path) -> tuple[dict, dict]:
    """(model score, teacher term) of ``paths``, reusing the run folder's cache (scores of a finished run)."""
    from colearning import _score_both

    from crl_uiqa.files import write_json

    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    todo = [p for p in paths if p not in cache]
    if todo:
        full, q0 = _score_both(model, todo, workers)
        cache.update({p: [full[p], q0[p]] for p in full})
        write_json(cache_file, cache)
    return {p: cache[p][0] for p in paths}, {p: cache[p][1] for p in paths}


def run_default_mode(args, argv, dev, families, t0) -> int:
    """Train the current default with whole groups held out; evaluate (see the module docstring)."""

    from colearning import _summarise, default_run, label_pool
    from dev_protocol import MAIN_TYPES
    from scipy import stats

    from crl_uiqa.compare import compare_methods
    from crl_uiqa.corruptions import ULTRASOUND_FAMILIES
    from crl_uiqa.evaluation import align, read_pairs
    from crl_uiqa.files import write_csv

    load_start = run_info.uptime()
    groups = _parse_groups(args.groups)
    limited = args.limit_train is not None or args.limit_test is not None or args.groups is not None
    tag = args.tag or ("default" + ("_limited" if limited else ""))
    out_runs = ROOT / "bench-out" / f"lofo_runs_{tag}"
    test_idx = list(range(len(dev.test)))[: args.limit_test]
    test_paths = [dev.test[i] for i in test_idx]
    lofo_dir = ROOT / "bench-out" / "lofo"
    eval_fams = [f for g in groups for f in GROUPS[g]]
    _log(f"building pairs for {len(test_paths)} test images x {len(ULTRASOUND_FAMILIES)} families in {lofo_dir}")
    pairs_csv = build_pairs(test_paths, test_idx, list(ULTRASOUND_FAMILIES), lofo_dir, seed=args.seed,
                            pairs_name="pairs.csv" if args.limit_test is None else f"pairs_{tag}.csv")
    _, pairs = align({}, read_pairs(pairs_csv), pairs_root=lofo_dir)
    clean = sorted({p[0] for p in pairs if "/clean/" in p[0].replace("\\", "/")})

    def paths_of(fams):
        return sorted({q for p in pairs if p[2] in fams for q in p[:2]})

    _, dev_pairs = align({}, read_pairs(dev.pairs_csv), pairs_root=dev.out_dir)
    if args.limit_test is not None:
        keep = {Path(p).name for p in test_paths}
        dev_pairs = [pr for pr in dev_pairs if Path(pr[0]).name in keep]
    dev_paths = sorted({q for p in dev_pairs for q in p[:2]})

    _log("pseudo-labels of the training pool")
    li, transform, t_labels = label_pool(dev, k=args.k, layer=args.layer, workers=args.workers,
                                         n_train=args.limit_train or 0)
    runs = []  # the held-out groups first (the result), the all-families reference last
    for g in groups:
        kept = tuple(f for f in ULTRASOUND_FAMILIES if f not in GROUPS[g])
        runs.append((f"without {g}", ",".join(kept), GROUPS[g]))
    if not args.skip_all:
        runs.append((ALL_RUN, "ultrasound", tuple(ULTRASOUND_FAMILIES)))

    model_rows, fam_scores, teacher = [], {}, {}
    dev_rows = []
    for name, views, held_out in runs:
        dname, tc, mc = default_run(k=args.k, layer=args.layer, overrides=args.new_default,
                                    strong_views=views, seed=args.seed)
        slug = "_".join("".join(c if c.isalnum() else " " for c in name).split())
        model, history, kept_epoch, warnings, secs = _train_or_reuse(name, tc, mc, li, transform, dev,
                                                                     out_runs / slug, args)
        # the teacher term is the same in every run (frozen trunk, same references and label map): the
        # first run scores it on every evaluated family
        fams = list(ULTRASOUND_FAMILIES) if name == ALL_RUN else eval_fams if not teacher else list(held_out)
        _log(f"{name}: scoring the pairs of {', '.join(fams)}")
        run_dir = out_runs / slug
        full, q0 = _scores_cached(model, sorted(set(clean) | set(paths_of(fams))), args.workers,
                                  run_dir / "scores_lofo.json")
        fam_scores[name] = full
        if not teacher:
            teacher = q0
        else:
            drift = max(abs(q0[p] - teacher[p]) for p in clean)
            if drift > 1e-4:
                raise RuntimeError(f"{name}: its teacher term differs from the first run's by {drift:.2g}")
        tau = stats.kendalltau([full[p] for p in clean], [q0[p] for p in clean])
        crit = {int(r["epoch"]): r.get("criterion") for r in history}
        row = {"run": name, "strong_views": views, "held_out": [] if name == ALL_RUN else list(held_out),
               "train_seconds": secs, "kept_epoch": kept_epoch, "criterion_kept": crit.get(kept_epoch),
               "criterion_epoch0": crit.get(0), "warnings": warnings, "tau": float(tau.statistic),
               "tau_p": float(tau.pvalue), "score_std_clean": float(np.std([full[p] for p in clean])),
               "lofo": _acc(full, pairs, list(held_out))}  # the group held out (all 11 for ALL_RUN)
        if not args.skip_dev:
            _log(f"{name}: scoring the {len(dev_paths)} dev-protocol images")
            t1 = time.perf_counter()
            dfull, dq0 = _scores_cached(model, dev_paths, args.workers, run_dir / "scores_dev.json")
            if not dev_rows:
                dev_rows.append(_summarise("teacher (distance score 224x288, epoch 0)", dq0, dev_pairs, 0.0))
            dev_rows.append(_summarise(f"default, {name}", dfull, dev_pairs, time.perf_counter() - t1))
        model_rows.append(row)
        _log(f"{name}: kept epoch {kept_epoch}, accuracy on {', '.join(held_out)} {row['lofo']['accuracy']:.3f}"
             + (f", dev protocol {dev_rows[-1]['accuracy']:.3f}" if dev_rows else ""))
        del model
    for r in dev_rows:
        main = [r[f"acc_{t}"] for t in MAIN_TYPES if f"acc_{t}" in r]
        r["acc_non_blur_mean"] = sum(main) / len(main) if main else None

    baseline_rows = []
    if not args.skip_baselines:
        _log(f"{', '.join(BASELINE_METHODS)} on the same pairs (crl_uiqa.compare; cached)")
        import csv

        with open(pairs_csv, newline="") as fh:  # the evaluated families' pairs only
            rows = [r for r in csv.DictReader(fh) if r["type"] in eval_fams]
        eval_csv = lofo_dir / f"pairs_eval_{tag}.csv"
        write_csv(eval_csv, [(r["better"], r["worse"], r["type"]) for r in rows], ["better", "worse", "type"])
        baseline_rows = compare_methods(eval_csv, list(BASELINE_METHODS), references=dev.references,
                                        out_dir=ROOT / "bench-out" / f"lofo_compare_{tag}", device="cpu",
                                        num_workers=args.workers, progress=False)

    by_run = {r["run"]: r for r in model_rows}
    fam_rows = []
    for g in groups:
        for f in GROUPS[g]:
            r = {"group": g, "family": f, "teacher": _acc(teacher, pairs, [f])["accuracy"],
                 "all_families": by_run[ALL_RUN]["lofo"].get(f"acc_{f}") if ALL_RUN in by_run else None,
                 "held_out": by_run[f"without {g}"]["lofo"].get(f"acc_{f}")}
            for b in baseline_rows:
                r[b["method"]] = b.get(f"acc_{f}")
            fam_rows.append(r)
    cols = ["teacher", "all_families", "held_out", *[b["method"] for b in baseline_rows]]
    mean = {c: (float(np.mean([r[c] for r in fam_rows])) if all(r.get(c) is not None for r in fam_rows) else None)
            for c in cols}
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": run_info.machine(),
        "command": run_info.command("leave_one_family_out.py", argv),
        "uptime_at_start": load_start,
        "uptime_at_end": run_info.uptime(),
        "groups": {g: list(GROUPS[g]) for g in groups}, "evaluated_families": eval_fams,
        "settings": default_run(k=args.k, layer=args.layer, overrides=args.new_default)[0],
        "n_train": len(li.paths), "n_test": len(test_paths), "n_references": len(dev.references),
        "n_lofo_pairs_per_family": 3 * len(test_paths), "n_dev_pairs": len(dev_pairs),
        "label_seconds": round(t_labels, 1), "pairs_csv": str(pairs_csv), "runs_dir": str(out_runs),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    result = {"meta": meta, "families": fam_rows, "mean": mean, "runs": model_rows, "dev_protocol": dev_rows,
              "baselines": baseline_rows}
    md = format_default_markdown(result)
    _publish(f"lofo_default_{tag}", result, md)
    return 0


def _publish(name: str, result: dict, md: str) -> None:
    """Write ``bench-out/NAME.json`` (the result) and ``NAME.md`` (the tables and the run's meta), and print both."""
    from crl_uiqa.files import write_json, write_text

    meta = json.dumps(result["meta"], indent=1)
    write_json(ROOT / "bench-out" / f"{name}.json", result)
    write_text(ROOT / "bench-out" / f"{name}.md", md + "\n\n```json\n" + meta + "\n```\n")
    print(md)
    print(meta)


_BASELINE_LABEL = {"niqe-ref": "niqe-ref", "niqe": "NIQE", "brisque": "BRISQUE"}


def format_default_markdown(result: dict) -> str:
    meta, fam_rows, mean = result["meta"], result["families"], result["mean"]
    bl = [c for c in mean if c not in ("teacher", "all_families", "held_out")]
    lines = [
        f"Leave-one-group-out with the current default ({meta['settings']}); {meta['n_train']} pool images, "
        f"{meta['n_test']} held-out test images x 3 pairs per family (clean > mild > severe, 224x288).",
        "",
        "| group | family F | teacher (distance score, epoch 0) | default, all 11 families (F seen) | "
        "**default without F's group** (F never seen) | unseen - teacher | "
        + " | ".join(_BASELINE_LABEL.get(b, b) for b in bl) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(bl),
    ]
    for r in fam_rows:
        d = r["held_out"] - r["teacher"]
        best_cmp = max((r[b] for b in bl if r.get(b) is not None), default=None)
        flag = "" if best_cmp is None or r["held_out"] >= best_cmp else " (below a compare method)"
        lines.append(f"| {r['group']} | {r['family']} | {_fmt(r['teacher'])} | {_fmt(r['all_families'])} | "
                     f"**{_fmt(r['held_out'])}**{flag} | {d:+.3f} | " + " | ".join(_fmt(r.get(b)) for b in bl) + " |")
    lines.append(f"| **mean** | ({len(fam_rows)} families) | {_fmt(mean['teacher'])} | {_fmt(mean['all_families'])} | "
                 f"**{_fmt(mean['held_out'])}** | {mean['held_out'] - mean['teacher']:+.3f} | "
                 + " | ".join(_fmt(mean[b]) for b in bl) + " |")
    lines += ["", "Runs (Kendall tau: agreement with the teacher's ranking of the clean test images; criterion: "
              "held-out clean-over-corrupted validation accuracy, kept epoch vs epoch 0):", "",
              "| run | held out | kept epoch | criterion kept (epoch 0) | Kendall tau | score std (clean) | "
              "CPU training | warnings |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['run']} | {', '.join(r['held_out']) or '-'} | {r['kept_epoch']} | "
                     f"{_fmt(r['criterion_kept'])} ({_fmt(r['criterion_epoch0'])}) | {r['tau']:.3f} | "
                     f"{r['score_std_clean']:.4f} | {r['train_seconds'] or '-'} s | {len(r['warnings'])} |")
    if result["dev_protocol"]:
        types = ["gaussian_noise", "jpeg", "contrast", "gamma", "gaussian_blur", "motion_blur"]
        lines += ["", f"Dev protocol ({meta['n_dev_pairs']} pairs; JPEG and contrast are in no run's training "
                  "families):", "",
                  "| model | all pairs [95 % CI] | non-blur mean | " + " | ".join(types) + " |",
                  "|---|---|---|" + "---|" * len(types)]
        for r in result["dev_protocol"]:
            lines.append(f"| {r['configuration']} | {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
                         f"{_fmt(r.get('acc_non_blur_mean'))} | " + " | ".join(_fmt(r.get(f'acc_{t}')) for t in types)
                         + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hc18", default=None, help="HC18 folder (default: see dev_protocol.py)")
    ap.add_argument("--weights", default=None,
                    help="SonoNet16.npz or its folder (default: shared/weights/sononet, else crl_uiqa.weights' search)")
    ap.add_argument("--epochs", type=int, default=5,
                    help="training epochs per run (default 5: a CPU budget; the paper trains 35)")
    ap.add_argument("--lr", type=float, default=1e-2, help="SGD learning rate (default 1e-2)")
    ap.add_argument("--batch-size", type=int, default=16, help="source images per step (default 16)")
    ap.add_argument("--image-size", nargs=2, type=int, default=[112, 144], metavar=("H", "W"),
                    help="training/scoring resolution (default 112 144)")
    ap.add_argument("--families", default=None,
                    help="comma list of held-out families to evaluate (default: all ultrasound families)")
    ap.add_argument("--calibrated", action="store_true", help="calibrate the margins (crl_uiqa.calibration)")
    ap.add_argument("--k", type=int, default=5, help="nearest references averaged (default 5)")
    ap.add_argument("--layer", default="block4", help="embedding layer (default block4)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pair corruptions and of training")
    ap.add_argument("--limit-train", type=int, default=None, help="use only the first N training images (smoke runs)")
    ap.add_argument("--limit-test", type=int, default=None, help="use only the first N test images (smoke runs)")
    ap.add_argument("--workers", type=int, default=1, help="image decoding processes (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--tag", default=None, help="output name (default from the options)")
    ap.add_argument("--mode", choices=("ablation", "default"), default="ablation",
                    help="ablation: the paper head at --image-size, one family out (the original runs); default: "
                         "the current default training (training.settings()), whole groups out")
    ap.add_argument("--groups", default=None,
                    help=f"--mode default: comma list of held-out groups (default all: {', '.join(GROUPS)})")
    ap.add_argument("--new-default", action="append", metavar="KEY=VALUE",
                    help="--mode default: override a training setting of the default (as colearning.py)")
    ap.add_argument("--skip-dev", action="store_true", help="--mode default: no dev-protocol evaluation")
    ap.add_argument("--skip-baselines", action="store_true", help="--mode default: no niqe-ref/NIQE/BRISQUE")
    ap.add_argument("--skip-all", action="store_true",
                    help="--mode default: no all-families reference run")
    ap.add_argument("--retrain", action="store_true", help="--mode default: train anew even when a run is finished")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    import torch
    from scipy import stats

    from crl_uiqa.ablation import run_ablation
    from crl_uiqa.backbones import get_backbone
    from crl_uiqa.corruptions import PAPER_FAMILIES, ULTRASOUND_FAMILIES
    from crl_uiqa.embed import compute_embeddings
    from crl_uiqa.model import ModelConfig
    from crl_uiqa.pseudo_labels import topk_mean_distance
    from crl_uiqa.scoring import score_paths
    from crl_uiqa.training import TrainConfig, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights is None:
        shared = Path(os.environ.get("CRL_UIQA_SHARED", ROOT.parent / "shared"))
        if (shared / "weights" / "sononet" / "SonoNet16.npz").is_file():
            args.weights = str(shared / "weights" / "sononet" / "SonoNet16.npz")
    t0 = time.perf_counter()
    families = _parse_families(args.families)
    if args.mode == "default":
        return run_default_mode(args, argv, build_dev_protocol(args.hc18), families, t0)
    limited = args.limit_train is not None or args.limit_test is not None or args.families is not None
    tag = args.tag or (f"e{args.epochs}_{'cal' if args.calibrated else 'uncal'}" + ("_limited" if limited else ""))
    out_runs = ROOT / "bench-out" / f"lofo_runs_{tag}"

    dev = build_dev_protocol(args.hc18)
    train_paths = dev.train[: args.limit_train]
    test_idx = list(range(len(dev.test)))[: args.limit_test]
    test_paths = [dev.test[i] for i in test_idx]
    lofo_dir = ROOT / "bench-out" / "lofo"
    _log(f"building pairs for {len(test_paths)} test images x {len(families)} families in {lofo_dir}")
    pairs_csv = build_pairs(test_paths, test_idx, families, lofo_dir, seed=args.seed,
                            pairs_name="pairs.csv" if not limited else f"pairs_{tag}.csv")

    # margins
    calibration = None
    weights_for = lambda fams: {}  # noqa: E731
    if args.calibrated:
        from crl_uiqa.calibration import backbone_calibration_table

        _log("calibrating margins on the references")
        table = backbone_calibration_table(dev.references, "sononet16", args.weights, args.layer, PAIR_SIZE,
                                           ULTRASOUND_FAMILIES, k=args.k, seed=args.seed, device="cpu",
                                           num_workers=args.workers)
        calibration = {**table.to_dict(), "markdown": table.to_markdown()}
        weights_for = table.weights

    rows, row_views = [], {}
    paper = list(PAPER_FAMILIES)
    rows.append((PAPER_ROW, {"strong_views": ",".join(paper), "calibration": weights_for(paper)}))
    row_views[PAPER_ROW] = paper
    for f in families:
        others = [g for g in ULTRASOUND_FAMILIES if g != f]
        name = f"all but {f}"
        rows.append((name, {"strong_views": ",".join(others), "calibration": weights_for(others)}))
        row_views[name] = others

    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    mc = ModelConfig(image_size=tuple(args.image_size))
    _log(f"training {len(rows)} runs ({args.epochs} epochs, {len(train_paths)} images) in {out_runs}")
    table_rows = run_ablation(train_paths, dev.references, pairs_csv, out_runs, k=args.k, layer=args.layer,
                              weights=args.weights, train_config=tc, model_config=mc, rows=rows, device="cpu",
                              num_workers=args.workers, progress=False)
    by_name = {r["configuration"]: r for r in table_rows}
    dist_rows = [r for r in table_rows if r["configuration"].startswith("distance score")]
    dist_full = dist_rows[0]
    dist_small = dist_rows[1] if len(dist_rows) > 1 else dist_rows[0]

    fam_rows = []
    for f in families:
        key = f"acc_{f}"
        fam_rows.append({"family": f, "n_pairs": 3 * len(test_paths), "distance_score": dist_full.get(key),
                         "distance_score_train_res": dist_small.get(key),
                         "paper_blur_only": by_name[PAPER_ROW].get(key), "all_but_f": by_name[f"all but {f}"].get(key)})
    mean = {c: (float(np.mean([r[c] for r in fam_rows])) if all(r[c] is not None for r in fam_rows) else None)
            for c in ("distance_score", "distance_score_train_res", "paper_blur_only", "all_but_f")}

    # Kendall-tau check on the clean held-out images
    _log("Kendall-tau check on the clean test images")
    net = get_backbone("sononet16", args.weights)
    common = dict(layer=args.layer, device="cpu", num_workers=args.workers, strict=True, progress=False)
    ref_emb = compute_embeddings(dev.references, net, **common)
    test_emb = compute_embeddings(test_paths, net, **common)
    dist_score = -topk_mean_distance(test_emb.vectors, ref_emb.vectors, args.k)
    tau_rows = []
    for name, _ in rows:
        model, _meta = load_model(_run_dir(out_runs, name))
        sc = score_paths(model, test_paths, device="cpu", num_workers=args.workers, strict=True, progress=False)
        res = stats.kendalltau(sc.scores, dist_score)
        tau_rows.append({"run": name, "strong_views": ",".join(row_views[name]) if name != PAPER_ROW else "paper",
                         "tau": float(res.statistic), "p": float(res.pvalue),
                         "score_std": float(np.std(sc.scores)), "n": len(sc.scores)})

    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": run_info.machine(),
        "command": run_info.command("leave_one_family_out.py", argv),
        "epochs": args.epochs,
        "epochs_note": f"{args.epochs} epoch(s) per run is a CPU budget (the paper trains 35); the ranking of the "
                       "runs, not the absolute accuracy, is the result.",
        "lr": args.lr, "batch_size": args.batch_size, "image_size": args.image_size, "k": args.k,
        "layer": args.layer, "seed": args.seed, "calibrated": args.calibrated, "families": families,
        "pair_degrees": DEGREES, "pair_size": list(PAIR_SIZE), "pairs_csv": str(pairs_csv),
        "n_train": len(train_paths), "n_test": len(test_paths), "n_references": len(dev.references),
        "limit_train": args.limit_train, "limit_test": args.limit_test, "runs_dir": str(out_runs),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    result = {"meta": meta, "families": fam_rows, "mean": mean, "kendall_tau": tau_rows,
              "ablation_rows": table_rows, "calibration": calibration}
    md = format_markdown(result)
    _publish(f"lofo_{tag}", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
