"""Operator-setting and field-of-view families: ``over_gain``, ``under_gain``, ``partial_fov``."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Corruption, per_sample_uniform

#: Gain factor at degree 1 for ``over_gain``.
OVER_GAIN_MAX = 3.0
#: Black-level lift at degree 1 for ``over_gain`` (noise floor made visible).
OVER_GAIN_FLOOR = 0.1
#: Brightness loss at degree 1 for ``under_gain``: out = (1 - 0.75 degree) * x ** (1 + degree).
UNDER_GAIN_DIMMING = 0.75
#: Fraction of the width (left/right) or height (bottom) lost at degree 1 for ``partial_fov``.
PARTIAL_FOV_MAX = 0.5
#: Sides that ``partial_fov`` may cut, chosen uniformly per sample.
PARTIAL_FOV_SIDES = ("left", "right", "bottom")


def over_gain(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Excessive overall gain: a washed-out, saturated image.

    Physical meaning: the overall receive gain (or TGC) set too high makes
    strong echoes saturate at white, so bright structures merge and lose their
    internal detail, and lifts the noise floor so fluid-filled regions (cardiac
    chambers, stomach, bladder) turn grey.

    Parameter mapping: ``out = clip(x * (1 + degree * (3 - 1)) + 0.1 * degree, 0, 1)``
    (:data:`OVER_GAIN_MAX`, :data:`OVER_GAIN_FLOOR`): the mean intensity and the
    fraction of saturated pixels grow with the degree. Deterministic.
    """
    d = degree.view(-1, 1, 1, 1).to(images.dtype)
    return images * (1 + d * (OVER_GAIN_MAX - 1)) + OVER_GAIN_FLOOR * d


def under_gain(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Insufficient gain: a dark image with weak echoes lost.

    Physical meaning: the overall gain too low (or the reject / compression set
    too aggressively) pushes weak parenchymal echoes towards black and dims
    strong ones, so the displayed dynamic range shrinks and low-contrast
    boundaries disappear.

    Parameter mapping: ``out = (1 - 0.75 * degree) * x ** (1 + degree)``
    (:data:`UNDER_GAIN_DIMMING`): a gain of 0.25 and a gamma of 2 at degree 1,
    the gamma crushing the dark tones more than the bright ones; the mean
    intensity and the contrast (standard deviation) fall with the degree.
    Deterministic.
    """
    d = degree.view(-1, 1, 1, 1).to(images.dtype)
    return (1 - UNDER_GAIN_DIMMING * d) * images.pow(1 + d)


def partial_fov(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Partial field of view: part of the image is black.

    Physical meaning: the probe loses acoustic contact at one end (lift-off,
    not enough gel, a rib under one edge), leaving a black strip on that side,
    or the imaging depth is set too shallow / the sector too narrow, so the
    bottom of the anatomy is cut off.

    Parameter mapping: per sample a side is drawn uniformly from
    :data:`PARTIAL_FOV_SIDES` (left, right, bottom); a strip of
    ``degree * 0.5`` (:data:`PARTIAL_FOV_MAX`) of the width (left/right) or
    height (bottom) on that side is set to 0 (pixels whose centre lies in the
    strip). Random draws: 1 uniform per sample (the side).
    """
    b, _, h, w = images.shape
    side = (per_sample_uniform(b, (1,), generator, images.device)[:, 0] * len(PARTIAL_FOV_SIDES)).long()
    side = side.clamp_max(len(PARTIAL_FOV_SIDES) - 1).view(-1, 1, 1, 1)
    frac = (degree * PARTIAL_FOV_MAX).view(-1, 1, 1, 1)
    cols = (torch.arange(w, device=images.device, dtype=torch.float32) + 0.5).view(1, 1, 1, w) / w
    rows = (torch.arange(h, device=images.device, dtype=torch.float32) + 0.5).view(1, 1, h, 1) / h
    lost = torch.where(
        side == 0,
        cols < frac,
        torch.where(side == 1, cols > 1 - frac, rows > 1 - frac),
    )
    return images.masked_fill(lost, 0.0)


OVER_GAIN = Corruption("over_gain", over_gain, "gain too high: saturation and lifted noise floor", False)
UNDER_GAIN = Corruption("under_gain", under_gain, "gain too low: dark image, weak echoes lost", False)
PARTIAL_FOV = Corruption("partial_fov", partial_fov, "lost probe contact / cut-off depth: black strip", True)
