"""Noise families: ``gaussian_noise`` (additive) and ``speckle_noise`` (multiplicative)."""
from __future__ import annotations

import math

import kornia
import torch
from torch import Tensor

from .base import Corruption, gaussian_radius, per_sample_normal

#: Standard deviation of the additive noise at degree 1 (intensity units, image in [0, 1]).
GAUSSIAN_NOISE_SIGMA_MAX = 0.2
#: Speckle grain (correlation) size: Gaussian PSF sigma = max(0.5 px, SPECKLE_GRAIN_FRACTION * min(H, W)).
SPECKLE_GRAIN_FRACTION = 0.004
#: Mean of a Rayleigh(1) variable, sqrt(pi / 2): divides the envelope to give unit-mean speckle.
RAYLEIGH_MEAN = math.sqrt(math.pi / 2)


def gaussian_noise(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Additive white Gaussian noise (electronic / thermal receiver noise).

    Physical meaning: receiver and quantisation noise that is independent of the
    echo; it becomes visible when the overall gain or TGC is turned up to
    compensate for a weak signal (deep structures, obese patients), filling
    anechoic regions with grainy grey.

    Parameter mapping: ``out = x + degree * 0.2 * n`` with ``n ~ N(0, 1)``
    i.i.d. per pixel (:data:`GAUSSIAN_NOISE_SIGMA_MAX`), then clipped to
    [0, 1]. Random draws: H * W normals per sample.
    """
    b, _, h, w = images.shape
    noise = per_sample_normal(b, (1, h, w), generator, images.device).to(images.dtype)
    return images + (degree * GAUSSIAN_NOISE_SIGMA_MAX).view(-1, 1, 1, 1).to(images.dtype) * noise


def speckle_field(
    batch: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Unit-mean, spatially correlated Rayleigh speckle, one field per sample.

    A circular complex Gaussian scattering field (two independent N(0, 1)
    images, real and imaginary) is low-pass filtered with a Gaussian point
    spread function (sigma = max(0.5, 0.004 * min(H, W)) px, the speckle grain)
    and its envelope ``|z|`` is taken, which is Rayleigh distributed (fully
    developed speckle). The envelope is divided by the filtered field's exact
    standard deviation and by the Rayleigh mean sqrt(pi/2), so the field has
    mean 1 and standard deviation sqrt(4/pi - 1) ~= 0.523.

    Returns
    -------
    Tensor
        (batch, 1, height, width) float32, positive, mean ~1.
    """
    sigma = max(0.5, SPECKLE_GRAIN_FRACTION * min(height, width))
    ks = 2 * gaussian_radius(sigma, min(height, width)) + 1
    field = per_sample_normal(batch, (2, height, width), generator, device).view(2 * batch, 1, height, width)
    # One sigma row per field: kornia then convolves with per-sample kernels through a grouped
    # convolution, which the PyTorch CPU backend runs ~8x faster than one kernel shared by the batch.
    sigmas = torch.full((2 * batch, 2), sigma, device=device)
    field = kornia.filters.gaussian_blur2d(field, (ks, ks), sigmas, border_type="reflect").view(batch, 2, height, width)
    k1 = kornia.filters.get_gaussian_kernel1d(ks, sigma, device=device)
    std = float((k1**2).sum())  # per-component std of the filtered field: sqrt(sum k2d^2) = sum k1d^2
    envelope = torch.hypot(field[:, 0], field[:, 1])
    return envelope.mul_(1.0 / (std * RAYLEIGH_MEAN)).unsqueeze(1)


def speckle_noise(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Multiplicative Rayleigh speckle (coherent interference of sub-resolution scatterers).

    Physical meaning: ultrasound speckle is the interference pattern of many
    scatterers inside one resolution cell; it multiplies the echo amplitude,
    so bright tissue gets grainier in absolute terms than dark fluid, and it
    masks low-contrast detail. Extra speckle appears when compounding or
    speckle reduction is off, or the frame is noisy.

    Parameter mapping: ``out = x * (1 + degree * (n - 1))`` where ``n`` is the
    unit-mean correlated Rayleigh field of :func:`speckle_field` (std 0.523),
    so the multiplicative factor has mean 1, standard deviation
    ``0.523 * degree`` and stays >= 1 - degree >= 0; clipped to [0, 1].
    Random draws: 2 * H * W normals per sample.
    """
    b, _, h, w = images.shape
    n = speckle_field(b, h, w, generator, images.device).to(images.dtype)
    d = degree.view(-1, 1, 1, 1).to(images.dtype)
    return images * (1 + d * (n - 1))


GAUSSIAN_NOISE = Corruption("gaussian_noise", gaussian_noise, "electronic receiver noise: additive Gaussian", True)
SPECKLE_NOISE = Corruption("speckle_noise", speckle_noise, "coherent speckle: multiplicative Rayleigh noise", True)
