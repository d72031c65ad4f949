"""Which part of the anchored model's correction moves a corruption family's scores, and which way?

Issue 10, goal 3. The anchored model scores ``teacher + conv + deviation +
bias``: the teacher (the distance score), the conv head's share of the FC
(``w_conv . pooled projection``) and the deviation features' share
(``w_dev . deviation``, :mod:`crl_uiqa.reference_stats`). For a trained run
(a ``model.safetensors`` folder, e.g. one of ``leave_one_family_out.py --mode
default``'s runs) and the leave-one-family-out pairs in ``bench-out/lofo``
(clean > mild > severe of 200 held-out HC18 test images per family), this
prints per family the mean change of each part from the clean image to its
mild and severe corruption, and the pairwise accuracy of the teacher alone,
the teacher plus each part, and the whole model.

Usage::

    python benchmarks/leave_one_family_out.py --mode default --groups intensity --skip-baselines \
        --skip-dev --skip-all --threads 2 --tag hazediag
    python benchmarks/correction_parts.py --model bench-out/lofo_runs_hazediag/without_intensity \
        --families haze,attenuation,under_gain,over_gain
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _run_info as run_info  # noqa: E402

LOFO = ROOT / "bench-out" / "lofo"
PARTS = ("teacher", "conv", "deviation")


def _parts(model, folder: Path, names: list[str]) -> np.ndarray:
    """(n, 3): teacher term, conv head's share, deviation features' share of each image's score."""
    import torch

    from crl_uiqa.io import read_gray, to_tensor

    size = tuple(model.config.image_size)
    n_conv = model.projection[0].out_channels if model.projection is not None else 0
    w = model.fc.weight[0].detach()
    out = []
    with torch.inference_mode():
        for i in range(0, len(names), 32):
            x = torch.stack([to_tensor(read_gray(folder / n), size) for n in names[i:i + 32]])
            f, q0, stats = model.fixed_features(x)  # what the head reads; stats: the deviation features
            conv = model.projection(f).mean(dim=(2, 3)) @ w[:n_conv] if n_conv else torch.zeros_like(q0)
            dev = stats @ w[n_conv:] if stats is not None else torch.zeros_like(q0)
            out.append(torch.stack([q0, conv, dev], 1))
    return torch.cat(out).numpy()


def _accuracy(c: np.ndarray, mild: np.ndarray, severe: np.ndarray, cols: list[int]) -> float:
    """Mean accuracy over the three pairs per image (clean > mild, mild > severe, clean > severe); ties half."""
    s = [a[:, cols].sum(1) for a in (c, mild, severe)]
    pairs = [(s[0], s[1]), (s[1], s[2]), (s[0], s[2])]
    return float(np.mean([np.mean((a > b) + 0.5 * (a == b)) for a, b in pairs]))


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a trained run folder (model.safetensors + model.json)")
    ap.add_argument("--families", required=True, help="comma list of families with pairs in bench-out/lofo")
    ap.add_argument("--threads", type=int, default=2)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    from crl_uiqa.model import load_model

    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model)
    model.eval()
    if model.config.head != "anchored":
        raise SystemExit("--model: the anchored head is needed (teacher + correction)")
    if model.config.anchor.get("intensity_stats"):
        raise SystemExit("--model: a head with intensity_stats (the signed mean and deviation) is not split here")
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    missing = [f for f in families if not (LOFO / f / "mild").is_dir()]
    if missing or not (LOFO / "clean").is_dir():
        raise SystemExit(f"no pairs for {missing or 'clean'} in {LOFO}: run leave_one_family_out.py first")
    names = sorted(p.name for p in (LOFO / "clean").iterdir())
    clean = _parts(model, LOFO / "clean", names)
    rows = []
    print(f"# {run_info.machine()}; {run_info.uptime()}")
    print("| family | mean change mild / severe − clean: teacher | conv | deviation | accuracy: teacher | + conv "
          "| + deviation | whole model |")
    print("|---|---|---|---|---|---|---|---|")
    for fam in families:
        mild, severe = _parts(model, LOFO / fam / "mild", names), _parts(model, LOFO / fam / "severe", names)
        d1, d2 = (mild - clean).mean(0), (severe - clean).mean(0)
        acc = {k: _accuracy(clean, mild, severe, cols) for k, cols in
               (("teacher", [0]), ("teacher+conv", [0, 1]), ("teacher+deviation", [0, 2]), ("model", [0, 1, 2]))}
        rows.append({"family": fam, "change_mild": dict(zip(PARTS, map(float, d1))),
                     "change_severe": dict(zip(PARTS, map(float, d2))), "accuracy": acc})
        print(f"| {fam} | " + " | ".join(f"{a:+.4f} / {b:+.4f}" for a, b in zip(d1, d2)) + " | "
              + " | ".join(f"{acc[k]:.3f}" for k in ("teacher", "teacher+conv", "teacher+deviation", "model")) + " |")
    out = ROOT / "bench-out" / f"correction_parts_{Path(args.model).name}.json"
    out.write_text(json.dumps({"command": run_info.command("correction_parts.py", argv), "model": str(args.model),
                               "n_images": len(names), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
