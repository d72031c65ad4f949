"""Batch norm folded into the convolutions for inference, against the network as trained, side by side in one run.

``crl_uiqa.devices.prepare_model`` (what ``score``, ``select``, ``live``, ``serve``, ``embed`` and the pseudo-labels
run) and the training of a frozen trunk now run a copy of the network in which each eval-mode batch norm is folded
into the convolution before it (``fold_batch_norm``). This script times, alternately in each repetition so that a
change of load hits both alike, on in-memory batches (no decoding):

* ``P(.)``: SonoNet-16's ``adaptation`` embedding (the pseudo-labels' and the demo's P(.)) at 224x288;
* ``model``: the default model (anchored head on block4, random anchor: same speed) at 224x288 and 112x144;
* ``frozen trunk``: the fixed features a training step computes for 48 windows of 112x144 (16 images x 3 views,
  the default training batch), without autograd.

It reports images per second for each (median over ``--reps``), the speed-up, and the largest difference of the
outputs relative to their largest magnitude.

Usage::

    python benchmarks/fold_bn.py [--reps 7] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    return ap


def _cases(batch_size: int):
    """(name, images per call, unfolded callable, folded callable) for each case."""
    import torch
    from cpu_speed import _model

    from crl_uiqa.backbones import get_backbone
    from crl_uiqa.devices import prepare_model
    from crl_uiqa.training import _folded_fixed_parts

    cpu = torch.device("cpu")
    cl = torch.channels_last
    cases = []
    try:
        net = get_backbone("sononet16", None)
    except Exception:  # no packaged weights: a random SonoNet-16 (the same speed)
        from crl_uiqa.backbones.sononet import SonoNet

        net = SonoNet(16)
    net = prepare_model(net, cpu, fold=False)
    x = torch.rand(batch_size, 1, 224, 288).contiguous(memory_format=cl)
    folded = prepare_model(net, cpu)
    cases.append(("P(.): SonoNet-16 adaptation embedding, 224x288", batch_size,
                  lambda: net.embed(x, "adaptation"), lambda: folded.embed(x, "adaptation")))
    for size in ((224, 288), (112, 144)):
        m = prepare_model(_model(size), cpu, fold=False)
        xm = torch.rand(batch_size, 1, *size).contiguous(memory_format=cl)
        fm = prepare_model(m, cpu)
        cases.append((f"model: the default model, {size[0]}x{size[1]}", batch_size,
                      (lambda m=m, xm=xm: m(xm)), (lambda fm=fm, xm=xm: fm(xm))))
    m = _model((224, 288)).to(memory_format=cl).train()  # as in training: the head trains, the trunk is frozen
    fixed = _folded_fixed_parts(m)  # keeps m in training mode
    assert fixed is not None
    xw = torch.rand(48, 1, 112, 144).contiguous(memory_format=cl)
    cases.append(("frozen trunk: a training step's fixed features, 48 windows of 112x144", 48,
                  lambda: m.fixed_features(xw), lambda: fixed.fixed_features(xw)))
    return cases


def _largest_difference(a, b) -> float:

    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    out = 0.0
    for u, v in zip(a, b):
        if u is None:
            continue
        out = max(out, float((u.float() - v.float()).abs().max() / u.float().abs().max().clamp_min(1e-12)))
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    import torch
    from _run_info import command, machine, uptime

    torch.set_num_threads(args.threads)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load0 = uptime()
    rows = []
    for name, n, plain, folded in _cases(args.batch_size):
        times = {"batch norm": [], "folded": []}
        with torch.inference_mode():
            diff = _largest_difference(plain(), folded())  # also the warm-up
            for _ in range(args.reps):
                for key, fn in (("batch norm", plain), ("folded", folded)):
                    t0 = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - t0)
        rate = {k: n / statistics.median(v) for k, v in times.items()}
        rows.append({"case": name, "batch_norm_img_per_s": round(rate["batch norm"], 1),
                     "folded_img_per_s": round(rate["folded"], 1),
                     "speedup": round(rate["folded"] / rate["batch norm"], 3), "largest_relative_difference": diff})
        print(f"{name}: {rate['batch norm']:.1f} -> {rate['folded']:.1f} img/s "
              f"({rate['folded'] / rate['batch norm']:.2f}x), largest relative difference {diff:.1e}", flush=True)
    meta = {"started": started, "machine": machine(), "command": command("fold_bn.py", argv), "reps": args.reps,
            "load_before": load0, "load_after": uptime()}
    print(json.dumps(meta))
    (ROOT / "bench-out").mkdir(exist_ok=True)
    (ROOT / "bench-out" / "fold_bn.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
