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

``--rows before-after`` is the release comparison in one run: the distance
score (the teacher), the previous default (the paper's head and schedule at
112x144: ``--paper`` with ``--image-size 112 144``), and the new default
(``crl_uiqa.training.settings()``, at 224x288), each trained on the same
pseudo-labels, with the CPU training time, the epoch kept, and the speed of
``score`` for the new default model against its bare forward rate.
``--skip-previous`` leaves the previous default out (its row is then cited).
``--new-default key=value`` (repeatable) changes a setting of the new default row itself.
``--variant "LABEL:key=value;key=value"`` (repeatable) adds a row trained like
the new default but for the settings given (TrainConfig or ModelConfig keys,
e.g. ``amp=bf16``, ``train_crop=112x144``, ``train_from=block4``), on the same
images, pseudo-labels and pairs; ``--score-bf16`` also scores the new default
model and every model trained with ``amp=bf16`` with bfloat16 autocast
(accuracy, largest score change, speed).
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
from dev_protocol import BLUR_TYPES, MAIN_TYPES, build_dev_protocol  # noqa: E402

FULL = {"smoothing": True, "consistency": True, "relativity": True}
ROWS = {
    "all": None,
    "regression": ["pseudo-label", "+ smoothing"],
    "full": ["+ smoothing + L_c + L_r (CRL-UIQA)"],
    "regression+full": ["+ smoothing", "+ smoothing + L_c + L_r (CRL-UIQA)"],
    # the paper's lr against the lr that the feasibility run found to learn, full model, same epochs
    "lr": [("CRL-UIQA lr 1e-3 (paper)", {**FULL, "lr": 1e-3}), ("CRL-UIQA lr 1e-2", {**FULL, "lr": 1e-2})],
    "before-after": None,  # see before_after()
}


def _summarise(name, scores: dict, pairs, seconds: float, **extra) -> dict:
    from crl_uiqa.evaluation import pairwise_accuracy

    acc = pairwise_accuracy(scores, pairs)
    row = {"configuration": name, "accuracy": acc["overall"]["accuracy"], "ci_low": acc["overall"]["ci_low"],
           "ci_high": acc["overall"]["ci_high"], "n_pairs": acc["overall"]["n"], "seconds": round(seconds, 1), **extra}
    row.update({f"acc_{t}": v["accuracy"] for t, v in acc["by_type"].items()})
    return row


def _score_speed(model, paths, batch_size: int = 32, amp: bool | str = False) -> dict:
    """Bare forward rate on an in-memory batch against ``score_paths`` end to end (decode + resize + forward)."""
    import torch

    from crl_uiqa.scoring import score_paths

    h, w = model.config.image_size
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.rand(batch_size, 1, h, w).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
        model(x)
        reps = max(2, len(paths) // batch_size)
        t0 = time.perf_counter()
        for _ in range(reps):
            model(x)
        bare = reps * batch_size / (time.perf_counter() - t0)
    score_paths(model, paths[: batch_size * 2], batch_size=batch_size, device="cpu", progress=False,
                amp=amp)  # warm-up
    t0 = time.perf_counter()
    res = score_paths(model, paths, batch_size=batch_size, device="cpu", progress=False, amp=amp)
    e2e = len(res.paths) / (time.perf_counter() - t0)
    return {"size": f"{h}x{w}", "amp": amp, "bare_img_per_s": round(bare, 1), "score_img_per_s": round(e2e, 1),
            "ratio": round(e2e / bare, 3), "images": len(res.paths)}


def _score_both(model, paths, workers, bf16: bool = False) -> tuple[dict, dict]:
    """Scores of the anchored model and of its teacher term (the distance score's label) in one pass."""
    import torch

    from crl_uiqa.io import iter_batches

    model = model.eval().to(memory_format=torch.channels_last)
    full, teacher, kept = [], [], []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for b in iter_batches(paths, size=tuple(model.config.image_size), batch_size=32, num_workers=workers,
                              strict=True, progress=False):
            x = b.images.contiguous(memory_format=torch.channels_last)
            q0, correction = [t.float() for t in model.anchored_terms(x)]
            teacher.append(q0)
            full.append(q0 + correction)
            kept += b.indices
    names = [paths[i] for i in kept]
    return (dict(zip(names, map(float, torch.cat(full)))), dict(zip(names, map(float, torch.cat(teacher)))))


def _parse_variant(spec: str) -> tuple[str, dict, dict]:
    """"LABEL:key=value;key=value" -> (label, TrainConfig overrides, ModelConfig overrides)."""
    from crl_uiqa.model import ModelConfig
    from crl_uiqa.training import TrainConfig

    label, sep, body = spec.partition(":")
    if not sep or not body:
        raise SystemExit(f"--variant {spec!r}: expected LABEL:key=value;key=value")
    t_v, m_v = {}, {}
    for kv in body.split(";"):
        key, _, val = kv.strip().partition("=")
        if "x" in val and all(p.isdigit() for p in val.split("x")):
            value = tuple(int(p) for p in val.split("x"))  # 112x144
        else:
            try:
                value = json.loads(val)
            except ValueError:
                value = val
        if key in TrainConfig.__dataclass_fields__:
            t_v[key] = value
        elif key in ModelConfig.__dataclass_fields__:
            m_v[key] = value
        else:
            raise SystemExit(f"--variant {spec!r}: {key!r} is neither a TrainConfig nor a ModelConfig setting")
    return label, t_v, m_v


def label_pool(dev, *, k: int = 5, layer: str = "block4", workers=1, n_train: int = 0):
    """Pseudo-labels of the dev protocol's training pool (first ``n_train`` images when > 0).

    Returns (``crl_uiqa.pseudo_labels.label_images`` result, the label map (Yeo-Johnson lambda, min, max)
    the anchored head reuses, seconds).
    """
    from crl_uiqa.pseudo_labels import label_images

    t0 = time.perf_counter()
    li = label_images(dev.train[: n_train or None], dev.references, k=k, layer=layer, device="cpu",
                      num_workers=workers, progress=False)
    pl = li.labels
    return li, (pl.lmbda, float(pl.smoothed.min()), float(pl.smoothed.max())), time.perf_counter() - t0


def _with_overrides(t_o: dict, m_o: dict, overrides) -> tuple[dict, dict]:
    """Settings dicts with ``KEY=VALUE`` strings (``--new-default``; TrainConfig or ModelConfig keys) applied."""
    for kv in overrides or []:  # e.g. --new-default epochs=6: a measured alternative to the default
        _, t_v, m_v = _parse_variant("new default:" + kv.replace(",", ";"))
        t_o, m_o = {**t_o, **t_v}, {**m_o, **m_v}
    return t_o, m_o


def _anchored_model_config(m_o: dict, k: int, layer: str):
    """The ModelConfig of a default-style run at 224x288 with the pseudo-labels' ``k`` and ``layer``."""
    from crl_uiqa.model import ModelConfig

    return ModelConfig(image_size=(224, 288), **{**m_o, "anchor": {**m_o.get("anchor", {}), "k": k, "layer": layer,
                                                                   "smoothing": True}})


def _default_name(tc, mc) -> str:
    window = tc.crop_size(tuple(mc.image_size))
    return (f"new default: {mc.head} head, lr {tc.lr:g}, {tc.epochs} epochs, 224x288"
            + (f", {window[0]}x{window[1]} training windows" if window and window != tuple(mc.image_size) else ""))


def default_run(*, k: int = 5, layer: str = "block4", overrides=(), **train_overrides):
    """(name, TrainConfig, ModelConfig) of the current default (``crl_uiqa.training.settings()``) at 224x288.

    ``overrides``: ``KEY=VALUE`` strings (``--new-default``); ``train_overrides``: TrainConfig fields
    (e.g. ``strong_views=...``), applied last.
    """
    from crl_uiqa.training import TrainConfig, settings

    t_o, m_o = _with_overrides(*settings(), overrides)
    tc, mc = TrainConfig(**{**t_o, **train_overrides}), _anchored_model_config(m_o, k, layer)
    return _default_name(tc, mc), tc, mc


def before_after(dev, args, out: Path) -> tuple[list[dict], dict]:
    """Distance score, previous default, new default on the dev protocol (see the module docstring)."""
    from dataclasses import replace

    from crl_uiqa.evaluation import align, read_pairs
    from crl_uiqa.model import ModelConfig
    from crl_uiqa.scoring import score_paths
    from crl_uiqa.training import TrainConfig, settings, train

    _, pairs = align({}, read_pairs(dev.pairs_csv), pairs_root=dev.out_dir)
    if args.n_test:  # a quick check on the pairs of the first n test images
        keep = {Path(p).name for p in dev.test[: args.n_test]}
        pairs = [pr for pr in pairs if Path(pr[0]).name in keep]
    test_paths = sorted({p for pr in pairs for p in pr[:2]})
    li, transform, t_labels = label_pool(dev, k=args.k, layer=args.layer, workers=args.workers, n_train=args.n_train)
    pl = li.labels
    runs = [default_run(k=args.k, layer=args.layer, overrides=args.new_default)]
    t_o, m_o = _with_overrides(*settings(), args.new_default)
    for spec in args.variant or []:  # "LABEL:key=value;key=value": the new default but for these settings
        label, t_v, m_v = _parse_variant(spec)
        runs.append((f"variant {label}", TrainConfig(**{**t_o, **t_v}),
                     _anchored_model_config({**m_o, **m_v}, args.k, args.layer)))
    if not args.skip_previous:
        t_o, m_o = settings(paper=True)
        runs.append(("previous default: paper head, lr 1e-3, 35 epochs, 112x144",
                     replace(TrainConfig(**t_o), strong_views="ultrasound"),
                     ModelConfig(image_size=(112, 144), **m_o)))
    table, speed, have_teacher = [], {}, False
    for name, tc, mc in runs:
        slug = "_".join("".join(c if c.isalnum() else " " for c in name.split(":")[0]).split())
        t0 = time.perf_counter()
        res = train(li.paths, pl.label, config=tc, model_config=mc, run_dir=out / slug, device="cpu",
                    num_workers=args.workers, progress=False,
                    references=dev.references if mc.head == "anchored" else None, anchor_transform=transform)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        if mc.head == "anchored":
            full, teacher = _score_both(res.model, test_paths, args.workers)
            if not have_teacher:
                table.append(_summarise("distance score, 224x288 (the teacher: the anchored model's own "
                                        "pseudo-label term; no training)", teacher, pairs, 0.0, train_seconds=0.0))
                have_teacher = True
        else:
            full = score_paths(res.model, test_paths, device="cpu", num_workers=args.workers, progress=False).as_dict()
        epoch_s = [r["seconds"] for r in res.history if "seconds" in r]
        table.append(_summarise(name, full, pairs, time.perf_counter() - t0, train_seconds=round(t_train, 1),
                                s_per_epoch=round(sum(epoch_s) / max(1, len(epoch_s)), 1),
                                kept_epoch=res.kept_epoch, warnings=res.warnings, history=res.history,
                                train_config=tc.to_dict(), train_from=mc.train_from))
        print(f"{name}: {table[-1]['accuracy']:.3f} in {t_train:.0f} s (kept epoch {res.kept_epoch})", flush=True)
        if mc.head == "anchored" and args.score_bf16 and (name.startswith("new default") or tc.amp == "bf16"):
            t0 = time.perf_counter()
            full16, _ = _score_both(res.model, test_paths, args.workers, bf16=True)
            diff = max(abs(full16[k] - full[k]) for k in full)
            table.append(_summarise(name + ", scored with bf16 autocast", full16, pairs, time.perf_counter() - t0,
                                    max_abs_score_diff=round(diff, 5)))
            print(f"  scored in bf16: {table[-1]['accuracy']:.3f} (largest score change {diff:.4f})", flush=True)
        if mc.head == "anchored" and args.speed_images and not speed:
            speed = _score_speed(res.model, dev.pair_images[: args.speed_images])
            if args.score_bf16:
                speed = {"fp32": speed, "bf16": _score_speed(res.model, dev.pair_images[: args.speed_images],
                                                             amp="bf16")}
    return table, {"label_seconds": round(t_labels, 1), "score_speed": speed}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
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
    ap.add_argument("--new-default", action="append", metavar="KEY=VALUE",
                    help="before-after: override a training setting of the new default (repeatable), e.g. epochs=6")
    ap.add_argument("--variant", action="append", metavar="LABEL:KEY=VALUE;KEY=VALUE",
                    help="before-after: an extra row, the new default but for these settings (repeatable), e.g. "
                    "'bf16:amp=bf16' or 'crop:train_crop=112x144'")
    ap.add_argument("--score-bf16", action="store_true",
                    help="before-after: also score each trained model with bfloat16 autocast on the CPU")
    ap.add_argument("--skip-previous", action="store_true", help="before-after: leave out the previous default")
    ap.add_argument("--speed-images", type=int, default=256, help="before-after: images of the score-speed check")
    ap.add_argument("--n-train", type=int, default=0, help="before-after: first N training images only (quick check)")
    ap.add_argument("--n-test", type=int, default=0, help="before-after: pairs of the first N test images only")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)


    from crl_uiqa.ablation import format_table, run_ablation
    from crl_uiqa.model import ModelConfig
    from crl_uiqa.training import TrainConfig

    dev = build_dev_protocol(args.hc18)
    tag = args.tag or f"lr{args.lr:g}_e{args.epochs}_{args.rows}"
    out = ROOT / "bench-out" / f"colearning_{tag}"
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, strong_views=args.strong_views)
    mc = ModelConfig(image_size=tuple(args.image_size))
    t0 = time.perf_counter()
    if args.rows == "before-after":

        table, extra = before_after(dev, args, out)
        load = run_info.uptime()
        meta = {"date": str(date.today()), "machine": run_info.machine(),
                "command": run_info.command("colearning.py", argv),
                "uptime_at_end": load, "total_seconds": round(time.perf_counter() - t0, 1), **extra}
        for r in table:
            main_acc = [r[f"acc_{t}"] for t in MAIN_TYPES if f"acc_{t}" in r]
            r["acc_non_blur_mean"] = sum(main_acc) / len(main_acc)
        (ROOT / "bench-out").mkdir(exist_ok=True)
        (ROOT / "bench-out" / f"colearning_{tag}.json").write_text(
            json.dumps({"meta": meta, "table": table}, indent=2))
        print(format_table(table))
        print(json.dumps(meta, indent=1))
        return 0
    table = run_ablation(dev.train, dev.references, dev.pairs_csv, out, k=args.k, layer=args.layer, train_config=tc,
                         model_config=mc, rows=ROWS[args.rows], device="cpu", num_workers=args.workers,
                         progress=False)
    for r in table:
        main_acc = [r[f"acc_{t}"] for t in MAIN_TYPES if f"acc_{t}" in r]
        blur_acc = [r[f"acc_{t}"] for t in BLUR_TYPES if f"acc_{t}" in r]
        r["acc_non_blur_mean"] = sum(main_acc) / len(main_acc)
        r["acc_blur_mean"] = sum(blur_acc) / len(blur_acc)
    meta = {"date": str(date.today()), "machine": run_info.machine(),
            "command": run_info.command("colearning.py", argv),
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
