"""NIQE: natural image quality evaluator (Mittal, Soundararajan & Bovik 2013), as the authors' MATLAB code.

This reproduces the LIVE NIQE release (``computequality.m`` with
``computefeature.m``, ``estimateaggdparam.m`` and the released
``modelparameters.mat``; call ``computequality(im, 96, 96, 0, 0, mu_prisparam,
cov_prisparam)``) step by step, in float64:

1. the 0-255 image (8-bit images as exact integers, see
   :func:`._nss.to_gray_levels`) is cropped to a multiple of the patch size
   (bottom and right remainder dropped);
2. MSCN ``(I - mu) / (sigma + 1)`` with the 7 x 7 Gaussian window (sigma 7/6)
   applied with **replicated** borders (``imfilter(.., 'replicate')``);
3. per non-overlapping P x P patch (``blkproc``), 18 features: the AGGD fit of
   the MSCN ``[alpha, (beta_l + beta_r) / 2]`` and, for the four
   ``circshift`` neighbours ``(0, 1), (1, 0), (1, 1), (1, -1)`` *wrapping
   around the patch*, ``[alpha, (beta_r - beta_l) Gamma(2/a) / Gamma(1/a),
   beta_l, beta_r]``; zeros count on neither side of the AGGD, the shape is
   the nearest value on the grid 0.2:0.001:10;
4. the same at half resolution (MATLAB ``imresize(im, 0.5)``: antialiased
   bicubic) with P/2 patches;
5. ``NIQE = sqrt((mu_p - mu_d) pinv((S_p + S_d) / 2) (mu_p - mu_d)')`` with
   ``mu_d = nanmean`` and ``S_d = nancov`` of the patch features (a patch
   with an empty AGGD side -- e.g. all zeros -- has NaN features: it is left
   out of the covariance, and of the mean of those features only).

Agreement with the MATLAB code run under GNU Octave on 41 public and
distorted images: BENCHMARKS.md ("BRISQUE and NIQE against the MATLAB
originals") and ``benchmarks/baselines_matlab.py``.

Pristine models:

- :func:`live_niqe_model` -- the released ``modelparameters.mat``
  (``mu_prisparam``, ``cov_prisparam``; pristine natural images, P = 96),
  shipped in ``crl_uiqa/baselines/data/niqe_live_modelparameters.npz`` under
  the LIVE release notice (``data/README-LIVE.txt``: use and distribution for
  any purpose, notice kept in all copies, LIVE/CPS acknowledged in
  publications). Provenance: BasicSR's conversion of that file (PyPI
  ``basicsr`` 1.4.2, ``niqe_pris_params.npz``), checked by SHA-256 on load.
- :func:`fit_niqe_model` -- a model fitted on **the user's high-quality
  ultrasound standard planes**, as the release's ``estimatemodelparam.m``
  does: only the patches whose mean local standard deviation exceeds
  ``sharpness`` (0.75) times the image's sharpest patch enter the fit.

NIQE is lower-is-better; :func:`niqe_score` returns **-NIQE** so that higher
means better quality.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.special import gamma as _gamma

from .. import validate
from ..errors import ArgumentTypeError, ConfigError, ImageError, InputError, ModelError
from ._nss import (
    aggd_fit,
    check_images,
    imresize_half,
    matlab_pinv,
    mscn,
    neighbour_products,
    read_model_file,
    to_gray_levels,
)

__all__ = ["NIQEModel", "live_niqe_model", "niqe_features", "fit_niqe_model", "niqe_score", "niqe_ref_score"]

log = logging.getLogger(__name__)

_MODEL_FILE = "niqe_live_modelparameters.npz"
_MODEL_SHA256 = "359edd6d6fabf39472993000739b454c442001459704ef431f80f5d4091c0a15"
#: circshift offsets of computefeature.m
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@dataclass(frozen=True, eq=False)
class NIQEModel:
    """Pristine multivariate Gaussian of NIQE patch features.

    Attributes
    ----------
    mean : numpy.ndarray
        (36,) mean feature vector.
    cov : numpy.ndarray
        (36, 36) feature covariance.
    patch_size : int
        Patch side the features were computed with (scoring uses the same).
    n_patches : int
        Number of patches the model was fitted on (0 when unknown).
    """

    mean: np.ndarray
    cov: np.ndarray
    patch_size: int = 96
    n_patches: int = 0

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64).ravel()
        cov = np.asarray(self.cov, dtype=np.float64)
        if cov.shape != (mean.size, mean.size):
            raise ModelError(f"NIQE model: covariance shape {cov.shape} does not match mean of length {mean.size}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
            raise ModelError("NIQE model: mean or covariance contains NaN or infinite values")
        _check_patch_size(self.patch_size)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)

    def distance(self, features: np.ndarray) -> float:
        """NIQE of one image's (n_patches, 36) patch features against this model.

        As ``computequality.m``: ``nanmean`` of the features, ``nancov``
        (rows without NaN, ``ddof=1``) and MATLAB's ``pinv``.
        """
        feats = np.asarray(features, dtype=np.float64)
        if feats.ndim != 2 or feats.shape[1] != self.mean.size:
            raise InputError(f"expected (n, {self.mean.size}) patch features, got shape {feats.shape}")
        complete = feats[~np.isnan(feats).any(axis=1)]
        if len(complete) < 2:
            raise InputError(
                f"NIQE needs at least two patches with defined features, got {len(complete)} "
                "(patches without negative or positive MSCN values have undefined features)"
            )
        with np.errstate(invalid="ignore"):
            diff = self.mean - np.nanmean(feats, axis=0)
        cov = np.cov(complete, rowvar=False)
        q = diff @ matlab_pinv((self.cov + cov) / 2.0) @ diff
        return float(np.sqrt(max(q, 0.0)))


def _check_patch_size(patch_size: int) -> None:
    if validate.integer("patch_size", patch_size, minimum=8) % 2:
        raise ConfigError(f"patch_size must be an even integer, got {patch_size!r}")


@lru_cache(maxsize=1)
def live_niqe_model() -> NIQEModel:
    """The released NIQE pristine model (``modelparameters.mat`` of the LIVE release, P = 96).

    Raises
    ------
    crl_uiqa.errors.ModelError
        If the shipped parameter file is missing or altered (checksum).
    """
    raw = read_model_file(_MODEL_FILE, _MODEL_SHA256, "NIQE")
    import io

    with np.load(io.BytesIO(raw), allow_pickle=False) as params:
        return NIQEModel(params["mu_prisparam"], params["cov_prisparam"], patch_size=96)


def _patches(a: np.ndarray, p: int) -> np.ndarray:
    """(H, W) -> (n, p, p) non-overlapping patches (H, W multiples of p), row-major order."""
    h, w = a.shape
    return a.reshape(h // p, p, w // p, p).swapaxes(1, 2).reshape(-1, p, p)


def _patch_features(patches: np.ndarray) -> np.ndarray:
    """(n, p, p) MSCN patches -> (n, 18) features of ``computefeature.m``."""
    n = patches.shape[0]
    with np.errstate(invalid="ignore"):
        m = aggd_fit(patches.reshape(n, -1))
        feats = [m.alpha, (m.beta_left + m.beta_right) / 2.0]
        for prod in neighbour_products(patches, _SHIFTS):
            f = aggd_fit(prod.reshape(n, -1))
            bl, br = f.beta_left, f.beta_right
            feats += [f.alpha, (br - bl) * (_gamma(2.0 / f.alpha) / _gamma(1.0 / f.alpha)), bl, br]
    return np.stack(feats, axis=1)


def _image_features(img: np.ndarray, patch_size: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(n_patches, 36) features and (n_patches,) sharpness of one [0, 1] image."""
    p = patch_size
    h, w = img.shape
    if np.ptp(img) == 0:
        raise ImageError(f"{name}: constant image; NIQE is undefined (no local contrast)")
    if (h // p) * (w // p) < 2:
        raise ImageError(
            f"{name}: NIQE needs at least two {p}x{p} patches, got an image of {h}x{w} "
            f"(use a larger image or a smaller patch_size)"
        )
    im = to_gray_levels(img[: h - h % p, : w - w % p])
    coeffs1, sigma = mscn(im, padding="replicate")
    coeffs2, _ = mscn(imresize_half(im), padding="replicate")
    feats = np.hstack([_patch_features(_patches(coeffs1, p)), _patch_features(_patches(coeffs2, p // 2))])
    sharpness = _patches(sigma, p).mean(axis=(1, 2))
    return feats, sharpness


def niqe_features(image: np.ndarray, patch_size: int = 96) -> np.ndarray:
    """NIQE patch features of one image (rows may hold NaN, as in MATLAB).

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grayscale image in [0, 1] holding at least two patches.
    patch_size : int
        Patch side P (even); the half-resolution features use P/2.

    Returns
    -------
    numpy.ndarray
        (n_patches, 36) float64, patches in row-major order.
    """
    _check_patch_size(patch_size)
    img = check_images([image], "image")[0]
    return _image_features(img, int(patch_size), "image")[0]


def fit_niqe_model(
    reference_images: Sequence[np.ndarray], patch_size: int = 96, sharpness: float = 0.75
) -> NIQEModel:
    """Fit a pristine NIQE model on high-quality reference images, as ``estimatemodelparam.m``.

    Parameters
    ----------
    reference_images : sequence of numpy.ndarray
        Grayscale (H, W) images in [0, 1], each holding at least two patches.
    patch_size : int
        Patch side P (96 in the release).
    sharpness : float
        In [0, 1]: keep, per image, the patches whose mean local standard
        deviation exceeds ``sharpness`` times that image's sharpest patch
        (0.75 in the release); 0 keeps every patch with any local contrast
        (the comparison is strict, as ``sharpness > sh_th * max(sharpness)``).

    Returns
    -------
    NIQEModel
        ``nanmean`` and ``nancov`` (``ddof=1``) of the kept patch features.

    Raises
    ------
    crl_uiqa.errors.ConfigError
        A ``patch_size`` that is not an even integer >= 8, a ``sharpness``
        that is not a number in [0, 1].
    crl_uiqa.errors.InputError
        On bad images (empty list, non-2-D, non-finite), or fewer than two
        kept patches with defined features.
    crl_uiqa.errors.ImageError
        On constant or too small images.
    """
    _check_patch_size(patch_size)
    validate.real("sharpness", sharpness, minimum=0, maximum=1)
    from ..progress import progress

    refs = check_images(reference_images, "reference_images")
    kept = []
    for i, img in enumerate(progress(refs, desc="NIQE fit", unit="img")):
        feats, sharp = _image_features(img, int(patch_size), f"reference_images[{i}]")
        kept.append(feats[sharp > sharpness * sharp.max()])
    feats = np.concatenate(kept)
    complete = feats[~np.isnan(feats).any(axis=1)]
    if len(complete) < 2:
        raise InputError(
            f"only {len(complete)} reference patch(es) passed the sharpness threshold {sharpness} with defined "
            "features; give more (or larger) reference images or lower `sharpness`"
        )
    if len(complete) <= feats.shape[1]:
        log.warning(
            "NIQE model fitted on only %d patches for %d features: its covariance is singular and the "
            "scores unreliable; give more (or larger) reference images",
            len(complete), feats.shape[1],
        )
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(feats, axis=0)
    return NIQEModel(mean, np.cov(complete, rowvar=False), patch_size=int(patch_size), n_patches=len(feats))


def niqe_score(images: Sequence[np.ndarray], model: NIQEModel | None = None) -> np.ndarray:
    """Negated NIQE of each image (higher = better).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Grayscale (H, W) images in [0, 1], each holding at least two
        ``model.patch_size`` patches (two 96x96 patches for the LIVE model).
    model : NIQEModel, optional
        Pristine model; None uses :func:`live_niqe_model` (the released LIVE
        parameters, natural images).

    Returns
    -------
    numpy.ndarray
        (N,) float64 ``-NIQE``.

    Raises
    ------
    crl_uiqa.errors.InputError
        On an empty list, non-2-D or non-finite images.
    crl_uiqa.errors.ImageError
        On constant or too small images.
    crl_uiqa.errors.ArgumentTypeError
        A ``model`` that is not a :class:`NIQEModel`.
    """
    from ..progress import progress

    imgs = check_images(images)
    if model is None:
        model = live_niqe_model()
    elif not isinstance(model, NIQEModel):
        raise ArgumentTypeError(f"model must be a NIQEModel (from fit_niqe_model) or None, got {type(model).__name__}")
    p = int(model.patch_size)
    for i, img in enumerate(imgs):  # fail before the long loop
        if np.ptp(img) == 0 or (img.shape[0] // p) * (img.shape[1] // p) < 2:
            _image_features(img, p, f"images[{i}]")  # raises the error
    scores = []
    for i, img in enumerate(progress(imgs, desc="NIQE", unit="img")):
        try:
            scores.append(-model.distance(_image_features(img, p, f"images[{i}]")[0]))
        except ValueError as exc:
            raise ImageError(f"images[{i}]: {exc}") from None
    return np.asarray(scores, dtype=np.float64)


def niqe_ref_score(
    images: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    patch_size: int = 96,
    sharpness: float = 0.75,
) -> np.ndarray:
    """Negated NIQE against a pristine model fitted on ``references`` (higher = better).

    Shorthand for ``niqe_score(images, fit_niqe_model(references, patch_size, sharpness))``:
    the ultrasound variant, whose "pristine" statistics are those of the
    user's high-quality standard planes.
    """
    return niqe_score(images, fit_niqe_model(references, patch_size=patch_size, sharpness=sharpness))
