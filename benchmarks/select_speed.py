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
and dropped. With ``--live-batch`` it times, per size and runtime, on the same
clip and with the same region frames (30): ``live --no-realtime`` in batches
of ``--batch-size``, ``live --no-realtime`` one frame per forward pass
(``--batch-size 1``, as it scored before batches) and ``select``, alternating
them ``--repeats`` times, and checks that their scores agree.

Model weights are random (speed does not depend on them). Usage::

    python benchmarks/select_speed.py                  # 60 s clip, everything
    python benchmarks/select_speed.py --seconds 20 --live
    python benchmarks/select_speed.py --sizes 112x144 --runtimes onnx
    python benchmarks/select_speed.py --seconds 10 --sizes 224x288 --runtimes torch --live-batch --repeats 2
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


def live_batch_rates(rt, video: Path, batch_size: int, repeats: int) -> dict:
    """Frames/s of ``live --no-realtime`` (batched, batch 1) and ``select`` on one clip, the same region frames.

    The three alternate ``repeats`` times (a shared machine's load drifts);
    each rate is end to end (decode + region + crop/resize + scoring), model
    already loaded. Also the largest score difference of each live run from
    ``select``'s scores.
    """
    from crl_uiqa.live import run_live
    from crl_uiqa.select import REGION_FRAMES, select_frames

    modes = {"select": None, f"live --no-realtime --batch-size {batch_size}": batch_size,
             "live --no-realtime --batch-size 1": 1}
    rates: dict[str, list[float]] = {m: [] for m in modes}
    diff = {m: 0.0 for m in modes}
    for _ in range(repeats):
        sel = select_frames(rt, video, batch_size=batch_size, region_frames=REGION_FRAMES)
        rates["select"].append(sel.frames_per_second)
        for mode, bs in modes.items():
            if bs is None:
                continue
            res = run_live(rt, video, realtime=False, batch_size=bs, region_frames=REGION_FRAMES)
            if list(res.frames) != list(sel.frames):
                raise SystemExit(f"{mode}: scored other frames than select")
            diff[mode] = max(diff[mode], float(np.max(np.abs(res.scores - sel.quality))))
            rates[mode].append(res.scored_per_second)
        load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else "?"
        print("# " + ", ".join(f"{m}: {r[-1]:.1f}/s" for m, r in rates.items()) + f" (load {' '.join(load)})",
              flush=True)
    return {"frames": int(sel.n_scored), "rates": rates, "max_abs_diff": diff}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="clip length (default 60)")
    ap.add_argument("--fps", type=int, default=30, help="clip frame rate (default 30)")
    ap.add_argument("--sizes", nargs="+", default=["224x288", "112x144"], help="model image sizes HxW")
    ap.add_argument("--runtimes", nargs="+", default=["torch", "torchscript", "onnx"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: cores)")
    ap.add_argument("--video", default=None, help="reuse this video instead of building one")
    ap.add_argument("--live", action="store_true", help="also play the clip in real time through `live`")
    ap.add_argument("--live-batch", action="store_true",
                    help="also time live --no-realtime batched vs batch 1 vs select on the clip")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of the --live-batch timings (default 1)")
    ap.add_argument("--json", default=None, help="write the results here")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    import _run_info as run_info
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
    print(f"# {run_info.command('select_speed.py', argv)}\n# {run_info.machine()}\n# {run_info.uptime()}", flush=True)
    dec = decode_rate(video)
    print(f"# decode only: {dec:.0f} frames/s", flush=True)

    rows, batched = [], []
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
            if args.live_batch:
                batched.append({"size": size_text, "runtime": kind,
                                **live_batch_rates(rt, video, args.batch_size, args.repeats)})

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

    if batched:
        print()
        print(f"| size | runtime | command | frames/s (median of {args.repeats}) | range | vs select | "
              "max abs score diff vs select |")
        print("|---|---|---|---:|---|---:|---:|")
        for b in batched:
            ref = float(np.median(b["rates"]["select"]))
            for mode, r in b["rates"].items():
                med = float(np.median(r))
                diff = "-" if mode == "select" else f"{b['max_abs_diff'][mode]:.1g}"
                print(f"| {b['size']} | {b['runtime']} | `{mode}` | {med:.1f} | {min(r):.1f}-{max(r):.1f} | "
                      f"{med / ref:.2f}x | {diff} |")
        print(f"# {run_info.uptime()}", flush=True)

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
        Path(args.json).write_text(json.dumps({"decode_fps": dec, "rows": rows, "live": live, "live_batch": batched,
                                               "threads": threads, "load": load}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
