"""MSSIM: mean structural similarity to high-quality reference images (Wang et al. 2004), or MS-SSIM (2003).

SSIM is full-reference; as a quality score for an ultrasound frame without
its own reference, the paper's MSSIM baseline compares each frame with the
set of high-quality standard planes. Here:

- ``SSIM(x, y)`` is the MSSIM of Wang et al. (2004): the mean, over the
  pixels whose 11x11 window lies inside the image, of the SSIM map computed
  with a Gaussian window (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``, data range
  1 and population (co)variances -- identical to
  ``skimage.metrics.structural_similarity(x, y, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``;
- the score of an image is the mean (``reduction="mean"``, default) or the
  maximum (``reduction="max"``: similarity to the closest reference) of its
  SSIM to every reference;
- ``method="ms-ssim"`` replaces SSIM by the multi-scale SSIM of Wang,
  Simoncelli & Bovik (2003), as their ``msssim.m``: five scales, each after a
  2 x 2 average (``imfilter(.., ones(2)/4, 'symmetric')``) and decimation by
  2, the mean contrast-structure term ``cs`` at scales 1-4 and the mean SSIM
  at scale 5, combined as ``prod(cs_j ** w_j) * ssim_5 ** w_5`` with
  ``w = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``. Negative means are set to
  0 first (fractional powers of negatives are undefined; pytorch-msssim and
  TensorFlow do the same). It needs images of at least 161 pixels a side
  (11 after four halvings); the default size 224x288 qualifies;
- images and references of any size are first resized to a common ``size``
  (default 224x288, height x width) with anti-aliased bilinear
  interpolation; ``size=None`` requires them all to have the same shape.

The computation runs on torch in float32: image and reference statistics
are computed once, only the cross term is filtered per pair (the separable
Gaussian applied as shifted multiply-adds, on images shifted by their global
mean to limit float32 cancellation), in small cache-friendly blocks spread
over worker threads. It agrees with scikit-image to a few 1e-6.
SSIM is higher-is-better, so the score needs no sign flip.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Sequence

import numpy as np

from .. import validate
from ..errors import ConfigError, InputError
from ..validate import MAX_COUNT, MAX_IMAGE_SIDE
from ._nss import check_images

__all__ = ["ssim_matrix", "ms_ssim_matrix", "mssim_score"]

_K1, _K2 = 0.01, 0.03
_SIGMA = 1.5
_RADIUS = int(3.5 * _SIGMA + 0.5)  # scipy/scikit-image truncate=3.5 -> 11-tap window
_REDUCTIONS = ("mean", "max")
_METHODS = ("ssim", "ms-ssim")
#: MS-SSIM scale weights of Wang, Simoncelli & Bovik (2003)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite side
        raise ConfigError(f"size must be (height, width) or None, got {size!r}") from None
    if h <= 2 * _RADIUS or w <= 2 * _RADIUS:
        raise ConfigError(f"size must be larger than {2 * _RADIUS}x{2 * _RADIUS} pixels, got {size!r}")
    if max(h, w) > MAX_IMAGE_SIDE:  # every image is resized to it: a huge size would fail allocating the stack
        raise ConfigError(f"size must be at most {MAX_IMAGE_SIDE} pixels per side, got {size!r}")
    return h, w


def _stack(images: list[np.ndarray], size: tuple[int, int] | None, what: str):
    """List of (H, W) arrays -> (N, h, w) float32 tensor at ``size``."""
    import torch
    import torch.nn.functional as F

    if size is None:
        shapes = {img.shape for img in images}
        if len(shapes) > 1:
            raise InputError(
                f"{what}: images have different shapes {sorted(shapes)}; pass size=(height, width) to resize them"
            )
        h, w = next(iter(shapes))
        if h <= 2 * _RADIUS or w <= 2 * _RADIUS:
            raise InputError(f"{what}: SSIM needs images larger than {2 * _RADIUS}x{2 * _RADIUS}, got {h}x{w}")
        size = (h, w)
    out = torch.empty((len(images), *size), dtype=torch.float32)
    for i, img in enumerate(images):
        t = torch.from_numpy(img.astype(np.float32))
        if t.shape != size:
            t = F.interpolate(t[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
        out[i] = t
    return out


def _gaussian_taps() -> list[float]:
    x = np.arange(-_RADIUS, _RADIUS + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / _SIGMA) ** 2)
    return (g / g.sum()).tolist()


def _filter_valid(x):
    """Separable Gaussian filter of (..., H, W), keeping only fully inside windows."""
    taps = _gaussian_taps()
    k = len(taps)
    h, w = x.shape[-2:]
    a = x[..., :, : w - k + 1] * taps[0]
    for j in range(1, k):
        a.add_(x[..., :, j : j + w - k + 1], alpha=taps[j])
    b = a[..., : h - k + 1, :] * taps[0]
    for j in range(1, k):
        b.add_(a[..., j : j + h - k + 1, :], alpha=taps[j])
    return b


def _pair_means(x, y, threads: int | None, pairs_per_batch: int, want_cs: bool, desc: str):
    """Mean SSIM (and mean contrast-structure term) of every (image, reference) pair at one scale.

    ``x``: (N, h, w), ``y``: (R, h, w) float32 tensors. Returns float64 tensors
    (N, R): the SSIM means and, if ``want_cs``, the ``cs`` means (else None).
    """
    import torch

    from ..progress import progress

    c1, c2 = _K1**2, _K2**2
    # (co)variances are computed on images shifted by their global mean: they are
    # shift invariant, and smaller local means mean less float32 cancellation
    x_shift = x.mean(dim=(-2, -1), keepdim=True)
    x = x - x_shift
    y_shift = y.mean(dim=(-2, -1), keepdim=True)
    y = y - y_shift
    mu_y = _filter_valid(y)
    var_y_c2 = (_filter_valid(y * y) - mu_y * mu_y).add_(c2)
    my_true = mu_y + y_shift  # local means of the unshifted references
    my2 = my_true * my_true

    # Small blocks of pairs stay in the CPU cache, and blocks of images are spread over
    # worker threads running single-threaded torch ops: much faster than large batches
    # with intra-op threads, which stall whenever another process takes a core.
    n_img, n_ref = x.shape[0], y.shape[0]
    ref_step = min(n_ref, pairs_per_batch)
    img_step = max(1, pairs_per_batch // n_ref)
    out = torch.empty((n_img, n_ref), dtype=torch.float64)
    out_cs = torch.empty((n_img, n_ref), dtype=torch.float64) if want_cs else None

    def block(i: int) -> int:
        xb = x[i : i + img_step]
        mu_x = _filter_valid(xb)[:, None]  # (b, 1, h', w') against (r, h', w')
        var_x = _filter_valid(xb * xb)[:, None] - mu_x * mu_x
        mx_true = mu_x + x_shift[i : i + img_step, None]
        mx2_c1 = mx_true * mx_true + c1
        for j in range(0, n_ref, ref_step):
            r = slice(j, j + ref_step)
            cov = _filter_valid(xb[:, None] * y[None, r]).addcmul_(mu_x, mu_y[r], value=-1.0)
            cs = cov.mul_(2).add_(c2).div_(var_x + var_y_c2[r])  # contrast-structure map
            if out_cs is not None:
                out_cs[i : i + img_step, r] = cs.mean(dim=(-2, -1), dtype=torch.float64)
            lum = (mx_true * my_true[r]).mul_(2).add_(c1).div_(mx2_c1 + my2[r])
            out[i : i + img_step, r] = cs.mul_(lum).mean(dim=(-2, -1), dtype=torch.float64)
        return len(xb)

    previous_threads = torch.get_num_threads()
    n_threads = previous_threads if threads is None else int(threads)
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(n_threads) as pool, progress(total=n_img, desc=desc, unit="img") as bar:
            for done in as_completed([pool.submit(block, i) for i in range(0, n_img, img_step)]):
                bar.update(done.result())
    finally:
        torch.set_num_threads(previous_threads)
    return out, out_cs


def _check_run_args(pairs_per_batch: int, threads: int | None) -> None:
    validate.integer("pairs_per_batch", pairs_per_batch, minimum=1, maximum=validate.MAX_BATCH)  # a batch of pairs at once
    if threads is not None:
        validate.integer("threads", threads, minimum=1, maximum=MAX_COUNT)


def _stack_pair(images, references, size):
    imgs = check_images(images)
    refs = check_images(references, "references")
    x = _stack(imgs, size, "images")
    y = _stack(refs, size, "references")
    if x.shape[1:] != y.shape[1:]:
        raise InputError(
            f"images are {tuple(x.shape[1:])} but references are {tuple(y.shape[1:])}; "
            "pass size=(height, width) to resize them"
        )
    return x, y


def ssim_matrix(
    images: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    size: tuple[int, int] | None = (224, 288),
    pairs_per_batch: int = 16,
    threads: int | None = None,
) -> np.ndarray:
    """SSIM of every image against every reference.

    Parameters
    ----------
    images, references : sequence of numpy.ndarray
        Grayscale (H, W) images in [0, 1].
    size : (int, int) or None
        Common (height, width) everything is resized to; None: no resizing,
        all shapes must be equal.
    pairs_per_batch : int
        Image-reference pairs processed at once; small blocks stay in the CPU
        cache (16 is about 2x faster than 128).
    threads : int, optional
        Worker threads (default: ``torch.get_num_threads()``); torch's own
        thread count is set to 1 while they run and restored afterwards.

    Returns
    -------
    numpy.ndarray
        (N_images, N_references) float64 SSIM values in [-1, 1].
    """
    import torch

    size = _check_size(size)
    _check_run_args(pairs_per_batch, threads)
    with torch.no_grad():
        x, y = _stack_pair(images, references, size)
        ssim, _ = _pair_means(x, y, threads, pairs_per_batch, want_cs=False, desc="MSSIM")
    return ssim.numpy()


def _halve(t):
    """MATLAB ``imfilter(t, ones(2)/4, 'symmetric')`` then ``t(1:2:end, 1:2:end)`` on (N, h, w)."""
    for dim in (-2, -1):
        n = t.shape[dim]
        idx = list(range(0, n, 2))
        nxt = [min(i + 1, n - 1) for i in idx]  # 'symmetric' padding repeats the last row/column
        t = (t.index_select(dim, _index(idx)) + t.index_select(dim, _index(nxt))) * 0.5
    return t


def _index(values):
    import torch

    return torch.tensor(values, dtype=torch.long)


#: smallest side MS-SSIM accepts: 11 pixels (the window) left after four halvings
MS_SSIM_MIN_SIDE = 161


def ms_ssim_matrix(
    images: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    size: tuple[int, int] | None = (224, 288),
    pairs_per_batch: int = 16,
    threads: int | None = None,
) -> np.ndarray:
    """MS-SSIM (Wang, Simoncelli & Bovik 2003) of every image against every reference.

    Same arguments as :func:`ssim_matrix`; images (after resizing) need at
    least 161 pixels a side.

    Returns
    -------
    numpy.ndarray
        (N_images, N_references) float64 MS-SSIM values in [0, 1].
    """
    import torch

    size = _check_size(size)
    _check_run_args(pairs_per_batch, threads)
    with torch.no_grad():
        x, y = _stack_pair(images, references, size)
        if min(x.shape[1:]) < MS_SSIM_MIN_SIDE:
            raise InputError(
                f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE} pixels a side (11 after four halvings), "
                f"got {tuple(x.shape[1:])}; pass a larger size=(height, width)"
            )
        result = torch.ones((x.shape[0], y.shape[0]), dtype=torch.float64)
        last = len(MS_SSIM_WEIGHTS) - 1
        for level, weight in enumerate(MS_SSIM_WEIGHTS):
            ssim, cs = _pair_means(x, y, threads, pairs_per_batch, want_cs=level < last,
                                   desc=f"MS-SSIM {level + 1}/{last + 1}")
            term = ssim if level == last else cs
            result *= term.clamp(min=0.0) ** weight
            if level < last:
                x, y = _halve(x), _halve(y)
    return result.numpy()


def mssim_score(
    images: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    reduction: str = "mean",
    size: tuple[int, int] | None = (224, 288),
    method: str = "ssim",
) -> np.ndarray:
    """Mean SSIM of each image to the high-quality reference set (higher = better).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Grayscale (H, W) images in [0, 1] to score.
    references : sequence of numpy.ndarray
        High-quality reference images (e.g. the standard planes), grayscale in [0, 1].
    reduction : {"mean", "max"}
        Aggregate over references: "mean" (mean SSIM, the paper's MSSIM) or
        "max" (SSIM to the most similar reference).
    size : (int, int) or None
        Common (height, width) for images and references (anti-aliased
        bilinear resize); None requires equal shapes.
    method : {"ssim", "ms-ssim"}
        "ssim": single-scale SSIM (Wang et al. 2004, the paper's MSSIM);
        "ms-ssim": multi-scale SSIM (Wang, Simoncelli & Bovik 2003).

    Returns
    -------
    numpy.ndarray
        (N,) float64 scores in [-1, 1] ([0, 1] for MS-SSIM).

    Raises
    ------
    crl_uiqa.errors.InputError
        On empty lists, non-2-D or non-finite images, different shapes with
        ``size=None``, or images too small for SSIM or MS-SSIM.
    crl_uiqa.errors.ConfigError
        An unknown reduction or method, or a ``size`` that is not (height,
        width) within 11 to 8192 pixels per side.
    """
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; use one of {', '.join(_REDUCTIONS)}")
    if method not in _METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(_METHODS)}")
    matrix = ssim_matrix if method == "ssim" else ms_ssim_matrix
    sims = matrix(images, references, size=size)
    return sims.mean(axis=1) if reduction == "mean" else sims.max(axis=1)
