"""CPU speed options for the default model (issue 10): bfloat16 autocast, channels-last, torch.compile.

Measures, in one run on the same random batch, the default model (anchored
head, SonoNet-16 trunk frozen, block4) at 224x288:

* ``forward``: inference img/s (the rate of ``score`` and of the frozen-trunk
  part of every training step);
* ``train step``: seconds per SGD step of the default training (16 images x 3
  views = 48 through the model, loss on the head, backward through the head,
  optimizer step);

for each option: fp32 channels-last (today), fp32 contiguous (NCHW),
bfloat16 autocast (channels-last), torch.compile (channels-last; fp32 and
bf16), the compile time reported separately. Scores of the options are
compared with the fp32 scores (max absolute difference; the scores live in
about [0, 1]).

Usage::

    python benchmarks/cpu_speed.py [--size 224 288] [--batch-size 48] [--reps 6] [--options ...]

Writes ``bench-out/cpu_speed.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _run_info as run_info  # noqa: E402

OPTIONS = ("fp32-cl", "fp32-nchw", "bf16-cl", "bf16-nchw", "compile-fp32", "compile-bf16")


def _model(size):
    import torch

    from crl_uiqa.model import ModelConfig, build_model
    from crl_uiqa.training import settings

    torch.manual_seed(0)  # the same head weights for every option
    mc = ModelConfig(image_size=tuple(size), head="anchored", train_from="head",
                     anchor={**settings()[1].get("anchor", {}), "layer": "block4", "k": 5, "n_references": 45,
                             "dim": 128, "smoothing": True})
    try:
        model = build_model(mc)
    except Exception:  # no packaged SonoNet weights: random trunk (the speed is the same)
        model = build_model(mc, pretrained=False)
    g = torch.Generator().manual_seed(0)
    model.anchor.set(torch.rand(45, 128, generator=g), 0.5, -3.0, 0.0)
    with torch.no_grad():  # a non-zero correction, so that its precision shows in the scores
        model.fc.weight.normal_(0, 0.05, generator=g)
    return model


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", nargs=2, type=int, default=[224, 288])
    ap.add_argument("--batch-size", type=int, default=48, help="images per forward (default 48 = 16 x 3 views)")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--options", nargs="+", choices=OPTIONS, default=list(OPTIONS))
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.batch_size < 3 or args.batch_size % 3:
        ap.error("--batch-size must be a multiple of 3 (source, weak and strong views of each image)")

    import torch

    from crl_uiqa.losses import LossWeights, total_loss

    load0 = os.getloadavg()
    h, w = args.size
    bs = args.batch_size
    g = torch.Generator().manual_seed(1)
    x = torch.rand(bs, 1, h, w, generator=g)
    q = torch.rand(bs // 3, generator=g)
    rows, ref_scores = [], None
    for opt_name in args.options:
        model = _model((h, w))
        cl = not opt_name.endswith("nchw")
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = model.to(memory_format=fmt)
        xi = x.contiguous(memory_format=fmt)
        bf16 = "bf16" in opt_name
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        fwd = model
        t_compile = 0.0
        if opt_name.startswith("compile"):
            fwd = torch.compile(model)
        # inference
        model.eval()
        t0 = time.perf_counter()
        with torch.inference_mode(), ctx():
            s = fwd(xi).float()
        t_first = time.perf_counter() - t0
        with torch.inference_mode(), ctx():
            fwd(xi)
            t0 = time.perf_counter()
            for _ in range(args.reps):
                fwd(xi)
            ips = args.reps * bs / (time.perf_counter() - t0)
        if opt_name.startswith("compile"):
            t_compile += t_first
        if ref_scores is None:
            ref_scores = s
        diff = float((s - ref_scores).abs().max())
        # one training step: forward of the 3 views, loss on the head, backward, SGD
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        sgd = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

        def step(ctx=ctx, fwd=fwd, xi=xi, sgd=sgd):
            with ctx():
                out = fwd(xi).float()
            p, pw, ps = out.split(bs // 3)
            loss, _ = total_loss(p, q, pw, ps, 0.05, LossWeights(0.05, 0.1, 0.1))
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()

        t0 = time.perf_counter()
        step()
        t_first_step = time.perf_counter() - t0
        if opt_name.startswith("compile"):
            t_compile += t_first_step
        step()
        t0 = time.perf_counter()
        for _ in range(max(2, args.reps // 2)):
            step()
        s_step = (time.perf_counter() - t0) / max(2, args.reps // 2)
        rows.append({"option": opt_name, "forward_img_per_s": round(ips, 1), "train_s_per_step": round(s_step, 3),
                     "compile_s": round(t_compile, 1), "max_abs_score_diff_vs_fp32": round(diff, 5)})
        print(json.dumps(rows[-1]), flush=True)
    meta = {"date": str(date.today()), "machine": run_info.machine(), "size": [h, w], "batch_size": bs,
            "load_before": load0, "load_after": os.getloadavg(),
            "uptime_after": run_info.uptime(),
            "command": run_info.command("cpu_speed.py", argv)}
    (ROOT / "bench-out").mkdir(exist_ok=True)
    (ROOT / "bench-out" / "cpu_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
