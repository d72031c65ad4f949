"""The development protocol: a reproducible split of HC18 and degraded test pairs.

HC18 (999 fetal head standard planes, 806 subjects) has no quality labels, so
crl-uiqa is developed on pairs whose order is known by construction: a held-out
clean image is better than the same image degraded, and a mildly degraded image
is better than a severely degraded one.

Split (seed 0 by default), by subject: ``NNN_HC.png``, ``NNN_2HC.png``,
``NNN_3HC.png``... are one subject ``NNN`` and always land on the same side.
Subjects are shuffled with ``numpy.random.default_rng(seed)`` and dealt in that
order: a subject goes to the references while it fits in 45 images, else to the
held-out test set while it fits in 200 images, else to the training pool. The
result is exactly 45 references (the paper's n), 200 test images and 754
training images.

Degradations of each test image (at its native 800 x 540 resolution, gray in
[0, 1], written as 8-bit PNG; ``PARAMS`` holds the numbers):

=================  =====================================  ==============  ===============
type               operation                              mild            severe
=================  =====================================  ==============  ===============
gaussian_noise     x + N(0, sigma^2), clipped to [0, 1]   sigma 0.04      sigma 0.12
jpeg               PIL JPEG encode/decode, quality q      q 25            q 6
contrast           m + c (x - m), m = image mean          c 0.5           c 0.25
gamma              x ** gamma (brightens, washes out)     gamma 0.6       gamma 0.35
gaussian_blur      Gaussian filter, sigma in pixels       sigma 2.0       sigma 5.0
motion_blur        line kernel of L pixels, angle a       L 15            L 41
=================  =====================================  ==============  ===============

The noise of image ``i`` (its position in ``test.txt``) is drawn from
``default_rng([seed, i, 1])`` and the motion angle ``a`` (uniform in [0, 180)
degrees, the same for both severities) from ``default_rng([seed, i, 2])``.
The motion kernel is :func:`kornia.filters.get_motion_kernel2d`, applied with
reflect padding by FFT convolution (identical to
:func:`kornia.filters.motion_blur` to 1e-6, ten times faster); the Gaussian
blur is :func:`scipy.ndimage.gaussian_filter` (reflect border).

Note: SonoNet standardises each image by its own mean and standard deviation,
so a linear contrast change is invisible to it up to 8-bit quantisation;
``contrast`` is kept to show that limit.

For each test image and type there are three pairs: clean > mild,
mild > severe, clean > severe. The first four types form the main set; the
blur types (the strongly augmented views of the paper's co-learning) are
reported separately (:data:`BLUR_TYPES`).

Output folder (``--out``, default ``bench-out/dev`` in the repository)::

    clean/NNN_HC.png                  copies of the 200 held-out test images
    <type>/<mild|severe>/NNN_HC.png   their degraded versions
    pairs.csv                         better,worse,type (paths relative to this folder)
    references.txt train.txt test.txt absolute paths of the HC18 images, one a line
    split.json                        seed and the file names of each set
    manifest.json                     written last; a complete folder is reused as is

``pairs.csv`` is read by ``crl-uiqa evaluate --pairs`` and
:func:`crl_uiqa.evaluation.evaluate_files` (relative paths resolve against the
CSV's folder). Other benchmarks import :func:`build_dev_protocol`.

Usage::

    python benchmarks/dev_protocol.py [--hc18 DIR] [--out DIR] [--seed 0] [--force]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from crl_uiqa.files import write_csv, write_json, write_text  # noqa: E402
from crl_uiqa.io import read_gray, write_gray_png  # noqa: E402

PROTOCOL_VERSION = 1
N_REFERENCES = 45
N_TEST = 200
SEVERITIES = ("mild", "severe")
MAIN_TYPES = ("gaussian_noise", "jpeg", "contrast", "gamma")
BLUR_TYPES = ("gaussian_blur", "motion_blur")
TYPES = MAIN_TYPES + BLUR_TYPES
PARAMS: dict[str, dict[str, float]] = {
    "gaussian_noise": {"mild": 0.04, "severe": 0.12},  # noise standard deviation
    "jpeg": {"mild": 25, "severe": 6},  # JPEG quality
    "contrast": {"mild": 0.5, "severe": 0.25},  # contrast factor around the mean
    "gamma": {"mild": 0.6, "severe": 0.35},  # exponent
    "gaussian_blur": {"mild": 2.0, "severe": 5.0},  # sigma, pixels
    "motion_blur": {"mild": 15, "severe": 41},  # kernel length, pixels
}
_SUBJECT = re.compile(r"^(\d+)_(\d*)HC\.png$", re.IGNORECASE)


@dataclass
class DevProtocol:
    """A built development protocol (all paths absolute).

    Attributes
    ----------
    out_dir, hc18_dir:
        the output folder and the HC18 folder (holding ``images/``).
    seed:
        the split seed.
    references, train, test:
        HC18 image paths of the 45 references, the training pool and the 200
        held-out test images (clean originals).
    pairs_csv:
        ``better,worse,type`` CSV, paths relative to ``out_dir``.
    pair_images:
        every image named in the pairs (clean copies first, then degraded), sorted.
    """

    out_dir: Path
    hc18_dir: Path
    seed: int
    references: list[str]
    train: list[str]
    test: list[str]
    pairs_csv: Path
    pair_images: list[str] = field(default_factory=list)

    def pairs(self, types: tuple[str, ...] | None = None) -> list[tuple[str, str, str]]:
        """The pairs as absolute ``(better, worse, type)`` paths, optionally only some types."""
        from crl_uiqa.evaluation import read_pairs

        out = []
        for b, w, t in read_pairs(self.pairs_csv):
            if types is None or t in types:
                out.append((str(self.out_dir / b), str(self.out_dir / w), t))
        return out


# --------------------------------------------------------------------------- split
def subject_of(filename: str) -> str:
    """Subject id ``NNN`` of an HC18 file name ``NNN_HC.png`` / ``NNN_2HC.png``."""
    m = _SUBJECT.match(filename)
    if not m:
        raise ValueError(f"not an HC18 image name (NNN_HC.png or NNN_kHC.png): {filename}")
    return m.group(1)


def split_subjects(filenames: list[str], seed: int = 0, n_references: int = N_REFERENCES,
                   n_test: int = N_TEST) -> dict[str, list[str]]:
    """Split HC18 file names into references, test and train, keeping subjects together.

    Returns ``{"references": [...], "test": [...], "train": [...]}``, each sorted.
    """
    groups: dict[str, list[str]] = {}
    for name in sorted(filenames):
        groups.setdefault(subject_of(name), []).append(name)
    subjects = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(subjects))
    out: dict[str, list[str]] = {"references": [], "test": [], "train": []}
    for i in order:
        members = groups[subjects[i]]
        if len(out["references"]) + len(members) <= n_references:
            out["references"].extend(members)
        elif len(out["test"]) + len(members) <= n_test:
            out["test"].extend(members)
        else:
            out["train"].extend(members)
    if len(out["references"]) != n_references or len(out["test"]) != n_test:
        raise ValueError(f"could not fill {n_references} references and {n_test} test images from "
                         f"{len(filenames)} files")
    return {k: sorted(v) for k, v in out.items()}


# --------------------------------------------------------------------------- degradations
def _motion_kernel(length: int, angle: float) -> np.ndarray:
    import torch
    from kornia.filters import get_motion_kernel2d

    with torch.no_grad():
        return get_motion_kernel2d(int(length), float(angle), 0.0)[0].double().numpy()


def degrade(image: np.ndarray, kind: str, severity: str, *, seed: int = 0, index: int = 0) -> np.ndarray:
    """Degrade a gray [0, 1] image by ``kind`` at ``severity`` (see the module docstring).

    ``seed`` and ``index`` (the image's position in the test list) fix the
    random parts (noise, motion angle).
    """
    from PIL import Image
    from scipy import ndimage, signal

    x = np.asarray(image, dtype=np.float64)
    p = PARAMS[kind][severity]
    if kind == "gaussian_noise":
        y = x + np.random.default_rng([seed, index, 1]).normal(0.0, p, size=x.shape)
    elif kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), mode="L").save(
            buf, format="JPEG", quality=int(p))
        buf.seek(0)
        with Image.open(buf) as im:
            y = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    elif kind == "contrast":
        m = x.mean()
        y = m + p * (x - m)
    elif kind == "gamma":
        y = np.clip(x, 0, 1) ** p
    elif kind == "gaussian_blur":
        y = ndimage.gaussian_filter(x, sigma=p, mode="reflect")
    elif kind == "motion_blur":
        angle = float(np.random.default_rng([seed, index, 2]).uniform(0.0, 180.0))
        k = _motion_kernel(int(p), angle)
        r = k.shape[0] // 2
        # filter2d is a correlation: convolve with the flipped kernel
        y = signal.fftconvolve(np.pad(x, r, mode="reflect"), k[::-1, ::-1], mode="valid")
    else:
        raise ValueError(f"unknown degradation {kind!r}; choose from {', '.join(TYPES)}")
    return np.clip(y, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- build
def default_hc18_dir() -> Path:
    """``$CRL_UIQA_SHARED/data/hc18`` or ``../shared/data/hc18`` beside the repository."""
    shared = os.environ.get("CRL_UIQA_SHARED")
    base = Path(shared) if shared else ROOT.parent / "shared"
    return base / "data" / "hc18"


def default_out_dir() -> Path:
    return ROOT / "bench-out" / "dev"


def _image_dir(hc18_dir: Path) -> Path:
    d = hc18_dir / "images" if (hc18_dir / "images").is_dir() else hc18_dir
    if not d.is_dir() or not any(d.glob("*HC.png")):
        raise FileNotFoundError(
            f"HC18 images not found in {hc18_dir} (expected {hc18_dir}/images/NNN_HC.png); "
            "give --hc18 DIR or set CRL_UIQA_SHARED to the shared/ folder")
    return d


def _relative_files(split: dict[str, list[str]]) -> list[str]:
    files = [f"clean/{n}" for n in split["test"]]
    for t in TYPES:
        for s in SEVERITIES:
            files += [f"{t}/{s}/{n}" for n in split["test"]]
    return sorted(files)


def _pair_rows(test: list[str]) -> list[tuple[str, str, str]]:
    rows = []
    for t in TYPES:
        for n in test:
            clean, mild, severe = f"clean/{n}", f"{t}/mild/{n}", f"{t}/severe/{n}"
            rows += [(clean, mild, t), (mild, severe, t), (clean, severe, t)]
    return rows


def _manifest(hc18_dir: Path, seed: int, split: dict[str, list[str]]) -> dict:
    return {
        "protocol_version": PROTOCOL_VERSION,
        "hc18_dir": str(hc18_dir),
        "seed": seed,
        "params": PARAMS,
        "counts": {k: len(v) for k, v in split.items()},
        "files": _relative_files(split),
    }


def _is_complete(out_dir: Path, expected: dict) -> bool:
    mf = out_dir / "manifest.json"
    if not mf.is_file():
        return False
    try:
        got = json.loads(mf.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if got != json.loads(json.dumps(expected)):
        return False
    needed = ["pairs.csv", "split.json", "references.txt", "train.txt", "test.txt", *expected["files"]]
    return all((out_dir / f).is_file() for f in needed)


def _protocol(out_dir: Path, hc18_dir: Path, seed: int, split: dict[str, list[str]], images: Path) -> DevProtocol:
    return DevProtocol(
        out_dir=out_dir, hc18_dir=hc18_dir, seed=seed,
        references=[str(images / n) for n in split["references"]],
        train=[str(images / n) for n in split["train"]],
        test=[str(images / n) for n in split["test"]],
        pairs_csv=out_dir / "pairs.csv",
        pair_images=[str(out_dir / f) for f in _relative_files(split)],
    )


def build_dev_protocol(hc18_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                       seed: int = 0, *, force: bool = False, progress: bool = True) -> DevProtocol:
    """Build (or reuse) the development protocol in ``out_dir``.

    A folder whose ``manifest.json`` matches this version, HC18 folder, seed
    and parameters, and holds every listed file, is reused without rebuilding
    (unless ``force``).
    """
    from tqdm.auto import tqdm

    hc18_dir = Path(hc18_dir or default_hc18_dir()).resolve()
    out_dir = Path(out_dir or default_out_dir()).resolve()
    images = _image_dir(hc18_dir)
    names = sorted(p.name for p in images.glob("*.png") if _SUBJECT.match(p.name))
    split = split_subjects(names, seed)
    expected = _manifest(hc18_dir, seed, split)
    proto = _protocol(out_dir, hc18_dir, seed, split, images)
    if not force and _is_complete(out_dir, expected):
        return proto
    (out_dir / "manifest.json").unlink(missing_ok=True)
    for i, name in enumerate(tqdm(split["test"], desc="degrading test images", disable=None if progress else True)):
        src = images / name
        (out_dir / "clean").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out_dir / "clean" / name)
        x = read_gray(src)
        for t in TYPES:
            for s in SEVERITIES:
                write_gray_png(out_dir / t / s / name, degrade(x, t, s, seed=seed, index=i))
    write_csv(out_dir / "pairs.csv", _pair_rows(split["test"]), ["better", "worse", "type"])
    for key, fname in (("references", "references.txt"), ("train", "train.txt"), ("test", "test.txt")):
        write_text(out_dir / fname, "".join(str(images / n) + "\n" for n in split[key]))
    write_json(out_dir / "split.json", {"seed": seed, "hc18_images": str(images), **split})
    write_json(out_dir / "manifest.json", expected)  # last: marks the folder complete
    return proto


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hc18", default=None, help="HC18 folder holding images/ (default: $CRL_UIQA_SHARED/data/hc18 "
                    "or ../shared/data/hc18 beside the repository)")
    ap.add_argument("--out", default=None, help="output folder (default: bench-out/dev in the repository)")
    ap.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        proto = build_dev_protocol(args.hc18, args.out, args.seed, force=args.force)
    except FileNotFoundError as exc:
        print(f"dev_protocol: error: {exc}", file=sys.stderr)
        return 1
    n_pairs = len(proto.pairs())
    print(f"dev protocol in {proto.out_dir} ({time.perf_counter() - t0:.1f} s)")
    print(f"| set | images |\n|---|---|\n| references | {len(proto.references)} |\n| train | {len(proto.train)} |\n"
          f"| test (clean) | {len(proto.test)} |\n| pair images | {len(proto.pair_images)} |\n| pairs | {n_pairs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
