"""End-to-end speed of ``crl-uiqa select`` on the CPU, per runtime and image size.

Builds a simulated 30 fps fetal-ultrasound capture (a freehand sweep from
:func:`crl_uiqa.data.simulate.simulate_sweep`, scan-converted fan placed on a
640 x 480 "screen" with static vendor text and a grey bar, H.264 encoded),
then for each image size (default 224x288 and 112x144) and each runtime
(PyTorch eager, TorchScript, ONNX Runtime) measures:

* the **bare model rate**: frames/s of the runtime alone on ready-made
  batches at the model's size (no decode, no resize);
* the **select rate**: frames/s of :func:`crl_uiqa.select.select_frames`
  end to end (decode + region detection + crop + resize + scoring + picks),
  excluding model loading and export;

and prints a Markdown table with the targets (select at 112x144 >= 120
frames/s; select at 224x288 >= 80 % of the bare model rate). With ``--live``
it also plays the clip in real time through :func:`crl_uiqa.live.run_live`
(PyTorch eager at 224x288, the default) and reports frames received, scored
and dropped.

Model weights are random (speed does not depend on them). Usage::

    python benchmarks/select_speed.py                  # 60 s clip, everything
    python benchmarks/select_speed.py --seconds 20 --live
    python benchmarks/select_speed.py --sizes 112x144 --runtimes onnx
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def make_capture(path: Path, seconds: float, fps: int, seed: int = 0) -> Path:
    """A simulated sweep as an H.264 screen capture (fan + static overlays), ``seconds`` long."""
    import av
    from PIL import Image

    from crl_uiqa.data.simulate import simulate_sweep

    n = int(round(seconds * fps))
    t0 = time.perf_counter()
    frames, _ = simulate_sweep("abdomen", n, seed=seed, size=(256, 320))
    canvas_h, canvas_w, top, left = 480, 640, 60, 80
    rng = np.random.default_rng(seed)
    text = (rng.random((10, 180)) > 0.5) * 230
    bar = np.linspace(255, 0, 200)[:, None]
    container = av.open(str(path), "w", options={"movflags": "+faststart"})
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = canvas_w, canvas_h, "yuv420p"
    stream.options = {"preset": "veryfast", "crf": "20"}
    for f in frames:
        img = np.zeros((canvas_h, canvas_w), np.uint8)
        fan = Image.fromarray(np.round(f * 255).astype(np.uint8)).resize((480, 384), Image.Resampling.BILINEAR)
        img[top : top + 384, left : left + 480] = np.asarray(fan)
        img[10:20, 10:190] = text
        img[100:300, 600:610] = bar
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="gray")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    print(f"# built {path.name}: {n} frames ({seconds:g} s at {fps} fps, 640x480 H.264) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return path


def bare_rate(rt, size, batch_size: int, min_seconds: float = 3.0) -> float:
    """Frames/s of the runtime alone on random batches (after one warm-up batch)."""
    import torch

    x = torch.rand(batch_size, 1, *size, generator=torch.Generator().manual_seed(0))
    rt(x)
    n, t0 = 0, time.perf_counter()
    while True:
        rt(x)
        n += batch_size
        dt = time.perf_counter() - t0
        if dt >= min_seconds and n >= 2 * batch_size:
            return n / dt


def decode_rate(video: Path) -> float:
    """Frames/s of decoding + gray conversion alone (no region, no model)."""
    from crl_uiqa.scan import open_scan

    t0, n = time.perf_counter(), 0
    for _ in open_scan(video):
        n += 1
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="clip length (default 60)")
    ap.add_argument("--fps", type=int, default=30, help="clip frame rate (default 30)")
    ap.add_argument("--sizes", nargs="+", default=["224x288", "112x144"], help="model image sizes HxW")
    ap.add_argument("--runtimes", nargs="+", default=["torch", "torchscript", "onnx"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: cores)")
    ap.add_argument("--video", default=None, help="reuse this video instead of building one")
    ap.add_argument("--live", action="store_true", help="also play the clip in real time through `live`")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    import torch

    from crl_uiqa.export import cpu_cores, export_model, load_runtime
    from crl_uiqa.model import ModelConfig, build_model
    from crl_uiqa.select import select_frames
    from crl_uiqa.training import save_model

    threads = args.threads or cpu_cores()
    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="crl-uiqa-bench-"))
    video = Path(args.video) if args.video else make_capture(tmp / "sweep.mp4", args.seconds, args.fps)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# torch {torch.__version__}, {threads} thread(s), {os.cpu_count()} CPUs visible, "
          f"load average {load:.2f}", flush=True)
    dec = decode_rate(video)
    print(f"# decode only: {dec:.0f} frames/s", flush=True)

    rows = []
    for size_text in args.sizes:
        size = parse_size(size_text)
        torch.manual_seed(0)
        run = tmp / f"run_{size_text}"
        save_model(build_model(ModelConfig(image_size=size), pretrained=False), run)
        for kind in args.runtimes:
            if kind != "torch":
                t0 = time.perf_counter()
                res = export_model(run, run / ("model.onnx" if kind == "onnx" else "model.torchscript.pt"))
                print(f"# exported {kind} at {size_text} in {time.perf_counter() - t0:.1f} s "
                      f"(max |diff| {res.max_abs_diff:.2g})", flush=True)
            rt = load_runtime(run, kind, threads=threads)
            bare = bare_rate(rt, size, args.batch_size)
            sel = select_frames(rt, video, batch_size=args.batch_size, top_k=3, min_gap=1.0)
            row = {"size": size_text, "runtime": kind, "bare_fps": bare, "select_fps": sel.frames_per_second,
                   "ratio": sel.frames_per_second / bare, "frames": sel.n_scored, "region": sel.region.method}
            rows.append(row)
            print(f"# {size_text} {kind}: bare {bare:.1f}/s, select {sel.frames_per_second:.1f}/s "
                  f"({sel.n_scored} frames, region {sel.region.method} {sel.region.box.as_tuple()})", flush=True)

    print()
    print("| size | runtime | bare model (frames/s) | select end to end (frames/s) | select / bare | target |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        if r["size"] == "112x144":
            target = f"select >= 120/s: {'met' if r['select_fps'] >= 120 else 'NOT met'}"
        elif r["size"] == "224x288":
            target = f"select >= 80 % of bare: {'met' if r['ratio'] >= 0.8 else 'NOT met'}"
        else:
            target = ""
        print(f"| {r['size']} | {r['runtime']} | {r['bare_fps']:.1f} | {r['select_fps']:.1f} | "
              f"{100 * r['ratio']:.0f} % | {target} |")

    live = None
    if args.live:
        from crl_uiqa.live import run_live

        size = (224, 288)
        run = tmp / "run_live"
        torch.manual_seed(0)
        save_model(build_model(ModelConfig(image_size=size), pretrained=False), run)
        res = run_live(run, video, runtime="torch")
        live = {"received": res.received, "scored": res.scored, "dropped": res.dropped,
                "seconds": res.seconds, "scored_fps": res.scored_per_second}
        print()
        print(f"live (torch, 224x288, real time): {res.summary()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"decode_fps": dec, "rows": rows, "live": live,
                                               "threads": threads, "load": load}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
