"""Acoustic artefact families: ``shadow``, ``attenuation``, ``haze``.

Depth runs down the rows (row 0 = skin line under the probe). The models follow
the ultrasound augmentations of Ostvik et al. (2021, depth attenuation and
haze) and Smistad et al. (2018, shadows) as implemented in the ``usaugment``
package, rewritten batched in torch (see the package docstring for why
``usaugment`` itself is not used).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Corruption, lerp_range, per_sample_normal, per_sample_uniform

#: Shadow darkening at degree 1: intensity x (1 - SHADOW_STRENGTH) inside the shadow.
SHADOW_STRENGTH = 0.9
#: Attenuation over the full image depth at degree 1, in nepers of amplitude (3 Np ~= 26 dB).
ATTENUATION_K = 3.0
#: Peak additive haze intensity near the top at degree 1.
HAZE_AMPLITUDE = 0.5
#: Veiling-glare fraction at degree 1: out = x * (1 - g) + g with g = HAZE_GLARE * degree.
HAZE_GLARE = 0.15
#: Resolution (rows, cols) of the random low-frequency field that modulates the haze.
HAZE_GRID = (6, 8)


def _grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    rows = torch.arange(h, device=device, dtype=dtype).view(1, h, 1)
    cols = torch.arange(w, device=device, dtype=dtype).view(1, 1, w)
    return rows, cols


def shadow_masks(height: int, width: int, params: Tensor) -> Tensor:
    """Soft acoustic-shadow masks (1 inside the shadow, 0 outside).

    Parameters
    ----------
    height, width : int
        Image size.
    params : Tensor
        (B, 4) U[0, 1) draws: lateral origin, depth origin, half-width and
        virtual-apex distance of each shadow (mapped as in :func:`shadow`).

    Returns
    -------
    Tensor
        (B, 1, height, width) masks in [0, 1].
    """
    rows, cols = _grid(height, width, params.device, params.dtype)
    c0 = lerp_range(params[:, 0], 0.15, 0.85).view(-1, 1, 1) * width
    r0 = lerp_range(params[:, 1], 0.10, 0.60).view(-1, 1, 1) * height
    w0 = lerp_range(params[:, 2], 0.04, 0.12).view(-1, 1, 1) * width
    apex = lerp_range(params[:, 3], 0.25, 2.00).view(-1, 1, 1) * height
    # The shadow follows the beam line from a virtual apex above the top centre through (r0, c0),
    # widening with depth like a beam cone (a far apex gives a nearly vertical band, as with a linear probe).
    spread = (rows + apex) / (r0 + apex)
    centre = width / 2 + (c0 - width / 2) * spread
    half_width = w0 * spread
    edge = max(1.0, 0.01 * width)  # soft lateral edge (px)
    onset = max(1.0, 0.02 * height)  # soft start below the reflector (px)
    lateral = ((half_width - (cols - centre).abs()) / edge + 0.5).clamp(0, 1)
    below = ((rows - r0) / onset + 0.5).clamp(0, 1)
    return (lateral * below).unsqueeze(1)


def shadow(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Acoustic shadowing below a strong reflector / attenuator.

    Physical meaning: bone (fetal spine, ribs, skull), calcifications or gas
    reflect or absorb almost all the beam, so everything beneath them along the
    beam is dark; a shadow over the anatomy of interest hides it.

    Parameter mapping: per sample a point is drawn at lateral position
    U(0.15, 0.85) * W and depth U(0.10, 0.60) * H; below it a dark cone of
    half-width U(0.04, 0.12) * W runs down the rows along the beam line from a
    virtual apex U(0.25, 2.0) * H above the top centre (soft 1 % / 2 % edges,
    :func:`shadow_masks`). Inside it the intensity is multiplied by
    ``1 - degree * 0.9`` (:data:`SHADOW_STRENGTH`); the geometry does not
    depend on the degree. Random draws: 4 uniforms per sample.
    """
    b, _, h, w = images.shape
    params = per_sample_uniform(b, (4,), generator, images.device)
    mask = shadow_masks(h, w, params).to(images.dtype)
    return images * (1 - degree.view(-1, 1, 1, 1).to(images.dtype) * SHADOW_STRENGTH * mask)


def attenuation(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Depth attenuation not compensated by the time-gain control (TGC).

    Physical meaning: soft tissue attenuates ~0.5 dB/cm/MHz; the TGC is meant
    to compensate it. A wrong TGC setting, a too-high frequency for the depth,
    or a strongly attenuating patient leaves the deep part of the image dark
    and the far anatomy invisible.

    Parameter mapping: ``out = x * exp(-degree * 3 * depth)`` with
    ``depth = row / (H - 1)`` in [0, 1] (:data:`ATTENUATION_K`): at degree 1 the
    bottom row keeps exp(-3) ~= 5 % of its amplitude (-26 dB).
    Deterministic.
    """
    _, _, h, _ = images.shape
    depth = torch.linspace(0.0, 1.0, h, device=images.device, dtype=images.dtype).view(1, 1, h, 1)
    return images * torch.exp(-degree.view(-1, 1, 1, 1).to(images.dtype) * ATTENUATION_K * depth)


def haze_maps(height: int, width: int, params: Tensor, coarse: Tensor) -> Tensor:
    """Near-field reverberation haze maps in [0, 1].

    ``haze = exp(-row / l) * (0.5 + 0.5 * tanh(smooth)) * (0.7 + 0.3 * cos(2 pi row / p + phi))``:
    decays with depth over ``l``, is modulated laterally by a smooth random
    field (the bicubically up-sampled ``coarse`` normals) and by horizontal
    reverberation bands of period ``p``.

    Parameters
    ----------
    height, width : int
        Image size.
    params : Tensor
        (B, 3) U[0, 1) draws: decay depth l = U(0.10, 0.30) * H, band period
        p = U(0.03, 0.08) * H, band phase phi = U(0, 2 pi).
    coarse : Tensor
        (B, 1, gh, gw) N(0, 1) draws for the smooth modulation.

    Returns
    -------
    Tensor
        (B, 1, height, width).
    """
    rows, _ = _grid(height, width, params.device, params.dtype)
    decay = lerp_range(params[:, 0], 0.10, 0.30).view(-1, 1, 1) * height
    period = lerp_range(params[:, 1], 0.03, 0.08).view(-1, 1, 1) * height
    phase = params[:, 2].view(-1, 1, 1) * 2 * math.pi
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[:, 0]
    haze = torch.exp(-rows / decay) * (0.5 + 0.5 * torch.tanh(smooth))
    haze = haze * (0.7 + 0.3 * torch.cos(2 * math.pi * rows / period + phase))
    return haze.unsqueeze(1)


def haze(images: Tensor, degree: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Reverberation clutter / haze near the probe plus veiling glare.

    Physical meaning: multiple reflections between the probe and the abdominal
    wall (and side lobes) add a grey, low-frequency fog with faint horizontal
    reverberation bands in the near field; scattered clutter also lifts the
    whole image's black level (veiling glare), reducing contrast so cysts and
    cardiac chambers look filled in.

    Parameter mapping: ``out = x * (1 - g) + g + degree * 0.5 * haze`` with
    glare ``g = 0.15 * degree`` (:data:`HAZE_GLARE`, :data:`HAZE_AMPLITUDE`)
    and ``haze`` the random near-field map of :func:`haze_maps` (decay depth
    10-30 % of H, band period 3-8 % of H, lateral modulation from a 6x8 random
    field); clipped to [0, 1]. Random draws: 3 uniforms then 48 normals per
    sample.
    """
    b, _, h, w = images.shape
    params = torch.empty(b, 3, device=images.device)
    coarse = torch.empty(b, 1, *HAZE_GRID, device=images.device)
    for i in range(b):  # keep each sample's draws together, in batch order
        params[i] = per_sample_uniform(1, (3,), generator, images.device)[0]
        coarse[i] = per_sample_normal(1, (1, *HAZE_GRID), generator, images.device)[0]
    hz = haze_maps(h, w, params, coarse).to(images.dtype)
    d = degree.view(-1, 1, 1, 1).to(images.dtype)
    glare = HAZE_GLARE * d
    return images * (1 - glare) + glare + d * HAZE_AMPLITUDE * hz


SHADOW = Corruption("shadow", shadow, "acoustic shadowing: dark cone below a strong reflector", True)
ATTENUATION = Corruption("attenuation", attenuation, "uncompensated depth attenuation / wrong TGC", False)
HAZE = Corruption("haze", haze, "near-field reverberation haze plus veiling glare", True)
