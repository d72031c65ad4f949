"""Natural-scene statistics shared by BRISQUE and NIQE, as the authors' MATLAB code computes them.

Both metrics describe an image by the statistics of its *mean subtracted,
contrast normalised* (MSCN) coefficients and of the products of neighbouring
MSCN coefficients, fitted with (asymmetric) generalised Gaussian
distributions by moment matching (Mittal et al. 2012, 2013; Lasmar et al.
2009). Every function here reproduces one step of the LIVE release code
(``brisque_feature.m``, ``estimateggdparam.m``, ``estimateaggdparam.m``,
``computequality.m``, ``computefeature.m``) in float64, with MATLAB's
conventions:

- :func:`gaussian_window` -- ``fspecial('gaussian', 7, 7/6)``, normalised;
- :func:`mscn` -- ``(I - mu) ./ (sigma + 1)`` on 0-255 images, with the
  window applied by ``filter2(..., 'same')`` (zero padding, BRISQUE) or
  ``imfilter(..., 'replicate')`` (NIQE);
- :func:`neighbour_products` -- ``x .* circshift(x, shift)``: the products
  wrap around the image (or patch) border;
- :func:`ggd_fit` / :func:`aggd_fit` -- the shape parameter is the nearest
  value on MATLAB's grid ``0.2:0.001:10``; in the asymmetric fit, exact zeros
  count in neither side's standard deviation (``vec(vec<0)``,
  ``vec(vec>0)``) but count in the moment ratio, and an empty side gives NaN;
- :func:`imresize_half` -- ``imresize(I, 0.5)``: bicubic (a = -0.5) with
  antialiasing, i.e. the 8-tap kernel ``cubic(x/2)/2``, symmetric padding.

All functions accept a leading batch axis (of patches) where it makes sense.
:func:`read_model_file` reads the two metrics' LIVE model files shipped with
the package.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

import numpy as np
import scipy.ndimage
from scipy.special import gamma as _gamma

from .. import validate
from ..errors import ConfigError, InputError

# One image validator for every baseline (grayscale (H, W) in [0, 1], errors naming ``images[i]``).
from ._network import check_array_images as check_images

__all__ = [
    "gaussian_window",
    "to_gray_levels",
    "mscn",
    "neighbour_products",
    "imresize_half",
    "GGDFit",
    "ggd_fit",
    "AGGDFit",
    "aggd_fit",
    "matlab_pinv",
    "check_images",
    "read_model_file",
]

_PADDING = {"zeros": "constant", "replicate": "nearest"}


def read_model_file(name: str, sha256: str, method: str) -> bytes:
    """The bytes of ``baselines/data/<name>``, checked against ``sha256``.

    Raises
    ------
    crl_uiqa.errors.ModelError
        If the file is missing or altered; the message names ``method`` (BRISQUE, NIQE).
    """
    from ..errors import ModelError

    ref = resources.files(__package__).joinpath("data").joinpath(name)
    try:
        raw = ref.read_bytes()
    except OSError as exc:
        raise ModelError(f"{method} model file {name} is missing from the installation: {exc}") from None
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise ModelError(f"{method} model file {name} does not match its checksum; reinstall crl-uiqa")
    return raw


def _sequential_sum(values) -> float:
    """Left-to-right float64 sum, as MATLAB's ``sum`` of a short vector (numpy sums pairwise)."""
    total = 0.0
    for v in np.asarray(values, dtype=np.float64).ravel():
        total += float(v)
    return total


def gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    """``w = fspecial('gaussian', size, sigma); w = w / sum(sum(w))``, bit for bit.

    The sums run in MATLAB's order (column-major, left to right): the window
    then sums to ``1 - 2.2e-16`` as in MATLAB, not to ``1 + 2.2e-16`` as with
    numpy's pairwise sums -- which decides the sign of the MSCN rounding noise
    over flat, non-zero image areas (JPEG blocks, scanned pages) and with it
    up to a few percent of BRISQUE or NIQE on such images.

    Returns
    -------
    numpy.ndarray
        (size, size) float64 weights.
    """
    size = validate.integer("window size", size, minimum=1)
    if size % 2 == 0:
        raise ConfigError(f"window size must be odd, got {size}")
    half = (size - 1) / 2
    x = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(x, x)
    w = np.exp(-(xx * xx + yy * yy) / (2.0 * sigma * sigma))
    w[w < np.finfo(np.float64).eps * w.max()] = 0.0  # fspecial's cut-off
    w = w / _sequential_sum(w.ravel(order="F"))
    return w / _sequential_sum([_sequential_sum(w[:, j]) for j in range(w.shape[1])])


def to_gray_levels(image: np.ndarray) -> np.ndarray:
    """A [0, 1] image as the 0-255 ``double`` image MATLAB's code receives.

    Images on the 8-bit grid (every value within 1e-3 of ``k/255``, e.g. read
    from an 8-bit file) are rounded to exact integers, as ``double(imread(..))``
    gives; other images are only scaled by 255.
    """
    x = np.asarray(image, dtype=np.float64) * 255.0
    r = np.rint(x)
    return r if np.max(np.abs(x - r), initial=0.0) < 1e-3 else x


def mscn(image: np.ndarray, padding: str, window: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MSCN coefficients ``(I - mu) / (sigma + 1)`` of a 0-255 image.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) image in grey levels (0-255).
    padding : {"zeros", "replicate"}
        Border handling of the local mean and variance: ``"zeros"`` is
        MATLAB's ``filter2(w, I, 'same')`` (BRISQUE), ``"replicate"`` is
        ``imfilter(I, w, 'replicate')`` (NIQE).
    window : numpy.ndarray, optional
        2-D weights; :func:`gaussian_window` by default.

    Returns
    -------
    mscn : numpy.ndarray
        (H, W) float64 coefficients.
    sigma : numpy.ndarray
        (H, W) local standard deviation ``sqrt(|w * I^2 - mu^2|)``.
    """
    if padding not in _PADDING:
        raise ConfigError(f"padding must be one of {', '.join(_PADDING)}, got {padding!r}")
    w = gaussian_window() if window is None else np.asarray(window, dtype=np.float64)
    img = np.asarray(image, dtype=np.float64)
    mode = _PADDING[padding]
    mu = scipy.ndimage.correlate(img, w, mode=mode, cval=0.0)
    sigma = np.sqrt(np.abs(scipy.ndimage.correlate(img * img, w, mode=mode, cval=0.0) - mu * mu))
    return (img - mu) / (sigma + 1.0), sigma


def neighbour_products(coefficients: np.ndarray, shifts) -> list[np.ndarray]:
    """``x .* circshift(x, shift)`` for each (row, column) shift, over the last two axes.

    BRISQUE uses the shifts ``(0, 1), (1, 0), (1, 1), (-1, 1)``, NIQE
    ``(0, 1), (1, 0), (1, 1), (1, -1)``; the neighbour wraps around the border
    of the image (BRISQUE) or of each patch (NIQE), as ``circshift`` does.
    """
    m = np.asarray(coefficients)
    return [m * np.roll(m, (int(dr), int(dc)), axis=(-2, -1)) for dr, dc in shifts]


def _cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB imresize's bicubic kernel (Keys, a = -0.5)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


@lru_cache(maxsize=1)
def _half_taps() -> tuple[np.ndarray, np.ndarray]:
    """Offsets and weights of ``imresize(., 0.5)`` along one axis.

    Output sample ``j`` (0-based) sits at input coordinate ``2 j + 0.5``; the
    antialiased kernel ``0.5 * cubic(0.5 * d)`` is non-zero on the eight
    inputs ``2 j - 3 .. 2 j + 4`` (weights sum to exactly 1, so MATLAB's
    normalisation changes nothing).
    """
    offsets = np.arange(-3, 5)
    weights = 0.5 * _cubic(0.5 * (offsets - 0.5))
    return offsets, weights / weights.sum()


def _symmetric_index(idx: np.ndarray, n: int) -> np.ndarray:
    """MATLAB imresize's border handling: indices mirrored with the edge repeated."""
    period = np.mod(idx, 2 * n)
    return np.where(period < n, period, 2 * n - 1 - period)


def imresize_half(image: np.ndarray) -> np.ndarray:
    """``imresize(image, 0.5)`` of MATLAB (bicubic, antialiasing on) for a float image.

    The output has ``ceil(H / 2) x ceil(W / 2)`` pixels and is not clipped.
    Rows are resized first, then columns, as MATLAB does for equal scales.
    """
    out = np.asarray(image, dtype=np.float64)
    offsets, weights = _half_taps()
    for axis in (0, 1):
        n = out.shape[axis]
        centres = 2 * np.arange(-(-n // 2))
        idx = _symmetric_index(centres[:, None] + offsets[None, :], n)  # (n_out, 8)
        gathered = np.take(out, idx, axis=axis)  # axis -> (n_out, 8)
        out = np.tensordot(gathered, weights, axes=([axis + 1], [0]))
    return out


def _matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's ``start:step:stop`` (values computed from both ends, as MATLAB does)."""
    n = int(np.floor((stop - start) / step + 1e-10))
    k = np.arange(n + 1)
    return np.where(k <= n // 2, start + k * step, stop - (n - k) * step)


#: Shape-parameter grid of both releases, ``0.2:0.001:10`` (9801 values).
_GRID = _matlab_colon(0.2, 0.001, 10.0)


@lru_cache(maxsize=1)
def _aggd_table() -> np.ndarray:
    g = _GRID
    return (_gamma(2.0 / g) ** 2) / (_gamma(1.0 / g) * _gamma(3.0 / g))  # increasing in g


@lru_cache(maxsize=1)
def _ggd_table() -> np.ndarray:
    g = _GRID
    return (_gamma(1.0 / g) * _gamma(3.0 / g)) / (_gamma(2.0 / g) ** 2)  # decreasing in g


def _nearest_on_grid(table: np.ndarray, target: np.ndarray, squared: bool) -> np.ndarray:
    """``gam(argmin(diff))`` with MATLAB's ``min``: first index on ties, index 1 for a NaN target.

    ``diff`` is ``(table - t).^2`` (``squared``, estimateaggdparam) or
    ``abs(t - table)`` (estimateggdparam). ``table`` is monotonic, so only the
    two grid values around ``t`` can be nearest.
    """
    t = np.asarray(target, dtype=np.float64)
    increasing = table[-1] > table[0]
    asc = table if increasing else table[::-1]
    safe = np.where(np.isnan(t), asc[0], t)
    hi = np.clip(np.searchsorted(asc, safe), 1, len(asc) - 1)
    cand = np.stack([hi - 1, hi]) if increasing else np.stack([len(asc) - 1 - hi, len(asc) - hi])  # ascending index
    vals = table[cand]
    dist = (vals - safe) ** 2 if squared else np.abs(safe - vals)
    first = np.where(dist[1] < dist[0], cand[1], np.where(dist[0] < dist[1], cand[0], cand.min(axis=0)))
    return _GRID[np.where(np.isnan(t), 0, first)]


class GGDFit(NamedTuple):
    """``estimateggdparam``: shape ``alpha`` and ``sigma = sqrt(mean(x.^2))``."""

    alpha: np.ndarray
    sigma: np.ndarray


def ggd_fit(samples: np.ndarray) -> GGDFit:
    """Symmetric GGD fit along the last axis, as BRISQUE's ``estimateggdparam.m``.

    ``rho = mean(x^2) / mean(|x|)^2`` and ``alpha`` is the grid value whose
    ``Gamma(1/a) Gamma(3/a) / Gamma(2/a)^2`` is nearest to ``rho``.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.shape[-1] == 0:
        raise InputError("ggd_fit needs at least one sample")
    sigma_sq = np.mean(x * x, axis=-1)
    e = np.mean(np.abs(x), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = sigma_sq / (e * e)
    return GGDFit(_nearest_on_grid(_ggd_table(), rho, squared=False), np.sqrt(sigma_sq))


class AGGDFit(NamedTuple):
    """``estimateaggdparam``; every field has the batch shape of the input.

    Attributes
    ----------
    alpha : numpy.ndarray
        Shape parameter (grid value).
    left_std, right_std : numpy.ndarray
        Root mean square of the negative and of the positive samples (zeros
        excluded from both; NaN when a side is empty, as MATLAB's ``mean([])``).
    """

    alpha: np.ndarray
    left_std: np.ndarray
    right_std: np.ndarray

    @property
    def _ratio(self) -> np.ndarray:
        return np.sqrt(_gamma(1.0 / self.alpha) / _gamma(3.0 / self.alpha))

    @property
    def beta_left(self) -> np.ndarray:
        """NIQE's ``betal = leftstd * sqrt(gamma(1/alpha) / gamma(3/alpha))``."""
        return self.left_std * self._ratio

    @property
    def beta_right(self) -> np.ndarray:
        """NIQE's ``betar = rightstd * sqrt(gamma(1/alpha) / gamma(3/alpha))``."""
        return self.right_std * self._ratio


def aggd_fit(samples: np.ndarray) -> AGGDFit:
    """Asymmetric GGD fit along the last axis, as ``estimateaggdparam.m``.

    ``gammahat = leftstd / rightstd``, ``rhat = mean(|x|)^2 / mean(x^2)``,
    ``rhatnorm = rhat (gammahat^3 + 1)(gammahat + 1) / (gammahat^2 + 1)^2``
    and ``alpha`` is the grid value whose ``Gamma(2/a)^2 / (Gamma(1/a)
    Gamma(3/a))`` is nearest to ``rhatnorm`` (the first grid value, 0.2, when
    ``rhatnorm`` is NaN).
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.shape[-1] == 0:
        raise InputError("aggd_fit needs at least one sample")
    sq = x * x
    neg, pos = x < 0, x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.sqrt(np.where(neg, sq, 0.0).sum(axis=-1) / neg.sum(axis=-1))
        right = np.sqrt(np.where(pos, sq, 0.0).sum(axis=-1) / pos.sum(axis=-1))
        g = left / right
        rhat = np.mean(np.abs(x), axis=-1) ** 2 / np.mean(sq, axis=-1)
        rhatnorm = (rhat * (g**3 + 1) * (g + 1)) / ((g**2 + 1) ** 2)
    return AGGDFit(_nearest_on_grid(_aggd_table(), rhatnorm, squared=True), left, right)


def matlab_pinv(a: np.ndarray) -> np.ndarray:
    """``pinv(A)`` with MATLAB's default tolerance ``max(size(A)) * eps(norm(A))``."""
    a = np.asarray(a, dtype=np.float64)
    u, s, vt = np.linalg.svd(a)
    if s.size == 0 or s[0] == 0:
        return np.zeros(a.T.shape)
    tol = max(a.shape) * np.spacing(s[0])
    keep = s > tol
    return (vt[keep].T / s[keep]) @ u[:, keep].T
