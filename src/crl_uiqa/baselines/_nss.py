"""Natural-scene-statistics helpers shared by BRISQUE and NIQE.

Both metrics describe an image by the statistics of its *mean subtracted,
contrast normalised* (MSCN) coefficients and of the products of neighbouring
MSCN coefficients, each fitted with an asymmetric generalised Gaussian
distribution (AGGD) by moment matching (Mittal et al. 2012, 2013; Lasmar et
al. 2009). This module holds that common machinery, vectorised with numpy and
scipy so that a batch of patches is fitted at once:

- :func:`mscn` -- local Gaussian normalisation of an image;
- :func:`pair_products` -- horizontal, vertical and both diagonal neighbour
  products of MSCN coefficients;
- :func:`aggd_fit` -- AGGD moment-matching fit along the last axis, with the
  shape parameter found either exactly (root of the moment equation) or by
  the 0.001-step grid search of the reference implementations.

The image scale enters only through the stabilising constant of
:func:`mscn`: ``c=1`` for 0-255 images (NIQE), ``c=1/255`` for [0, 1] images
(BRISQUE), which is the same normalisation.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import scipy.ndimage
import scipy.signal
from scipy.special import gamma as _gamma
from scipy.special import gammaln, psi

# One image validator for every baseline (grayscale (H, W) in [0, 1], errors naming ``images[i]``).
from ._network import check_array_images as check_images

__all__ = ["gaussian_window", "mscn", "pair_products", "AGGDFit", "aggd_fit", "check_images"]


def gaussian_window(size: int = 7, sigma: float = 7 / 6, ndim: int = 1) -> np.ndarray:
    """Normalised Gaussian window of ``size`` taps per side.

    Parameters
    ----------
    size : int
        Number of taps (odd), 7 in BRISQUE and NIQE.
    sigma : float
        Standard deviation in pixels, 7/6 in BRISQUE and NIQE.
    ndim : {1, 2}
        1: the separable 1-D window; 2: the (size, size) window computed as
        the ``brisque`` package does (same values up to rounding).

    Returns
    -------
    numpy.ndarray
        float64 weights summing to 1.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be a positive odd integer, got {size}")
    if ndim == 1:
        x = np.arange(size, dtype=np.float64) - size // 2
        w = np.exp(-(x**2) / (2.0 * sigma**2))
    elif ndim == 2:
        y, x = np.indices((size, size)) - size // 2
        w = 1 / (2 * np.pi * sigma**2) * np.exp(-(x**2 + y**2) / (2 * sigma**2))
    else:
        raise ValueError(f"ndim must be 1 or 2, got {ndim}")
    return w / np.sum(w)


def mscn(
    image: np.ndarray,
    c: float = 1.0,
    window: np.ndarray | None = None,
    dtype: type = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean subtracted, contrast normalised coefficients of an image.

    ``mscn = (I - mu) / (sigma + c)`` with ``mu = w * I`` and
    ``sigma = sqrt(|w * I^2 - mu^2|)``, ``w`` a Gaussian window applied with
    zero padding outside the image (as in the ``brisque`` and
    ``scikit-video`` reference implementations).

    In flat areas ``I - mu`` is rounding noise whose sign decides on which
    side of the AGGD fits it lands, so the two window forms -- a 1-D window
    applied separably (:func:`scipy.ndimage.correlate1d`, scikit-video) and a
    2-D window (:func:`scipy.signal.convolve2d`, ``brisque``) -- are both
    offered to reproduce each reference bit for bit.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) image.
    c : float
        Stabilising constant (1 for 0-255 images, 1/255 for [0, 1] images).
    window : numpy.ndarray, optional
        1-D (separable) or 2-D window; :func:`gaussian_window` (7 taps,
        sigma 7/6) by default.
    dtype : numpy dtype
        Arithmetic precision (``np.float32`` reproduces scikit-video's NIQE).

    Returns
    -------
    mscn : numpy.ndarray
        (H, W) MSCN coefficients.
    sigma : numpy.ndarray
        (H, W) local standard deviation (NIQE's patch sharpness is its mean).
    """
    if window is None:
        window = gaussian_window()
    img = np.asarray(image, dtype=dtype)
    win = np.asarray(window, dtype=np.float64)
    if win.ndim == 1:

        def blur(a: np.ndarray) -> np.ndarray:
            a = scipy.ndimage.correlate1d(a, win, axis=0, mode="constant", cval=0.0)
            return scipy.ndimage.correlate1d(a, win, axis=1, mode="constant", cval=0.0)

    elif win.ndim == 2:

        def blur(a: np.ndarray) -> np.ndarray:
            return scipy.signal.convolve2d(a, win, mode="same")

    else:
        raise ValueError(f"window must be 1-D or 2-D, got shape {win.shape}")
    mu = blur(img)
    sigma = np.sqrt(np.abs(mu * mu - blur(img * img)))
    return (img - mu) / (sigma + dtype(c)), sigma


def pair_products(coefficients: np.ndarray, wrap: bool = False) -> tuple[np.ndarray, ...]:
    """Products of each MSCN coefficient with its four neighbours.

    Parameters
    ----------
    coefficients : numpy.ndarray
        (..., H, W) MSCN coefficients (a leading batch axis of patches is allowed).
    wrap : bool
        False: products of the overlapping parts only (BRISQUE, maps one row
        and/or column smaller). True: circular neighbours (NIQE, MATLAB
        ``circshift``/numpy ``roll``; maps keep their size).

    Returns
    -------
    tuple of numpy.ndarray
        Horizontal, vertical, main-diagonal and anti-diagonal products, in that order.
    """
    m = coefficients
    if wrap:
        return (
            m * np.roll(m, 1, axis=-1),
            m * np.roll(m, 1, axis=-2),
            m * np.roll(m, (1, 1), axis=(-2, -1)),
            m * np.roll(m, (1, -1), axis=(-2, -1)),
        )
    return (
        m[..., :, :-1] * m[..., :, 1:],
        m[..., :-1, :] * m[..., 1:, :],
        m[..., :-1, :-1] * m[..., 1:, 1:],
        m[..., 1:, :-1] * m[..., :-1, 1:],
    )


class AGGDFit(NamedTuple):
    """Moment-matching AGGD fit; every field has the batch shape of the input.

    Attributes
    ----------
    alpha : numpy.ndarray
        Shape parameter.
    sigma_left, sigma_right : numpy.ndarray
        Root mean square of the negative and of the non-negative samples.
    """

    alpha: np.ndarray
    sigma_left: np.ndarray
    sigma_right: np.ndarray

    @property
    def _ratio(self) -> np.ndarray:
        return np.sqrt(_gamma(1.0 / self.alpha) / _gamma(3.0 / self.alpha))

    @property
    def beta_left(self) -> np.ndarray:
        """Left scale parameter ``sigma_left * sqrt(Gamma(1/a) / Gamma(3/a))``."""
        return self._ratio * self.sigma_left

    @property
    def beta_right(self) -> np.ndarray:
        """Right scale parameter ``sigma_right * sqrt(Gamma(1/a) / Gamma(3/a))``."""
        return self._ratio * self.sigma_right

    @property
    def mean(self) -> np.ndarray:
        """Mean of the fitted AGGD, ``(beta_r - beta_l) * Gamma(2/a) / Gamma(1/a)``."""
        return (self.beta_right - self.beta_left) * _gamma(2.0 / self.alpha) / _gamma(1.0 / self.alpha)


#: Shape-parameter grid of the reference implementations (0.2, 0.201, ..., 9.999).
_GRID = np.arange(0.2, 10, 0.001)


def _rho(alpha: np.ndarray) -> np.ndarray:
    """Generalised Gaussian ratio ``Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))`` (increasing in ``a``)."""
    return np.exp(2 * gammaln(2.0 / alpha) - gammaln(1.0 / alpha) - gammaln(3.0 / alpha))


@lru_cache(maxsize=1)
def _grid_table() -> tuple[np.ndarray, np.ndarray]:
    # computed exactly as scikit-video does, so that nearest-value ties resolve identically
    return _GRID, _gamma(2.0 / _GRID) ** 2 / (_gamma(1.0 / _GRID) * _gamma(3.0 / _GRID))


def _solve_grid(target: np.ndarray) -> np.ndarray:
    """``argmin_a (rho(a) - target)^2`` over :data:`_GRID`; NaN targets give the first grid value."""
    grid, table = _grid_table()
    t = np.where(np.isnan(target), -np.inf, target)
    hi = np.clip(np.searchsorted(table, t), 1, len(table) - 1)
    lo = hi - 1
    # ties resolve to the lower index, like numpy.argmin
    pick = np.where((table[hi] - t) ** 2 < (table[lo] - t) ** 2, hi, lo)
    return grid[pick]


def _solve_exact(target: np.ndarray, lo: float = 0.05, hi: float = 50.0) -> np.ndarray:
    """Solve ``rho(a) = target`` (interpolated start, then Newton on ``log rho``).

    Targets outside ``rho([lo, hi])`` (degenerate samples) are clipped to the bounds.
    """
    grid = np.geomspace(lo, hi, 4096)
    table = _rho(grid)
    t = np.clip(np.nan_to_num(target, nan=table[0]), table[0], table[-1])
    alpha = np.interp(np.log(t), np.log(table), grid)
    log_t = np.log(t)
    for _ in range(4):
        inv = 1.0 / alpha
        f = 2 * gammaln(2 * inv) - gammaln(inv) - gammaln(3 * inv) - log_t
        df = -(inv**2) * (4 * psi(2 * inv) - psi(inv) - 3 * psi(3 * inv))
        alpha = np.clip(alpha - f / df, lo, hi)
    return alpha


def aggd_fit(samples: np.ndarray, method: str = "exact") -> AGGDFit:
    """Fit an asymmetric generalised Gaussian to samples along the last axis.

    Moment matching of Lasmar et al. (2009) as used by BRISQUE and NIQE:
    ``gamma = sigma_l / sigma_r`` with ``sigma_l`` (``sigma_r``) the root mean
    square of the negative (non-negative) samples,
    ``r = mean(|x|)^2 / mean(x^2)``,
    ``R = r (gamma^3 + 1)(gamma + 1) / (gamma^2 + 1)^2`` and ``alpha`` solves
    ``Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) = R``.

    Parameters
    ----------
    samples : numpy.ndarray
        (..., N) samples; each leading index is fitted separately.
    method : {"exact", "grid"}
        "exact": root of the moment equation (the ``brisque`` package);
        "grid": nearest value on the grid 0.2:0.001:10 (MATLAB BRISQUE/NIQE,
        scikit-video). All-zero samples give ``alpha = 0.2`` and zero sigmas
        with "grid" (as scikit-video), ``alpha = 0.05`` with "exact".

    Returns
    -------
    AGGDFit
        ``alpha``, ``sigma_left``, ``sigma_right`` (and derived ``beta_left``,
        ``beta_right``, ``mean``).
    """
    if method not in ("exact", "grid"):
        raise ValueError(f"unknown AGGD fitting method {method!r}; use 'exact' or 'grid'")
    x = np.asarray(samples, dtype=np.float64)
    if x.shape[-1] == 0:
        raise ValueError("aggd_fit needs at least one sample")
    sq = x * x
    neg = x < 0
    n_left = neg.sum(axis=-1)
    n_right = x.shape[-1] - n_left
    sum_left = np.where(neg, sq, 0.0).sum(axis=-1)
    sum_right = sq.sum(axis=-1) - sum_left
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_left = np.sqrt(np.where(n_left > 0, sum_left / np.maximum(n_left, 1), 0.0))
        sigma_right = np.sqrt(np.where(n_right > 0, sum_right / np.maximum(n_right, 1), 0.0))
        gamma_hat = sigma_left / sigma_right
        r_hat = np.mean(np.abs(x), axis=-1) ** 2 / np.mean(sq, axis=-1)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = _solve_grid(r_norm) if method == "grid" else _solve_exact(r_norm)
    return AGGDFit(np.asarray(alpha), sigma_left, sigma_right)
