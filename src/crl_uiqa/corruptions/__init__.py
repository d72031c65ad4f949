"""Ultrasound corruption library: the strongly augmented views of CRL-UIQA.

The relativity loss of the paper, ``L_r = max(p(x') - p(x) + eps, 0)``, needs
"strongly augmented views" ``x'`` that are certainly worse than the source
``x``, with a margin ``eps`` that grows with the degree of corruption. The paper
uses "different degrees of corruption such as gaussian blur and motion blur"
(:data:`PAPER_FAMILIES`). A model trained only on blur learns "sharper is
better" and then ranks a noisier or over-gained frame above a clean one, so
this library adds the degradations that make real ultrasound frames bad
(:data:`ULTRASOUND_FAMILIES`):

================  ==========================================================
family            physical meaning (degree 1)
================  ==========================================================
gaussian_blur     defocus / wide beam (sigma = 0.02 * min(H, W))
motion_blur       probe or fetal motion (streak 0.06 * min(H, W), random angle)
gaussian_noise    additive receiver noise (std 0.2)
speckle_noise     multiplicative Rayleigh speckle (factor std 0.52)
shadow            acoustic shadow cone below a random reflector (x 0.1)
attenuation       uncompensated depth attenuation (bottom x exp(-3))
over_gain         gain too high: x * 3 + 0.1, saturating at 1
under_gain        gain too low: 0.25 * x ** 2
haze              near-field reverberation haze + veiling glare
low_resolution    down-sample by 6 then up-sample
partial_fov       half of the width (left/right) or height (bottom) black
================  ==========================================================

Every family maps a continuous degree in [0, 1] to a physical parameter
(documented in each family's docstring); degree 0 is an exact identity and the
output is clipped to [0, 1]. All families run batched on the images' device
with one degree per sample, and all randomness comes from an optional
:class:`torch.Generator`, drawn sample by sample so that a batch gives the same
result as its images corrupted one at a time with the same generator.

Why not ``usaugment``
---------------------
The PyPI package ``usaugment`` (1.0.1) implements four ultrasound transforms
(depth attenuation, Gaussian shadow, haze artefact, speckle reduction) as
albumentations ``ImageOnlyTransform`` classes: numpy, one image at a time,
driven by the global ``random`` / ``numpy.random`` state (not reproducible
through a torch generator), requiring a scan-cone mask per image, and pulling
in albumentations. It has no blur, noise, gain, resolution or field-of-view
transforms and no notion of a degree. We therefore reimplement its physical
models (depth attenuation and haze after Ostvik et al. 2021, shadows after
Smistad et al. 2018) batched in torch here, and use kornia for the filtering
(:func:`kornia.filters.gaussian_blur2d` with per-sample sigmas,
:func:`kornia.filters.filter2d` with a per-sample motion-kernel stack).

Example
-------
>>> import torch
>>> from crl_uiqa.corruptions import corrupt, sample_strong_views, ULTRASOUND_FAMILIES
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.rand(4, 1, 64, 80, generator=g)
>>> corrupt(x, "motion_blur", torch.tensor([0.0, 0.3, 0.6, 1.0]), generator=g).shape
torch.Size([4, 1, 64, 80])
>>> views, fams, degrees = sample_strong_views(x, ULTRASOUND_FAMILIES, generator=g)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ImageError
from .acoustic import ATTENUATION, HAZE, SHADOW
from .base import Corruption, as_degree, check_images
from .blur import GAUSSIAN_BLUR, LOW_RESOLUTION, MOTION_BLUR
from .display import OVER_GAIN, PARTIAL_FOV, UNDER_GAIN
from .noise import GAUSSIAN_NOISE, SPECKLE_NOISE

__all__ = [
    "Corruption",
    "FAMILIES",
    "PAPER_FAMILIES",
    "ULTRASOUND_FAMILIES",
    "corrupt",
    "corrupt_mixed",
    "sample_strong_views",
    "corrupt_image",
    "get_family",
]

#: Registry of all corruption families, by name.
FAMILIES: dict[str, Corruption] = {
    c.name: c
    for c in (
        GAUSSIAN_BLUR,
        MOTION_BLUR,
        GAUSSIAN_NOISE,
        SPECKLE_NOISE,
        SHADOW,
        ATTENUATION,
        OVER_GAIN,
        UNDER_GAIN,
        HAZE,
        LOW_RESOLUTION,
        PARTIAL_FOV,
    )
}
#: The two corruptions named in the CRL-UIQA paper.
PAPER_FAMILIES: tuple[str, ...] = ("gaussian_blur", "motion_blur")
#: Every family of the library.
ULTRASOUND_FAMILIES: tuple[str, ...] = tuple(FAMILIES)


def get_family(name: str) -> Corruption:
    """Return the family called ``name``.

    Raises
    ------
    crl_uiqa.errors.ConfigError
        If ``name`` is unknown; the message lists the valid families.
    """
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown corruption family {name!r}; valid families: {', '.join(FAMILIES)}"
        ) from None


def corrupt(
    images: Tensor,
    family: str,
    degree: Tensor | float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Corrupt a batch with one family at per-sample degrees.

    Parameters
    ----------
    images : Tensor
        Float batch (B, 1, H, W) in [0, 1], on any device.
    family : str
        A name from :data:`FAMILIES`.
    degree : Tensor or float
        Degree in [0, 1]: a (B,) tensor (one per sample) or one value for all.
    generator : torch.Generator, optional
        Source of randomness (CPU generator recommended, also for CUDA batches);
        ``None`` uses torch's global generator.

    Returns
    -------
    Tensor
        (B, 1, H, W) in [0, 1], same device and dtype; degree-0 samples are
        returned unchanged.

    Raises
    ------
    crl_uiqa.errors.ConfigError
        Unknown family, or a degree outside [0, 1] (or not one per image).
    crl_uiqa.errors.InputError
        Bad image shape/range.
    """
    return get_family(family)(images, degree, generator)


def corrupt_mixed(
    images: Tensor,
    families: Sequence[str],
    degrees: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Corrupt each sample with its own family and degree.

    Samples are grouped by family (groups in order of first appearance), each
    group is corrupted in one batched call and the results are scattered back
    to their positions.

    Parameters
    ----------
    images : Tensor
        Float batch (B, 1, H, W) in [0, 1].
    families : sequence of str
        B family names.
    degrees : Tensor
        (B,) degrees in [0, 1].
    generator : torch.Generator, optional
        Source of randomness.

    Returns
    -------
    Tensor
        (B, 1, H, W) in [0, 1].
    """
    check_images(images)
    b = images.shape[0]
    if isinstance(families, str) or len(families) != b:
        raise ConfigError(f"families must be a sequence of {b} family names (one per image), got {families!r}")
    for name in families:
        get_family(name)
    deg = as_degree(degrees, b, images.device)
    out = torch.empty_like(images)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(families):
        groups.setdefault(name, []).append(i)
    for name, idx_list in groups.items():
        idx = torch.tensor(idx_list, device=images.device)
        out[idx] = FAMILIES[name](images[idx], deg[idx], generator)
    return out


def sample_strong_views(
    images: Tensor,
    families: Sequence[str],
    generator: torch.Generator | None = None,
    degree_range: tuple[float, float] = (0.1, 1.0),
) -> tuple[Tensor, list[str], Tensor]:
    """Draw a random strongly augmented view of every image.

    For each sample a family is drawn uniformly from ``families`` and a degree
    uniformly in ``degree_range``; the batch is then corrupted with
    :func:`corrupt_mixed`.

    Parameters
    ----------
    images : Tensor
        Float batch (B, 1, H, W) in [0, 1].
    families : sequence of str
        Candidate family names, e.g. :data:`PAPER_FAMILIES` or
        :data:`ULTRASOUND_FAMILIES`.
    generator : torch.Generator, optional
        Source of randomness.
    degree_range : (float, float)
        ``(low, high)`` with ``0 <= low <= high <= 1``.

    Returns
    -------
    corrupted : Tensor
        (B, 1, H, W) in [0, 1].
    families_used : list of str
        The family applied to each sample.
    degrees : Tensor
        (B,) float32 degrees on the images' device.
    """
    check_images(images)
    if isinstance(families, str) or len(families) == 0:
        raise ConfigError(f"families must be a non-empty sequence of family names, got {families!r}")
    families = list(families)
    for name in families:
        get_family(name)
    try:
        lo, hi = (float(v) for v in degree_range)
    except (TypeError, ValueError):
        raise ConfigError(f"degree_range must be a pair (low, high), got {degree_range!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise ConfigError(f"degree_range must satisfy 0 <= low <= high <= 1, got {degree_range!r}")
    b = images.shape[0]
    gdev = torch.device("cpu") if generator is None else generator.device
    choice = torch.randint(len(families), (b,), generator=generator, device=gdev).tolist()
    degrees = (lo + (hi - lo) * torch.rand(b, generator=generator, device=gdev)).to(images.device)
    used = [families[k] for k in choice]
    return corrupt_mixed(images, used, degrees, generator), used, degrees


def corrupt_image(image: np.ndarray, family: str, degree: float, seed: int | None = None) -> np.ndarray:
    """Corrupt a single (H, W) float image in [0, 1] (numpy convenience wrapper).

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grayscale image in [0, 1].
    family : str
        A name from :data:`FAMILIES`.
    degree : float
        Degree in [0, 1].
    seed : int, optional
        Seed for the random draws; ``None`` uses torch's global generator.

    Returns
    -------
    numpy.ndarray
        (H, W) float32 in [0, 1].
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ImageError(f"image must be a 2-D (H, W) array, got shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    gen = None if seed is None else torch.Generator().manual_seed(int(seed))
    return corrupt(x, family, float(degree), gen)[0, 0].numpy()
