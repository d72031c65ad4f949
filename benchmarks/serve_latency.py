"""Time from upload to result of ``crl-uiqa serve`` for a 1-minute 30 fps scan, beside ``select`` alone.

Builds the simulated 640 x 480 H.264 sweep capture of ``select_speed.py`` (60 s at 30 fps =
1800 frames by default), then

1. **select**: :func:`crl_uiqa.video.select.select_frames` + ``write_selection`` on the file,
   in-process (the engine alone, model already loaded);
2. **serve (HTTP)**: a real uvicorn server on 127.0.0.1 (in a thread); an HTTP client uploads
   the file to ``POST /api/scans`` (multipart) and polls ``GET /api/scans/{id}`` every 0.2 s
   until the result is there. Reported: upload time, time until the result, and the engine's
   own time inside the job;
3. with ``--screenshot PNG``: the same upload through the page in headless Chromium (system
   browser via Playwright), timed from choosing the file to the curve being drawn, then a
   screenshot of the page (the README's picture).

Torch uses ``--threads`` threads (default 2: the target machine). The load average is printed
before and after, since the machine may be shared. Model weights are random unless ``--model``
names a run (speed does not depend on them); ``--plane-weights`` adds the abdominal plane check.

Usage::

    python benchmarks/serve_latency.py                                   # 60 s, 224x288, random weights
    python benchmarks/serve_latency.py --size 112x144
    python benchmarks/serve_latency.py --model demo/model --plane-weights SonoNet16.npz \\
        --screenshot docs/serve_page.png
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # tests/_browser.py: the system-Chromium launcher


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def start_server(app):
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    return srv, thread, sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def over_http(url: str, scan: Path, options: dict) -> dict:
    import httpx

    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as client, open(scan, "rb") as f:
        r = client.post("/api/scans", files={"files": (scan.name, f, "video/mp4")}, data=options)
        r.raise_for_status()
        t_up = time.perf_counter() - t0
        jid = r.json()["id"]
        while True:
            body = client.get(f"/api/scans/{jid}").json()
            if body["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.2)
        t_done = time.perf_counter() - t0
        if body["status"] != "done":
            raise SystemExit(f"the job {body['status']}: {body['message']}")
        client.get(body["result"]["downloads"]["frames.csv"]).raise_for_status()
    return {"upload": t_up, "result": t_done, "engine": body["result"]["seconds"],
            "job": body["finished"] - body["started"], "frames": body["result"]["frames_scored"]}


def in_browser(url: str, scan: Path, shot: Path, plane: str | None, top_k: int) -> float:
    from playwright.sync_api import sync_playwright

    import _browser

    reason = _browser.missing_reason()
    if reason:
        raise SystemExit(f"no headless browser for --screenshot: {reason}")
    with sync_playwright() as pw:
        browser = _browser.launch(pw)
        page = _browser.open_page(browser, url + "/", width=1280, height=1000)
        page.wait_for_selector("#limits:not(:empty)")
        page.fill("#top-k", str(top_k))
        page.fill("#min-gap", "2")
        if plane:
            page.select_option("#plane", plane)
        t0 = time.perf_counter()
        page.set_input_files("#file-input", str(scan))
        page.wait_for_selector("#result[data-status=done] #curve", timeout=600_000)
        seconds = time.perf_counter() - t0
        page.wait_for_function("() => [...document.querySelectorAll('#picks img, #viewer img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        problems = _browser.check_page(page, allowed_origin=url)
        if problems:
            print("# page problems:", *problems, sep="\n#   ")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    return seconds


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--size", default="224x288", help="model input H x W when --model is not given")
    ap.add_argument("--model", default=None, help="a run folder (default: random weights at --size)")
    ap.add_argument("--plane-weights", default=None, help="SonoNet16.npz: adds the abdominal plane check")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--screenshot", default=None, metavar="PNG")
    ap.add_argument("--skip-select", action="store_true", help="skip the in-process select timing")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    import torch
    from select_speed import make_capture, parse_size

    from crl_uiqa.runtime import load_runtime
    from crl_uiqa.serving import ServeSettings, create_app
    from crl_uiqa.serving.models import PlaneChecker
    from crl_uiqa.video.select import select_frames, write_selection

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    print(f"# {load()} (start); torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores")
    scan = make_capture(tmp / "sweep.mp4", args.seconds, args.fps)
    if args.model:
        run = Path(args.model)
    else:
        from crl_uiqa.model import ModelConfig, build_model
        from crl_uiqa.training import save_model

        torch.manual_seed(0)
        run = tmp / "run"
        save_model(build_model(ModelConfig(image_size=parse_size(args.size)), pretrained=False), run)
    runtime = load_runtime(run, "auto")
    planes = PlaneChecker(args.plane_weights) if args.plane_weights else PlaneChecker.off()
    plane = planes.check("abdominal") if planes.available else None  # the class name the page lists
    print(f"# model {run} at {runtime.image_size[0]}x{runtime.image_size[1]} ({runtime.kind}); plane check "
          f"{plane or 'off'}")

    # warm-up (first-call costs of torch and the decoder), not timed
    select_frames(runtime, scan, every=max(1, int(args.fps * args.seconds) // 40))
    rows = []
    if not args.skip_select:
        t0 = time.perf_counter()
        res = select_frames(runtime, scan, top_k=args.top, min_gap=2.0, plane=plane, plane_model=planes.model)
        write_selection(res, tmp / "select")
        rows.append(("select (in-process, model loaded)", time.perf_counter() - t0, None, res.n_scored))
        print(f"# select: {rows[-1][1]:.1f} s ({load()})", flush=True)

    app = create_app([("model", runtime)], planes=planes, settings=ServeSettings())
    srv, thread, sock, url = start_server(app)
    try:
        opts = {"top_k": str(args.top), "min_gap": "2"}
        if plane:
            opts["plane"] = plane
        r = over_http(url, scan, opts)
        rows.append(("serve: HTTP upload -> result", r["result"], r, r["frames"]))
        print(f"# serve over HTTP: upload {r['upload']:.2f} s, result after {r['result']:.1f} s (job {r['job']:.1f} s, "
              f"engine {r['engine']:.1f} s) ({load()})", flush=True)
        if args.screenshot:
            t = in_browser(url, scan, Path(args.screenshot), plane, args.top)
            rows.append(("serve: page, file chosen -> curve drawn", t, None, r["frames"]))
            print(f"# page: {t:.1f} s; screenshot {args.screenshot} ({load()})", flush=True)
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n| what | frames | seconds | frames/s |\n|---|---|---|---|")
    for name, sec, _, n in rows:
        print(f"| {name} | {n} | {sec:.1f} | {n / sec:.1f} |")
    print(f"\n# {load()} (end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
