"""Speed of the Table-2 baselines on 224x288 ultrasound-sized images.

Times BRISQUE, NIQE, MSSIM (against 45 references, the paper's n) and SER-FIQ
(T stochastic passes, default 100) on N images, and for SER-FIQ also a plain
SonoNet-16 forward pass over the same images, to report how many full forward
passes one SER-FIQ score costs. Images: HC18 fetal head planes resized to
224x288 when ``shared/data/hc18`` is present (or ``--hc18 DIR``), otherwise
synthetic speckle images (a smooth anatomy-like pattern times Rayleigh speckle).

Prints a Markdown table and writes ``bench-out/baselines_speed.json``.

Usage::

    python benchmarks/baselines_speed.py            # N = 1000
    python benchmarks/baselines_speed.py --n 200    # quicker; the table also extrapolates to 1000
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = (224, 288)


def synthetic_images(n: int, seed: int) -> list[np.ndarray]:
    """Speckle-like images: a smooth random pattern times unit-mean Rayleigh speckle, in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tissue = gaussian_filter(rng.random(SIZE), 12)
        tissue = (tissue - tissue.min()) / (np.ptp(tissue) + 1e-9)
        speckle = rng.rayleigh(1.0, SIZE) / np.sqrt(np.pi / 2)
        out.append(np.clip(0.6 * tissue * speckle, 0, 1).astype(np.float32))
    return out


def hc18_images(folder: Path, start: int, n: int) -> list[np.ndarray]:
    from crl_uiqa.io import read_gray, to_tensor

    paths = sorted(folder.glob("*.png"))[start : start + n]
    if len(paths) < n:
        raise SystemExit(f"{folder} holds fewer than {start + n} images")
    return [to_tensor(read_gray(p), SIZE)[0].numpy() for p in paths]


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def forward_seconds(images, weights, batch_size: int) -> float:
    """Wall time of one plain SonoNet-16 forward pass (logits) over ``images``."""
    import torch

    from crl_uiqa.backbones import get_backbone
    from crl_uiqa.io import to_tensor

    net = get_backbone("sononet16", weights)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.stack([to_tensor(im, SIZE) for im in images[i : i + batch_size]])
            net(x)
    return time.perf_counter() - t0


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="images to score (default 1000)")
    ap.add_argument("--references", type=int, default=45, help="MSSIM reference images (default 45, the paper's n)")
    ap.add_argument("--passes", type=int, default=100, help="SER-FIQ stochastic passes T (default 100)")
    ap.add_argument("--methods", default="brisque,niqe,mssim,serfiq", help="comma list (default all four)")
    ap.add_argument("--hc18", default=None, help="HC18 images folder (default: shared/data/hc18/images if present)")
    ap.add_argument("--synthetic", action="store_true", help="use synthetic speckle images even if HC18 is present")
    ap.add_argument("--weights", default=None, help="SonoNet16.npz (default: shared/weights/sononet or the cache)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--batch-size", type=int, default=16, help="SonoNet batch size (default 16)")
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "baselines_speed.json"), help="JSON output")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    from crl_uiqa.baselines import run_baseline
    from crl_uiqa.files import write_json

    torch.set_num_threads(args.threads)
    shared = Path(os.environ.get("CRL_UIQA_SHARED", ROOT.parent / "shared"))
    weights = args.weights or (shared / "weights" / "sononet" / "SonoNet16.npz")
    if not Path(weights).exists():
        weights = None  # resolved by crl_uiqa.weights (env, cache, download)
    hc18 = Path(args.hc18) if args.hc18 else shared / "data" / "hc18" / "images"
    if not args.synthetic and hc18.is_dir():
        source = f"HC18 ({hc18}), resized to {SIZE[0]}x{SIZE[1]}"
        images = hc18_images(hc18, 0, args.n)
        refs = hc18_images(hc18, args.n, args.references)
    else:
        source = f"synthetic speckle {SIZE[0]}x{SIZE[1]}"
        images = synthetic_images(args.n, 0)
        refs = synthetic_images(args.references, 1)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results = []
    for m in methods:
        kw: dict = {}
        note = ""
        if m == "mssim":
            kw = {"references": refs}
            note = f"vs {len(refs)} references"
        elif m == "serfiq":
            kw = {"weights": str(weights) if weights else None, "device": "cpu", "passes": args.passes,
                  "batch_size": args.batch_size}
        print(f"timing {m} on {len(images)} images ...", file=sys.stderr, flush=True)
        secs, _ = timed(run_baseline, m, images, **kw)
        row = {"method": m, "images": len(images), "seconds": secs, "images_per_s": len(images) / secs,
               "ms_per_image": 1000 * secs / len(images), "seconds_per_1000": 1000 * secs / len(images), "note": note}
        if m == "serfiq":
            fwd = forward_seconds(images, str(weights) if weights else None, args.batch_size)
            row["forward_seconds"] = fwd
            row["equivalent_forward_passes"] = secs / fwd
            row["note"] = (f"T={args.passes}; = {secs / fwd:.2f} full SonoNet forward passes per image "
                           f"(one forward: {1000 * fwd / len(images):.1f} ms/image)")
        results.append(row)

    lines = [
        f"Images: {source}; N = {len(images)}; torch threads = {args.threads}; CPU: {platform.processor() or platform.machine()}",
        "",
        "| method | images/s | ms/image | s for N | s per 1000 (extrapolated) | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['method']} | {r['images_per_s']:.1f} | {r['ms_per_image']:.1f} | {r['seconds']:.1f} | "
                     f"{r['seconds_per_1000']:.0f} | {r['note']} |")
    print("\n".join(lines))
    write_json(args.out, {"source": source, "n": len(images), "threads": args.threads, "passes": args.passes,
                          "references": len(refs), "python": platform.python_version(),
                          "torch": torch.__version__, "results": results})
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
