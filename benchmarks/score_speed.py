"""Speed of ``crl-uiqa score`` against the bare model forward rate, in one run.

End to end = list files + decode PNG (800x540 HC18) + resize in DataLoader
workers + forward. Bare = the network ``score`` runs (``prepare_model``: batch norm folded) on an in-memory batch.

Usage::

    python benchmarks/score_speed.py [--n 400] [--sizes 224x288 112x144] [--batch-size 32] [--amp bf16]

Also times, on one thread, what the decoding worker does per image (PNG
decode to float, antialiased resize), to say where the end-to-end rate goes:
on 2 cores the worker's CPU time is taken from the forward's two threads.
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


def _worker_costs(paths, size) -> dict:
    """Milliseconds per image, on one thread as in a DataLoader worker: decode (read_gray) and resize (to_tensor)."""
    import torch

    from crl_uiqa.io import read_gray, to_tensor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for p in paths[:5]:  # warm the file cache
            read_gray(p)
        t0 = time.perf_counter()
        arrs = [read_gray(p) for p in paths]
        t_dec = time.perf_counter() - t0
        t0 = time.perf_counter()
        for a in arrs:
            to_tensor(a, size)
        t_res = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    n = len(paths)
    return {"decode_ms": round(1000 * t_dec / n, 2), "resize_ms": round(1000 * t_res / n, 2),
            "worker_ms_per_image": round(1000 * (t_dec + t_res) / n, 2)}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hc18", default=None)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--sizes", nargs="+", default=["224x288", "112x144"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--head", choices=["anchored", "paper"], default="anchored",
                    help="anchored: the default model (trunk to block4 + correction head; random anchor, same "
                    "speed); paper: the paper's head on block5")
    ap.add_argument("--amp", choices=["off", "bf16"], default="off", help="bf16: bfloat16 autocast on the CPU")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    from crl_uiqa.devices import prepare_model
    from crl_uiqa.io import list_images
    from crl_uiqa.model import ModelConfig, build_model
    from crl_uiqa.scoring import score_paths

    shared = Path(os.environ.get("CRL_UIQA_SHARED", ROOT.parent / "shared"))
    hc18 = Path(args.hc18) if args.hc18 else shared / "data" / "hc18"
    if not (hc18 / "images").is_dir():
        sys.exit(f"HC18 images not found under {hc18} (set CRL_UIQA_SHARED or --hc18)")
    paths = list_images(hc18 / "images")[: args.n]
    amp = "bf16" if args.amp == "bf16" else False
    load0 = os.getloadavg()
    rows = []
    for spec in args.sizes:
        h, w = (int(v) for v in spec.split("x"))
        if args.head == "anchored":
            from cpu_speed import _model

            model = _model((h, w)).eval()
        else:
            model = build_model(ModelConfig(image_size=(h, w)), pretrained=False).eval()
        bare_net = prepare_model(model, torch.device("cpu"))  # the network score runs (batch norm folded)
        x = torch.rand(args.batch_size, 1, h, w).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(amp)):
            bare_net(x)
            reps = max(2, (args.n // args.batch_size))
            t0 = time.perf_counter()
            for _ in range(reps):
                bare_net(x)
            bare = reps * args.batch_size / (time.perf_counter() - t0)
        score_paths(model, paths[: args.batch_size * 2], batch_size=args.batch_size, progress=False,
                    amp=amp)  # warm-up
        t0 = time.perf_counter()
        res = score_paths(model, paths, batch_size=args.batch_size, progress=False, amp=amp)
        e2e = len(res.paths) / (time.perf_counter() - t0)
        worker = _worker_costs(paths[:100], (h, w))
        rows.append({"size": spec, "amp": args.amp, "bare_img_per_s": round(bare, 1), "score_img_per_s": round(e2e, 1),
                     "ratio": round(e2e / bare, 3), "images": len(res.paths), **worker,
                     # forward = 2 threads for 1/bare s; the worker's CPU time comes out of the same 2 cores
                     "ratio_if_cpu_bound": round((2000 / bare) / (2000 / bare + worker["worker_ms_per_image"]), 3)})
        print(f"{spec}: bare {bare:.1f} img/s, score end to end {e2e:.1f} img/s ({e2e / bare:.0%}); worker per "
              f"image {worker}", flush=True)
    meta = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads", "batch_size": args.batch_size,
            "command": "python benchmarks/score_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "load_before": load0, "load_after": os.getloadavg()}
    (ROOT / "bench-out").mkdir(exist_ok=True)
    (ROOT / "bench-out" / "score_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
