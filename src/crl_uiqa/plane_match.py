"""Plane match: how closely a frame shows the reference standard plane, by template matching.

A quality score of a standard plane mixes two things: whether the frame *is*
the standard plane (the probe's position) and how well it was acquired
(gain, focus, noise, shadow, motion). SonoNet-16's plane recognition fails on
badly acquired planes (BENCHMARKS.md, "Demo: which factor the encoder fails to
supply"), so the best frame of a sweep can be missed by many frames. This
module gives a second, untrained plane term that leans on the anatomy's shape
rather than on what a network learned: normalised cross-correlation with
templates cut from the reference planes.

* **Where the anatomy is** (:func:`class_centres`): the encoder's own class map
  of the target plane (SonoNet's category-specific feature map, Baumgartner et
  al. 2017, whose global average is the plane's logit) locates it in each
  reference: the centroid of the part of the map above half its range. No
  knowledge of how the images were made.
* **Templates** (:class:`PlaneTemplates`): each reference, and its mirror
  image, rotated in ``rotation_step`` degree steps about that centre (a fetus
  lies at any rotation, either side up), smoothed by a Gaussian of ``sigma``
  pixels (speckle), averaged down ``pool`` times, and a square patch of
  ``2 * half`` pooled pixels cut about the centre.
* **The plane match of a frame** (:meth:`PlaneTemplates.score`): its best
  normalised cross-correlation with any template at any shift, in [-1, 1].

The settings (``SIGMA``, ``POOL``, ``HALF``, ``ROTATION_STEP``) are those of
the template term measured in BENCHMARKS.md ("Demo: acquisition normalisation,
posed references and template matching"); the class-map centre replaces the
simulator's anatomy centre used there. On the demo's held-out sweeps the plane
match follows the plane closeness better than SonoNet-16's own plane terms on
the seeds it was chosen on, and the demo's picks on the model's score plus it
land closer on average on seeds no choice looked at, about as often within 2
frames (BENCHMARKS.md, "Demo: the plane match"). ``crl-uiqa demo`` picks on
the model's score plus 0.5 times it (``--plane-match W`` sets the weight, 0 turns
it off). Images are gray
tensors (N, 1, H, W) in [0, 1], all of one size.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import validate as v
from .corruptions.base import gaussian_radius
from .errors import ConfigError, InputError

#: Gaussian smoothing (pixels) before pooling: speckle is finer than the anatomy's outline.
SIGMA = 2.0
#: average pooling factor before matching (speed; the outline survives it).
POOL = 4
#: half the side of a template, in pooled pixels (20 x 20 pooled = 80 x 80 pixels at 224 x 288).
HALF = 10
#: rotation step of the posed templates (degrees, a full turn).
ROTATION_STEP = 15
#: the part of a class map above this fraction of its range locates the plane (:func:`class_centres`).
CENTRE_FRACTION = 0.5


def class_centres(class_maps: Tensor, fraction: float = CENTRE_FRACTION) -> np.ndarray:
    """Where a class map puts its class: (N, 2) centres (row, column) as fractions of the image's height and width.

    ``class_maps`` (N, h, w) are one class's maps (e.g. :meth:`SonoNet.class_maps` of the target plane). The
    centre is the centroid of each map, shifted to its minimum, of the part above ``fraction`` of its range; a
    flat map gives the image centre.
    """
    fraction = v.real("fraction", fraction, minimum=0, maximum=1, strict_max=True)
    if class_maps.ndim != 3 or min(class_maps.shape[1:]) < 1:
        raise InputError(f"class maps must be (N, h, w); got {tuple(class_maps.shape)}")
    m = class_maps.detach().double().cpu()
    m = m - m.flatten(1).min(dim=1).values.view(-1, 1, 1)
    m = (m - fraction * m.flatten(1).max(dim=1).values.view(-1, 1, 1)).clamp_min(0)
    h, w = m.shape[1:]
    rows = (torch.arange(h, dtype=m.dtype) + 0.5) / h
    cols = (torch.arange(w, dtype=m.dtype) + 0.5) / w
    total = m.sum(dim=(1, 2))
    flat = total <= 0
    total = torch.where(flat, torch.ones_like(total), total)
    r = (m.sum(dim=2) * rows).sum(dim=1) / total
    c = (m.sum(dim=1) * cols).sum(dim=1) / total
    r[flat], c[flat] = 0.5, 0.5
    return torch.stack([r, c], dim=1).numpy()


def _gaussian(x: Tensor, sigma: float) -> Tensor:
    """Gaussian smoothing of ``x`` (N, 1, H, W), replicated borders: kornia's, as the blur corruption's."""
    import kornia

    ks = 2 * gaussian_radius(sigma, min(x.shape[2:])) + 1
    return kornia.filters.gaussian_blur2d(x, (ks, ks), (sigma, sigma), border_type="replicate")


def _check_images(images: Tensor, what: str) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 1 or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise InputError(f"{what} must be a gray image tensor (N, 1, H, W) with N >= 1; got {shape}")
    if not torch.isfinite(images).all():
        raise InputError(f"{what} hold a non-finite value")


def _posed(image: Tensor, centre: tuple[float, float], angles: list[float], mirror: bool,
           scales: tuple[float, ...] = (1.0,)) -> Tensor:
    """``image`` (1, H, W), and its mirror image about the centre column, rotated by each of ``angles`` (degrees)
    and enlarged by each of ``scales`` about ``centre`` (pixels, row and column):
    (len(scales) * len(angles) * (1 + mirror), 1, H, W); outside the image is 0."""
    _, h, w = image.shape
    cy, cx = centre
    rows, cols = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    gy, gx = torch.meshgrid(rows - cy, cols - cx, indexing="ij")
    grids = []
    for scale in scales:
        for flip in ([False, True] if mirror else [False]):
            for deg in angles:
                a = math.radians(deg)
                # the source pixel of each output pixel (inverse rotation and scaling)
                sy = (math.sin(a) * gx + math.cos(a) * gy) / scale
                sx = (math.cos(a) * gx - math.sin(a) * gy) / scale
                if flip:
                    sx = -sx
                # grid_sample's coordinates (align_corners=False): pixel p is at (2 p + 1) / size - 1
                grids.append(torch.stack([(2 * (sx + cx) + 1) / w - 1, (2 * (sy + cy) + 1) / h - 1], dim=-1))
    grid = torch.stack(grids).to(image.dtype)
    src = image.unsqueeze(0).expand(len(grids), -1, -1, -1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class PlaneTemplates:
    """Templates of the reference planes, posed; :meth:`score` gives each frame's plane match.

    Parameters
    ----------
    references : Tensor
        The reference standard planes (N, 1, H, W) in [0, 1]; frames to score must have the same H, W.
    centres : array-like
        (N, 2) where the anatomy is in each reference, as fractions of H and W (:func:`class_centres`).
    sigma, pool, half, rotation_step, mirror
        See the module docstring; the defaults are the measured ones.
    scales : sequence of float
        Sizes of the anatomy the templates are posed at, relative to the references' (each > 0); ``(1.0,)``:
        the references' own size.
    """

    def __init__(self, references: Tensor, centres, *, sigma: float = SIGMA, pool: int = POOL, half: int = HALF,
                 rotation_step: int = ROTATION_STEP, mirror: bool = True, scales=(1.0,)):
        _check_images(references, "references")
        self.sigma = v.real("sigma", sigma, minimum=0, strict_min=True, maximum=100)
        self.pool = v.integer("pool", pool, minimum=1, maximum=64)
        self.half = v.integer("half", half, minimum=1, maximum=1024)
        step = v.integer("rotation_step", rotation_step, minimum=0, maximum=360)
        try:
            n_scales = -1 if isinstance(scales, (str, bytes)) else len(scales)
        except TypeError:  # no length (a generator, a number, a 0-d array)
            n_scales = -1
        if not 1 <= n_scales <= 32:
            import reprlib

            raise ConfigError(f"scales must be a sequence of 1 to 32 numbers; got {reprlib.repr(scales)}")
        self.scales = tuple(v.real("scales", x, minimum=0.1, maximum=10) for x in scales)
        centres = np.asarray(centres, dtype=np.float64)
        if centres.shape != (len(references), 2) or not np.isfinite(centres).all():
            raise InputError(f"centres must be ({len(references)}, 2) finite fractions; got shape {centres.shape}")
        h, w = references.shape[2:]
        ph, pw = h // self.pool, w // self.pool
        if min(ph, pw) < 2 * self.half:
            raise ConfigError(f"images of {h}x{w} are too small for templates of {2 * self.half} pooled pixels "
                              f"(pool {self.pool}): at least {2 * self.half * self.pool} pixels a side")
        self.size = (h, w)
        angles = [0.0] if step in (0, 360) else [float(a) for a in range(0, 360, step)]
        refs = references.detach().float().cpu()
        mask = (refs > 0).any(dim=0)  # the scan sector: rotated content outside it would not appear in a frame
        tpls = []
        for img, (fr, fc) in zip(refs, centres.clip(0, 1)):
            centre = (fr * h - 0.5, fc * w - 0.5)
            posed = _posed(img, centre, angles, mirror, self.scales) * mask
            pooled = self._prepare(posed)
            r = int(np.clip(round((centre[0] + 0.5) / self.pool), self.half, ph - self.half))
            c = int(np.clip(round((centre[1] + 0.5) / self.pool), self.half, pw - self.half))
            tpls.append(pooled[:, :, r - self.half:r + self.half, c - self.half:c + self.half])
        t = torch.cat(tpls)
        t = t - t.mean(dim=(2, 3), keepdim=True)
        norm = t.flatten(1).norm(dim=1)
        self.templates = (t / norm.clamp_min(1e-8).view(-1, 1, 1, 1))[norm > 1e-6]  # a blank patch matches nothing
        if len(self.templates) == 0:
            raise InputError("the references are blank where their anatomy is: no template to match")

    def _prepare(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(_gaussian(x.float(), self.sigma), self.pool)

    def score(self, images: Tensor, batch_size: int = 64) -> np.ndarray:
        """The plane match of each image (N,): its best normalised cross-correlation with a template, in [-1, 1]."""
        _check_images(images, "images")
        batch_size = v.integer("batch_size", batch_size, minimum=1, maximum=v.MAX_BATCH)
        if tuple(images.shape[2:]) != self.size:
            raise InputError(f"images are {images.shape[2]}x{images.shape[3]}, the templates were cut from "
                             f"{self.size[0]}x{self.size[1]} references")
        n = (2 * self.half) ** 2
        box = torch.ones(1, 1, 2 * self.half, 2 * self.half)
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                x = self._prepare(images[i:i + batch_size].detach().cpu())
                s1, s2 = F.conv2d(x, box), F.conv2d(x * x, box)
                spread = (s2 - s1 * s1 / n).clamp_min(0).sqrt()
                ncc = F.conv2d(x, self.templates) / spread.clamp_min(1e-6)  # the templates are zero-mean
                ncc = torch.where(spread > 1e-6, ncc, torch.zeros_like(ncc))  # a flat window matches nothing
                out.append(ncc.flatten(2).amax(dim=(1, 2)).clamp(-1, 1))
        return torch.cat(out).double().numpy()
