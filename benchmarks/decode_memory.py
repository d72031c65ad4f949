"""Peak memory and time of decoding one large image to crl-uiqa's gray input, gray against colour.

Each measurement runs in a fresh Python process (its peak resident memory, ``VmHWM`` on Linux, is the
decode's plus the interpreter's, printed apart). Side by side for the same files:

* ``read_gray``: :func:`crl_uiqa.io.read_gray`, colour converted to float luma in bands of rows;
* ``pil_L``: what ``read_gray`` did for colour before 2026-12-02, PIL's 8-bit ``convert("L")`` then a
  float32 copy (luma rounded to whole gray levels);
* ``whole_F``: PIL's float conversion of the whole image at once (``convert("F")``, then a copy),
  the obvious way to the same float luma without bands.

Usage::

    python benchmarks/decode_memory.py [--side 7000] [--repeat 2]

The test images (random pixels, fast PNG compression) go to ``bench-out/decode_memory/``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

_CHILD = r"""
import sys, time
sys.path.insert(0, {src!r})
import numpy as np
from PIL import Image
from crl_uiqa.io import read_gray
method, path = sys.argv[1], sys.argv[2]
def hwm():  # this process's peak resident memory, kB (reset by exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
base = hwm()
t0 = time.perf_counter()
if method == "read_gray":
    a = read_gray(path)
elif method == "pil_L":
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255.0)
elif method == "whole_F":
    with Image.open(path) as im:
        a = np.asarray(im.convert("F")) / np.float32(255.0)
elif method != "none":
    raise SystemExit(f"unknown method {{method}}")
seconds = time.perf_counter() - t0
print(base, hwm(), seconds)
"""


def _measure(method: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD.format(src=str(ROOT / "src")), method, str(path)],
                         capture_output=True, text=True, check=True).stdout.split()
    base_kb, peak_kb, seconds = int(out[0]), int(out[1]), float(out[2])
    return {"baseline_mb": round(base_kb / 1024, 1), "peak_mb": round(peak_kb / 1024, 1),
            "seconds": round(seconds, 3)}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=7000, help="the images are SIDE x SIDE pixels")
    ap.add_argument("--repeat", type=int, default=2, help="runs per method and image (the lowest peak is kept)")
    return ap


def main(argv=None) -> int:
    import numpy as np
    from _run_info import command, machine, uptime
    from PIL import Image

    args = build_parser().parse_args(argv)
    out_dir = ROOT / "bench-out" / "decode_memory"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {"gray": out_dir / f"gray_{args.side}.png", "colour": out_dir / f"colour_{args.side}.png"}
    if not all(f.exists() for f in files.values()):
        rgb = (rng.random((args.side, args.side, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(files["colour"], compress_level=1)
        Image.fromarray(rgb[..., 0]).save(files["gray"], compress_level=1)
    info = {"date": str(date.today()), "machine": machine(), "load": uptime(),
            "command": command("decode_memory.py", argv), "side": args.side, "rows": []}
    info["interpreter"] = _measure("none", files["gray"])
    print(f"{'image':<8}{'method':<11}{'peak MB':>9}{'seconds':>9}")
    for kind, path in files.items():
        for method in ("read_gray", "pil_L", "whole_F"):
            if kind == "gray" and method != "read_gray":
                continue  # gray decodes the same way in all three
            runs = [_measure(method, path) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["peak_mb"])
            info["rows"].append({"image": kind, "method": method, **best})
            print(f"{kind:<8}{method:<11}{best['peak_mb']:>9.1f}{best['seconds']:>9.3f}")
    print(f"(the interpreter with crl_uiqa imported: {info['interpreter']['peak_mb']} MB)")
    (out_dir / "result.json").write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
