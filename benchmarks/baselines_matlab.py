"""Agreement of crl-uiqa's BRISQUE and NIQE with the authors' MATLAB code.

The reference scores are those of the authors' released MATLAB code (LIVE:
``brisquescore.m`` with the LIVE ``allmodel``/``allrange`` through libsvm's
``svm-scale``/``svm-predict``; ``computequality.m`` with the LIVE
``modelparameters.mat``, 96 x 96 patches), run under GNU Octave; how they were
made is in ``benchmarks/data/matlab_reference_scores.csv``'s header and in
BENCHMARKS.md ("BRISQUE and NIQE against the MATLAB originals").

The image set is public and rebuilt deterministically by this script:

- 8-bit grayscale versions of scikit-image's bundled data images (colour
  images through MATLAB's ``rgb2gray`` weights, rounded);
- three HC18 fetal head frames (``/work/shared/data/hc18`` or
  ``$CRL_UIQA_SHARED/data/hc18``; skipped when absent);
- distorted versions of eight of them: Gaussian blur (sigma 1.5), additive
  Gaussian noise (sigma 15 grey levels, seeded) and JPEG (quality 15).

Usage::

    python benchmarks/baselines_matlab.py images --out bench-out/matlab-images
    # (reference scores: see BENCHMARKS.md)
    python benchmarks/baselines_matlab.py compare --images bench-out/matlab-images \\
        [--reference benchmarks/data/matlab_reference_scores.csv]

``compare`` prints, per method, Spearman's rho, the median and maximum
relative error of our scores against the reference ones, and the images
whose error exceeds 2 %.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_REFERENCE = HERE / "data" / "matlab_reference_scores.csv"

#: scikit-image data files used (all bundled with the wheel, no download).
SKIMAGE_FILES = (
    "camera.png", "moon.png", "coins.png", "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
    "brick.png", "grass.png", "gravel.png", "page.png", "text.png", "clock_motion.png", "motorcycle_left.png",
)
HC18_FILES = ("000_HC.png", "001_HC.png", "010_HC.png")
#: images that also get the three distortions
DISTORTED = ("camera", "moon", "astronaut", "chelsea", "coffee", "rocket", "hc18_000_HC", "hc18_001_HC")

# MATLAB rgb2gray weights (the exact values MATLAB documents)
_RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def _shared() -> Path | None:
    for cand in (os.environ.get("CRL_UIQA_SHARED"), "/work/shared", HERE.parent.parent / "shared"):
        if cand and (Path(cand) / "data" / "hc18" / "images").is_dir():
            return Path(cand)
    return None


def _to_gray_u8(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3:
        a = a[..., :3].astype(np.float64) @ _RGB2GRAY
        return np.clip(np.round(a), 0, 255).astype(np.uint8)
    return a.astype(np.uint8)


def base_images() -> dict[str, np.ndarray]:
    """name -> 8-bit grayscale image of the undistorted set."""
    import skimage
    from PIL import Image

    root = Path(skimage.__file__).parent / "data"
    out = {}
    for name in SKIMAGE_FILES:
        out[Path(name).stem] = _to_gray_u8(np.asarray(Image.open(root / name)))
    shared = _shared()
    if shared is None:
        print("HC18 not found (set CRL_UIQA_SHARED): the set has no ultrasound frames", file=sys.stderr)
    else:
        for name in HC18_FILES:
            out["hc18_" + Path(name).stem] = _to_gray_u8(np.asarray(Image.open(shared / "data/hc18/images" / name)))
    return out


def distort(name: str, img: np.ndarray) -> dict[str, np.ndarray]:
    """Blur, noise and JPEG versions of one 8-bit image (deterministic)."""
    import scipy.ndimage
    from PIL import Image

    x = img.astype(np.float64)
    seed = sum(name.encode())  # stable across runs and machines
    noise = np.random.default_rng([seed, 1]).normal(0.0, 15.0, size=x.shape)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=15)
    return {
        f"{name}_blur": np.clip(np.round(scipy.ndimage.gaussian_filter(x, 1.5)), 0, 255).astype(np.uint8),
        f"{name}_noise": np.clip(np.round(x + noise), 0, 255).astype(np.uint8),
        f"{name}_jpeg": np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L")),
    }


def build_images(out: Path) -> list[Path]:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    images = base_images()
    for name in DISTORTED:
        if name in images:
            images.update(distort(name, images[name]))
    paths = []
    for name, img in sorted(images.items()):
        p = out / f"{name}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    (out / "list.txt").write_text("".join(f"{p.name}\n" for p in paths))
    print(f"wrote {len(paths)} images to {out}")
    return paths


def read_reference(path: Path) -> dict[str, dict[str, float]]:
    """method -> image name -> reference score, from the CSV (``#`` lines are comments)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    ref: dict[str, dict[str, float]] = {}
    for r in rows:
        for method in ("brisque", "niqe"):
            if r.get(method) not in (None, "", "nan"):
                ref.setdefault(method, {})[r["image"]] = float(r[method])
    return ref


def compare(images: Path, reference: Path) -> dict[str, dict[str, float]]:
    import time

    from PIL import Image
    from scipy.stats import spearmanr

    from crl_uiqa.baselines import brisque_score, niqe_score

    ref = read_reference(reference)
    funcs = {"brisque": brisque_score, "niqe": niqe_score}
    summary = {}
    for method, values in ref.items():
        names = [n for n in sorted(values) if (images / n).is_file()]
        missing = sorted(set(values) - set(names))
        if missing:
            print(f"{method}: {len(missing)} reference images not in {images}: {', '.join(missing[:5])}...")
        imgs = [np.asarray(Image.open(images / n), dtype=np.float32) / 255.0 for n in names]
        t0 = time.perf_counter()
        ours = -funcs[method](imgs)  # back to the original lower-is-better values
        dt = time.perf_counter() - t0
        theirs = np.array([values[n] for n in names])
        rel = np.abs(ours - theirs) / np.abs(theirs)
        rho = spearmanr(ours, theirs).statistic
        summary[method] = {"n": len(names), "spearman": float(rho), "median_rel": float(np.median(rel)),
                           "max_rel": float(rel.max()), "seconds": dt}
        print(f"{method}: n={len(names)} Spearman {rho:.4f}  median rel. error {100 * np.median(rel):.3f} %  "
              f"max {100 * rel.max():.3f} %  ({dt:.1f} s)")
        for n, o, t, e in zip(names, ours, theirs, rel):
            if e > 0.02:
                print(f"   {n}: ours {o:.4f}  MATLAB {t:.4f}  ({100 * e:.2f} %)")
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("images", help="write the public image set as 8-bit PNGs")
    a.add_argument("--out", type=Path, default=Path("bench-out/matlab-images"))
    c = sub.add_parser("compare", help="score the set and compare with the reference scores")
    c.add_argument("--images", type=Path, default=Path("bench-out/matlab-images"))
    c.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "images":
        build_images(args.out)
    else:
        compare(args.images, args.reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
