"""Resolution-loss families: ``gaussian_blur``, ``motion_blur``, ``low_resolution``.

``gaussian_blur`` and ``motion_blur`` are the two corruptions named by the
CRL-UIQA paper for its strongly augmented views. Sizes are relative to the
image so that a degree means the same visual loss at 112x144 and 224x288; the
reference length is ``s = min(H, W)``.
"""
from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Corruption, gaussian_radius, per_sample_uniform

#: sigma_max = GAUSSIAN_SIGMA_MAX_FRACTION * min(H, W) (4.5 px at 224x288, 2.2 px at 112x144).
GAUSSIAN_SIGMA_MAX_FRACTION = 0.02
#: Motion streak length at degree 1 = MOTION_LENGTH_MAX_FRACTION * min(H, W) (13.4 px at 224x288).
MOTION_LENGTH_MAX_FRACTION = 0.06
#: Down-sampling factor at degree 1 (224x288 becomes 37x48 before up-sampling back).
LOW_RESOLUTION_FACTOR_MAX = 6.0


def gaussian_blur(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Isotropic Gaussian blur (defocus, wrong focal zone, beam too wide).

    Physical meaning: an ultrasound point-spread function wider than the
    system's best (focus set at the wrong depth, low transmit frequency,
    aberration through fat layers) smears echoes so edges and fine speckle are
    lost. Modelled by convolution with a Gaussian.

    Parameter mapping: ``sigma = degree * sigma_max`` pixels with
    ``sigma_max = 0.02 * min(H, W)`` (:data:`GAUSSIAN_SIGMA_MAX_FRACTION`).
    The kernel radius ``ceil(3 * sigma_max)`` depends only on the image size,
    not on the batch, so a batch and its single images give the same result.
    Borders are reflected. Deterministic (the generator is not used).
    Implemented with :func:`kornia.filters.gaussian_blur2d` with one sigma per
    sample.
    """
    _, _, h, w = images.shape
    sigma_max = GAUSSIAN_SIGMA_MAX_FRACTION * min(h, w)
    ks = 2 * gaussian_radius(sigma_max, min(h, w)) + 1
    # kornia needs sigma > 0; degree-0 samples are restored exactly by Corruption.__call__.
    sigma = (degree * sigma_max).clamp_min(1e-3).to(images.dtype)
    return kornia.filters.gaussian_blur2d(images, (ks, ks), torch.stack([sigma, sigma], dim=1), border_type="reflect")


def motion_kernels(lengths: Tensor, angles: Tensor, size: int) -> Tensor:
    """Anti-aliased straight-line (box) kernels of continuous length, one per sample.

    A pixel at offset (x, y) from the centre has weight
    ``max(0, 1 - |perp|) * clip(length / 2 + 0.5 - |par|, 0, 1)`` where ``par``
    and ``perp`` are its coordinates along and across the line, so the line has
    a one-pixel tent profile across and fractional end taps along; each kernel
    is normalised to sum 1. ``angles`` are radians, anti-clockwise as displayed
    (row 0 at the top).

    Parameters
    ----------
    lengths : Tensor
        (B,) streak lengths in pixels (>= 0; 0 gives a single-pixel kernel).
    angles : Tensor
        (B,) angles in radians.
    size : int
        Odd kernel side; must exceed the longest line.

    Returns
    -------
    Tensor
        (B, size, size) kernels summing to 1.
    """
    r = torch.arange(size, device=lengths.device, dtype=lengths.dtype) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    c = torch.cos(angles).view(-1, 1, 1)
    s = torch.sin(angles).view(-1, 1, 1)
    par = xx * c - yy * s
    perp = xx * s + yy * c
    half = (lengths / 2 + 0.5).view(-1, 1, 1)
    k = (1 - perp.abs()).clamp_min(0) * (half - par.abs()).clamp(0, 1)
    return k / k.sum(dim=(1, 2), keepdim=True)


def motion_blur(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Linear motion blur (probe or fetal motion during the frame).

    Physical meaning: when the probe slides or the fetus moves while the frame
    (or the persistence / frame-averaging window) is acquired, echoes are
    smeared along the direction of motion.

    Parameter mapping: a straight streak of length
    ``L = degree * 0.06 * min(H, W)`` pixels (:data:`MOTION_LENGTH_MAX_FRACTION`,
    13.4 px at 224x288) at an angle drawn uniformly in [0, 180) degrees per
    sample. Each sample gets its own (k, k) kernel from :func:`motion_kernels`
    (continuous length, so the degree acts smoothly, unlike
    :func:`kornia.filters.get_motion_kernel2d` whose length is the odd kernel
    side); the (B, k, k) stack is applied with
    :func:`kornia.filters.filter2d` (reflected borders). ``k`` depends only on
    the image size. Random draws: 1 per sample (the angle).
    """
    b, _, h, w = images.shape
    l_max = MOTION_LENGTH_MAX_FRACTION * min(h, w)
    radius = int(min(max(1, math.floor(math.hypot(l_max / 2 + 0.5, 1.0))), min(h, w) - 1))
    angles = per_sample_uniform(b, (1,), generator, images.device)[:, 0] * math.pi
    kernels = motion_kernels(degree * l_max, angles, 2 * radius + 1).to(images.dtype)
    return kornia.filters.filter2d(images, kernels, border_type="reflect")


def low_resolution(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Down-sample then up-sample (coarse scan-line density, low-resolution capture).

    Physical meaning: too few scan lines, a low transmit frequency, a heavily
    zoomed or compressed video capture, or a frame grabbed at low resolution
    and rescaled: fine detail is lost and the image looks soft and blocky.

    Parameter mapping: factor ``f = 1 + degree * (6 - 1)``
    (:data:`LOW_RESOLUTION_FACTOR_MAX`); each image is resized to
    ``(round(H / f), round(W / f))`` (at least 2x2) with anti-aliased bilinear
    interpolation and back to (H, W) with bilinear interpolation
    (:func:`torch.nn.functional.interpolate`). Because the rounded size is an
    integer, tiny degrees that round to the original size leave the image
    unchanged. Deterministic.
    """
    _, _, h, w = images.shape
    factors = [1.0 + d * (LOW_RESOLUTION_FACTOR_MAX - 1.0) for d in degree.tolist()]
    out = torch.empty_like(images)
    for i, f in enumerate(factors):
        size = (max(2, round(h / f)), max(2, round(w / f)))
        if size == (h, w):
            out[i] = images[i]
            continue
        small = F.interpolate(images[i : i + 1], size=size, mode="bilinear", align_corners=False, antialias=True)
        out[i] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    return out


GAUSSIAN_BLUR = Corruption("gaussian_blur", gaussian_blur, "defocus / wide beam: isotropic Gaussian blur", False)
MOTION_BLUR = Corruption("motion_blur", motion_blur, "probe or fetal motion: linear streak at a random angle", True)
LOW_RESOLUTION = Corruption("low_resolution", low_resolution, "coarse sampling: down-sample then up-sample", False)
