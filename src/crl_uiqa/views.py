"""The three views of each training sample (paper Sec. 2.2).

* source view: the image itself;
* weak view: random horizontal flip, vertical flip and rotation, which leave
  quality unchanged (consistency, Eq. 5);
* strong view: a corruption of random degree, whose margin epsilon_i grows with
  the degree (relativity, Eq. 6). The paper uses gaussian or motion blur
  (``paper``); the default here draws from all ultrasound corruption families
  (``ultrasound``), which generalises better to artifacts never seen in
  training (BENCHMARKS.md, leave-one-family-out).

The paper leaves the degree scale and epsilon open. Here a degree ``d`` in
[0, 1] has a per-family physical meaning (see :mod:`crl_uiqa.corruptions`)
and ``epsilon_i = margin_scale * calibration[family] * d_i``; with the default
calibration of 1 for every family the margin is proportional to the normalised
corruption strength. Everything is batched on the images' device and driven by
a ``torch.Generator`` so a seed reproduces the views.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from kornia.geometry.transform import rotate

from .corruptions import PAPER_FAMILIES, ULTRASOUND_FAMILIES, sample_strong_views
from .errors import ConfigError


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None, device) -> torch.Tensor:
    gdev = generator.device if generator is not None else "cpu"
    return (torch.rand(n, generator=generator, device=gdev) * (hi - lo) + lo).to(device)


def weak_view(
    images: torch.Tensor,
    *,
    max_rotation: float = 15.0,
    hflip_p: float = 0.5,
    vflip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random flips and a rotation in [-max_rotation, max_rotation] degrees per sample."""
    b = images.shape[0]
    hf = _uniform(b, 0, 1, generator, images.device) < hflip_p
    vf = _uniform(b, 0, 1, generator, images.device) < vflip_p
    angle = _uniform(b, -max_rotation, max_rotation, generator, images.device)
    out = torch.where(hf.view(-1, 1, 1, 1), images.flip(-1), images)
    out = torch.where(vf.view(-1, 1, 1, 1), out.flip(-2), out)
    if max_rotation > 0:
        out = rotate(out, angle.to(out.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out


def parse_strong_views(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``paper`` (gaussian + motion blur), ``ultrasound`` (all families) or a comma list of families."""
    if not isinstance(spec, str):
        fams = tuple(spec)
    elif spec == "paper":
        return tuple(PAPER_FAMILIES)
    elif spec == "ultrasound":
        return tuple(ULTRASOUND_FAMILIES)
    else:
        fams = tuple(s.strip() for s in spec.split(",") if s.strip())
    unknown = [f for f in fams if f not in ULTRASOUND_FAMILIES]
    if unknown or not fams:
        raise ConfigError(f"unknown strong-view families {unknown}; use paper, ultrasound or a comma list of "
                         + ", ".join(ULTRASOUND_FAMILIES))
    return fams


@dataclass
class StrongViews:
    """How strong views and their margins are drawn."""

    families: tuple[str, ...] = tuple(ULTRASOUND_FAMILIES)
    degree_range: tuple[float, float] = (0.1, 1.0)
    margin_scale: float = 0.1
    calibration: Mapping[str, float] = field(default_factory=dict)

    def margins(self, families: Sequence[str], degrees: torch.Tensor) -> torch.Tensor:
        """epsilon_i = margin_scale * calibration[family_i] * degree_i."""
        w = torch.tensor([float(self.calibration.get(f, 1.0)) for f in families], dtype=degrees.dtype,
                         device=degrees.device)
        return self.margin_scale * w * degrees

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """Corrupted images and their margins epsilon (B,)."""
        out, fams, deg = sample_strong_views(images, self.families, generator=generator, degree_range=self.degree_range)
        return out, self.margins(fams, deg.to(images.device, images.dtype))
