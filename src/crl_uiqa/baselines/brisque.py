"""BRISQUE: blind/referenceless image spatial quality evaluator (Mittal et al. 2012).

36 natural-scene-statistics features (MSCN coefficients and their four
neighbour products, each fitted with an AGGD, at full and half resolution)
are mapped to a quality score by the epsilon-SVR with RBF kernel that the
authors trained on the LIVE IQA database. That model (``svm.txt``, a libsvm
model file, and ``normalize.pickle``, the feature ranges) is read from the
installed PyPI package ``brisque`` -- an optional dependency
(``pip install crl-uiqa[baselines]``) -- without importing it: the package
needs OpenCV and libsvm at import time and fails on numpy >= 2.4 (its
``scale_features`` calls ``float()`` on 1-element arrays).

The features reproduce ``brisque`` 0.2.0 so that the scores agree with its
pipeline to ~1e-11 (``BRISQUE.score`` also passes a gray image through
``rgb2gray``, whose rounding moves scores by up to ~1e-4 on images with flat
areas):

- MSCN with a 7x7 Gaussian window (sigma 7/6, a 2-D convolution as in
  ``brisque``), zero padding, ``C = 1/255`` on [0, 1] images;
- the MSCN and each neighbour product fitted with an AGGD whose shape solves
  the moment equation exactly; MSCN features ``[alpha, (s_l^2 + s_r^2)/2]``,
  product features ``[alpha, mean, s_l^2, s_r^2]``;
- the second scale is OpenCV's ``resize(fx=0.5, fy=0.5, INTER_CUBIC)``
  (Keys cubic, a = -0.75, replicated border), reproduced here in numpy.

These differ slightly from the authors' MATLAB code (replicate padding,
grid-searched shape, symmetric GGD for the MSCN, MATLAB's anti-aliased
``imresize``), so scores are close to, not equal to, MATLAB's (the
difference has not been measured here).

BRISQUE is lower-is-better; :func:`brisque_score` returns **-BRISQUE** so
that, as everywhere in crl-uiqa, higher means better quality.
"""
from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import MissingDependencyError
from ._nss import aggd_fit, check_images, gaussian_window, mscn, pair_products

__all__ = ["BRISQUEModel", "load_brisque_model", "brisque_features", "brisque_score"]

#: Smallest image side accepted (the half-resolution scale must keep >= 8 pixels).
MIN_SIDE = 16
_INSTALL_HINT = "pip install crl-uiqa[baselines]"


@dataclass(frozen=True)
class BRISQUEModel:
    """The BRISQUE regressor: feature scaling plus an RBF epsilon-SVR.

    Attributes
    ----------
    support_vectors : numpy.ndarray
        (n_sv, 36) support vectors (in scaled feature space).
    dual_coef : numpy.ndarray
        (n_sv,) SVR coefficients.
    rho : float
        SVR offset (the prediction is ``sum(coef * K) - rho``).
    gamma : float
        RBF kernel parameter, ``K = exp(-gamma * |x - sv|^2)``.
    feature_min, feature_max : numpy.ndarray
        (36,) feature ranges mapped to [-1, 1] before the SVR.
    """

    support_vectors: np.ndarray
    dual_coef: np.ndarray
    rho: float
    gamma: float
    feature_min: np.ndarray
    feature_max: np.ndarray

    def predict(self, features: np.ndarray) -> np.ndarray:
        """BRISQUE values (lower = better) of (N, 36) raw features."""
        f = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if f.shape[1] != self.support_vectors.shape[1]:
            raise ValueError(f"expected {self.support_vectors.shape[1]} features per image, got {f.shape[1]}")
        x = -1.0 + 2.0 * (f - self.feature_min) / (self.feature_max - self.feature_min)
        sv = self.support_vectors
        d2 = (x * x).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * x @ sv.T
        return np.exp(-self.gamma * np.maximum(d2, 0.0)) @ self.dual_coef - self.rho


def _brisque_model_dir() -> Path:
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "BRISQUE needs the pretrained LIVE model shipped by the PyPI package 'brisque'; "
            f"install it with `{_INSTALL_HINT}` (or `pip install brisque`)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _read_libsvm_svr(path: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Parse a libsvm RBF epsilon-SVR model file into dense arrays."""
    header: dict[str, str] = {}
    with path.open(encoding="ascii") as fh:
        for line in fh:
            line = line.strip()
            if line == "SV":
                break
            key, _, value = line.partition(" ")
            header[key] = value
        rows = [line.split() for line in fh if line.strip()]
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise ValueError(f"{path}: expected an RBF epsilon-SVR libsvm model, got {header}")
    coef = np.array([float(r[0]) for r in rows])
    n_features = max(int(tok.split(":")[0]) for r in rows for tok in r[1:])
    sv = np.zeros((len(rows), n_features))
    for i, r in enumerate(rows):
        for tok in r[1:]:
            idx, val = tok.split(":")
            sv[i, int(idx) - 1] = float(val)
    if "total_sv" in header and int(header["total_sv"]) != len(rows):
        raise ValueError(f"{path}: header says {header['total_sv']} support vectors, found {len(rows)}")
    return sv, coef, float(header["rho"]), float(header["gamma"])


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global: only dicts, lists, numbers and strings load."""

    def find_class(self, module, name):  # noqa: D401 - pickle API
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data-only pickle")


@lru_cache(maxsize=1)
def load_brisque_model() -> BRISQUEModel:
    """Load the LIVE-trained BRISQUE model from the installed ``brisque`` package.

    ``normalize.pickle`` holds only a dict of two float lists (``min_``,
    ``max_``); it is read with an unpickler that refuses any class or
    function, so no code from the file can run.

    Returns
    -------
    BRISQUEModel

    Raises
    ------
    ImportError
        If the ``brisque`` package is not installed.
    """
    root = _brisque_model_dir()
    svm_path, norm_path = root / "svm.txt", root / "normalize.pickle"
    for p in (svm_path, norm_path):
        if not p.is_file():
            raise MissingDependencyError(f"BRISQUE model file {p} is missing; reinstall with `{_INSTALL_HINT}`")
    sv, coef, rho, gamma = _read_libsvm_svr(svm_path)
    with norm_path.open("rb") as fh:
        ranges = _PlainDataUnpickler(fh).load()
    fmin = np.asarray(ranges["min_"], dtype=np.float64)
    fmax = np.asarray(ranges["max_"], dtype=np.float64)
    if fmin.shape != (sv.shape[1],) or fmax.shape != (sv.shape[1],):
        raise ValueError(f"{norm_path}: feature ranges do not match the {sv.shape[1]} SVR features")
    return BRISQUEModel(sv, coef, rho, gamma, fmin, fmax)


def _half_cubic(image: np.ndarray) -> np.ndarray:
    """Halve an image like OpenCV ``resize(fx=0.5, fy=0.5, interpolation=INTER_CUBIC)``.

    Output pixel ``d`` samples the input at ``2d + 0.5`` with the Keys cubic
    (a = -0.75): taps ``2d-1 .. 2d+2`` weighted ``-3/32, 19/32, 19/32, -3/32``,
    indices clamped to the border. The output size is ``round(n / 2)``
    (half to even, like OpenCV's ``cvRound``).
    """
    w = np.array([-0.09375, 0.59375, 0.59375, -0.09375])
    out = image
    for axis in (0, 1):
        n = out.shape[axis]
        d = np.arange(round(n / 2))
        taps = np.clip(2 * d[:, None] + np.arange(-1, 3)[None, :], 0, n - 1)
        gathered = np.take(out, taps, axis=axis)  # axis replaced by (n_out, 4)
        out = np.tensordot(gathered, w, axes=([axis + 1], [0]))
    return out


def _scale_features(image: np.ndarray) -> np.ndarray:
    coeffs, _ = mscn(image, c=1.0 / 255.0, window=gaussian_window(7, 7 / 6, ndim=2))
    maps = [coeffs, *pair_products(coeffs, wrap=False)]
    feats: list[float] = []
    for i, m in enumerate(maps):
        fit = aggd_fit(m.ravel(), method="exact")
        sl2, sr2 = float(fit.sigma_left) ** 2, float(fit.sigma_right) ** 2
        if i == 0:
            feats += [float(fit.alpha), (sl2 + sr2) / 2.0]
        else:
            feats += [float(fit.alpha), float(fit.mean), sl2, sr2]
    return np.asarray(feats)


def brisque_features(image: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of one grayscale image.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) image in [0, 1], both sides >= 16 pixels, not constant.

    Returns
    -------
    numpy.ndarray
        (36,) float64: 18 features at full and 18 at half resolution.
    """
    img = check_images([image], "image")[0]
    _check_brisque_image(img, "image")
    return _features(img)


def _features(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float64)
    return np.concatenate([_scale_features(img), _scale_features(_half_cubic(img))])


def _check_brisque_image(img: np.ndarray, name: str) -> None:
    if min(img.shape) < MIN_SIDE:
        raise ValueError(f"{name}: BRISQUE needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {img.shape}")
    if np.ptp(img) == 0:
        raise ValueError(f"{name}: constant image; BRISQUE is undefined (no local contrast)")


def brisque_score(images: Sequence[np.ndarray]) -> np.ndarray:
    """Negated BRISQUE quality of each image (higher = better).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Grayscale (H, W) images in [0, 1] (any sizes, >= 16x16, not constant).

    Returns
    -------
    numpy.ndarray
        (N,) float64 ``-BRISQUE``; BRISQUE is about 0 (pristine) to 100+
        (heavily distorted) on natural images.

    Raises
    ------
    ValueError
        On an empty list, non-2-D, non-finite, too small or constant images.
    ImportError
        If the optional ``brisque`` package (the pretrained model) is missing.
    """
    from tqdm.auto import tqdm

    imgs = check_images(images)
    for i, img in enumerate(imgs):
        _check_brisque_image(img, f"images[{i}]")
    model = load_brisque_model()
    feats = np.stack(
        [_features(img) for img in tqdm(imgs, desc="BRISQUE", unit="img", disable=None, leave=False)]
    )
    return -model.predict(feats)
