"""Time and memory of the pseudo-label distances (paper Eq. 1) as the image set grows.

:func:`crl_uiqa.pseudo_labels.topk_mean_distance` on m = 10^4, 10^5, 10^6
synthetic 128-d float32 embeddings (the size of SonoNet-16's block5) against
45 references, k = 5. Each m runs in a fresh Python process so that its peak
resident memory (``ru_maxrss``) is its own; the report gives the peak, the
memory held by the embeddings themselves (m x 128 x 4 bytes) and the peak
beyond what the process held just before the call (the working memory of the
chunked computation, ``O(chunk_size x n)``). Time should grow linearly in m.

Prints a Markdown table and writes ``bench-out/distance_scaling.json``.

Usage::

    python benchmarks/distance_scaling.py [--sizes 10000 100000 1000000] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_REFERENCES = 45
DIM = 128
K = 5


def _rss_mib() -> float:
    """Current resident memory of this process, MiB (Linux /proc)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def measure_one(m: int, threads: int, repeats: int = 3) -> dict:
    """Run in a child process: generate m embeddings and time topk_mean_distance."""
    import numpy as np
    import torch

    from crl_uiqa.pseudo_labels import topk_mean_distance

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((N_REFERENCES, DIM), dtype=np.float32)
    x = np.empty((m, DIM), dtype=np.float32)
    for start in range(0, m, 100_000):  # no float64 temporary of the whole set
        x[start:start + 100_000] = rng.standard_normal((min(100_000, m - start), DIM), dtype=np.float32)
    topk_mean_distance(x[:1000], refs, K)  # warm-up (thread pool, kernels)
    rss_before = _rss_mib()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        d = topk_mean_distance(x, refs, K)
        times.append(time.perf_counter() - t0)
    peak = _maxrss_mib()
    assert d.shape == (m,) and np.isfinite(d).all()
    return {"m": m, "n_references": N_REFERENCES, "dim": DIM, "k": K, "threads": threads,
            "seconds": min(times), "seconds_all": times, "rows_per_s": m / min(times),
            "embeddings_mib": x.nbytes / 2**20, "rss_before_mib": rss_before, "peak_rss_mib": peak,
            "peak_extra_mib": peak - rss_before}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "distance_scaling.json"))
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure_one(args.child, args.threads)))
        return 0
    rows = []
    for m in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--child", str(m), "--threads", str(args.threads)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"\n## topk_mean_distance: m x {DIM} float32 vs {N_REFERENCES} references, k={K}, "
          f"{args.threads} thread(s), best of 3\n")
    print("| m | seconds | rows/s | time / time(m0) x m0/m | embeddings MiB | peak RSS MiB | peak beyond data MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        linear = (r["seconds"] / base["seconds"]) * (base["m"] / r["m"])
        r["time_ratio_to_linear"] = linear
        print(f"| {r['m']:,} | {r['seconds']:.3f} | {r['rows_per_s']:,.0f} | {linear:.2f} | "
              f"{r['embeddings_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['peak_extra_mib']:.0f} |")
    from crl_uiqa.files import write_json

    write_json(args.out, {"rows": rows})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
