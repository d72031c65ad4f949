"""Shared machinery of the corruption families: the :class:`Corruption` record,
input validation and reproducible random draws.

Every family is a plain function ``apply(images, degree, generator) -> Tensor``
that receives an already validated batch ``images`` (B, 1, H, W) float in
[0, 1] and per-sample degrees ``degree`` (B,) in [0, 1] on the images' device.
It may return values outside [0, 1]; :meth:`Corruption.__call__` clamps the
result and copies the input unchanged wherever the degree is 0, so that degree 0
is an exact identity for every family.

Randomness
----------
All random draws go through the optional :class:`torch.Generator` and are made
*sample by sample, in batch order* (:func:`per_sample_uniform`,
:func:`per_sample_normal`), each sample drawing the same number of values
whatever its degree. Consequently corrupting a batch gives exactly the same
result as corrupting its images one at a time, in order, with the same
generator, and a seeded generator makes every result reproducible. Random
tensors are created on the generator's device (the CPU for the default
generator) and moved to the images' device, so a CPU generator also drives
corruption of CUDA batches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError, InputError

ApplyFn = Callable[[Tensor, Tensor, "torch.Generator | None"], Tensor]


@dataclass(frozen=True)
class Corruption:
    """One corruption family.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"gaussian_blur"``.
    apply : callable
        ``apply(images, degree, generator) -> Tensor``: the raw batched operation
        (validated inputs, output not yet clamped). Prefer calling the
        :class:`Corruption` itself, which validates, clamps and keeps degree 0
        an identity.
    summary : str
        One-line physical meaning, for listings and reports.
    stochastic : bool
        Whether the family draws random numbers (a random angle, noise field,
        shadow position...). Deterministic families ignore the generator.
    """

    name: str
    apply: ApplyFn
    summary: str
    stochastic: bool

    def __call__(
        self,
        images: Tensor,
        degree: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Corrupt ``images`` (B, 1, H, W) in [0, 1] with per-sample ``degree``.

        Parameters
        ----------
        images : Tensor
            Float batch (B, 1, H, W) with values in [0, 1].
        degree : Tensor or float
            Degree in [0, 1], one per sample (B,) or a single value for all.
        generator : torch.Generator, optional
            Source of randomness; ``None`` uses torch's global generator.

        Returns
        -------
        Tensor
            Corrupted batch (B, 1, H, W) in [0, 1], same dtype and device. Samples
            with degree 0 are returned bit-for-bit unchanged.
        """
        check_images(images)
        deg = as_degree(degree, images.shape[0], images.device)
        if images.shape[0] == 0:
            return images.clone()
        out = self.apply(images, deg, generator).to(images.dtype).clamp_(0.0, 1.0)
        keep = (deg == 0).view(-1, 1, 1, 1)
        return torch.where(keep, images, out)


def check_images(images: Tensor) -> None:
    """Validate a batch of grayscale images.

    Raises
    ------
    crl_uiqa.errors.InputError
        If ``images`` is not a floating tensor of shape (B, 1, H, W) with values
        in [0, 1] (NaN included).
    """
    if not isinstance(images, Tensor):
        raise InputError(f"images must be a torch.Tensor of shape (B, 1, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 1:
        raise InputError(f"images must have shape (B, 1, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InputError(f"images must be a floating-point tensor in [0, 1], got dtype {images.dtype}")
    if images.shape[-2] < 2 or images.shape[-1] < 2:
        raise InputError(f"images must be at least 2x2 pixels, got {tuple(images.shape[-2:])}")
    if images.numel() and not bool(((images >= 0) & (images <= 1)).all()):
        lo, hi = float(images.min()), float(images.max())
        raise InputError(f"images must have values in [0, 1], got range [{lo:.9g}, {hi:.9g}] (or NaN)")


def as_degree(degree: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """Turn ``degree`` (float, 0-d tensor or (B,) tensor) into a float32 (B,) tensor.

    Raises
    ------
    crl_uiqa.errors.ConfigError
        If the shape does not match the batch or a value lies outside [0, 1].
    """
    if isinstance(degree, Tensor):
        deg = degree.detach().to(device=device, dtype=torch.float32)
        if deg.ndim == 0:
            deg = deg.expand(batch)
        elif deg.shape != (batch,):
            raise ConfigError(f"degree must be a float or a tensor of shape ({batch},), got shape {tuple(deg.shape)}")
    elif isinstance(degree, (int, float)) and not isinstance(degree, bool):
        deg = torch.full((batch,), float(degree), device=device, dtype=torch.float32)
    else:
        raise ConfigError(f"degree must be a float or a tensor of shape ({batch},), got {type(degree).__name__}")
    if deg.numel() and not bool(((deg >= 0) & (deg <= 1)).all()):
        raise ConfigError(f"degree must lie in [0, 1], got {deg.tolist()}")
    return deg.contiguous()


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device


def _per_sample(draw, batch: int, shape: tuple[int, ...], generator: torch.Generator | None,
                device: torch.device) -> Tensor:
    """``draw(shape)`` once per sample, in batch order, on the generator's device, then moved to ``device``."""
    gdev = _generator_device(generator)
    draws = [draw(shape, generator=generator, device=gdev) for _ in range(batch)]
    return torch.stack(draws).to(device) if draws else torch.empty((0, *shape), device=device)


def per_sample_uniform(
    batch: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Draw U[0, 1) values of ``shape`` for each sample, sample by sample.

    Returns
    -------
    Tensor
        (batch, *shape) float32 on ``device``.
    """
    return _per_sample(torch.rand, batch, shape, generator, device)


def per_sample_normal(
    batch: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Draw N(0, 1) values of ``shape`` for each sample, sample by sample.

    Returns
    -------
    Tensor
        (batch, *shape) float32 on ``device``.
    """
    return _per_sample(torch.randn, batch, shape, generator, device)


def lerp_range(u: Tensor, lo: float, hi: float) -> Tensor:
    """Map U[0, 1) draws ``u`` linearly onto [lo, hi)."""
    return lo + (hi - lo) * u


def gaussian_radius(sigma: float, size: int) -> int:
    """Half-width ``ceil(3 sigma)`` of a Gaussian kernel, at least 1 and below ``size``
    (reflect padding needs the pad smaller than the image side)."""
    return int(min(max(1, math.ceil(3.0 * sigma)), size - 1))
