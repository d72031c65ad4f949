"""Calibrated relativity margins: one degree, one quality loss, across corruption families.

The relativity loss of the paper (Sec. 2.2, Eq. 6) is
``L_r = max(p(x') - p(x) + eps_i, 0)``: a strongly augmented view ``x'`` must
score at least ``eps_i`` below its source. :class:`crl_uiqa.views.StrongViews`
draws ``eps_i = margin_scale * calibration[family] * degree_i``. With every
calibration weight 1, a degree means the same *margin* for every family, but
not the same *quality loss*: degree 0.5 of Gaussian noise and degree 0.5 of
under-gain are two unrelated physical parameters (see
:mod:`crl_uiqa.corruptions`), so the model is asked to push some families far
below their source and others barely at all.

This module measures what a degree of each family costs in the currency the
method already uses for quality, the pseudo-label distance of paper Eq. 1: how
far the corruption moves an image away from the high-quality reference planes
in the feature space of ``P(.)``. For each family ``f`` and degree ``d``:

1. corrupt each reference image ``g_i`` at degree ``d`` (a seeded generator
   per family and degree, so a family's numbers do not depend on which other
   families are calibrated with it);
2. its distance ``D_i(d)`` = mean of the ``k`` smallest Euclidean distances
   from ``P(corrupted g_i)`` to the *clean* reference embeddings, leaving out
   ``g_i``'s own clean copy (else the nearest neighbour of a mild corruption
   would always be itself);
3. ``delta_f(d) = mean_i [D_i(d) - D_i(0)]``: the increase over the clean
   references' own leave-one-out distance;
4. ``slope_f`` = least-squares slope of ``delta_f`` against ``d`` through the
   origin, ``sum_d d * delta_f(d) / sum_d d**2`` (degree 0 is an exact
   identity for every family, so the line passes through the origin).

The weights are the slopes rescaled so that their **mean over the calibrated
families is 1**: ``margin_scale`` keeps its meaning (the average margin at
degree 1), only its split between families changes. A family whose slope is
<= 0 is one the embedding does not see (the corruption does not move images
away from the reference planes); its margin cannot be derived from the
embedding, so it gets the floor weight :data:`FLOOR` (0.1, i.e. a tenth of an
average family) and a logged warning. A family whose rescaled weight would fall
under the floor is raised to it as well, and the other weights shrink so the
mean stays 1 (water-filling).

Example
-------
>>> from crl_uiqa.calibration import calibrate_for_backbone          # doctest: +SKIP
>>> w = calibrate_for_backbone(reference_paths, families=ULTRASOUND_FAMILIES)  # doctest: +SKIP
>>> TrainConfig(strong_views="ultrasound", calibration=w)            # doctest: +SKIP

On the command line: ``crl-uiqa fit ... --strong-views ultrasound --calibrate-margins``.
"""
from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from . import validate
from .corruptions import ULTRASOUND_FAMILIES, corrupt, get_family
from .errors import ConfigError, InputError, ModelError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DEGREES",
    "FLOOR",
    "CalibrationTable",
    "backbone_calibration_table",
    "calibrate_for_backbone",
    "calibrate_margins",
    "calibration_table",
    "margin_weights",
]

#: Degrees at which each family is measured.
DEFAULT_DEGREES: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
#: Weight of a family the embedding does not see (slope <= 0), relative to a mean weight of 1.
FLOOR = 0.1

EmbedFn = Callable[[Tensor], Tensor]


@dataclass
class CalibrationTable:
    """Per-family, per-degree increase of the pseudo-label distance.

    Attributes
    ----------
    families : tuple of str
        The calibrated families, in the order given.
    degrees : tuple of float
        The degrees measured.
    baseline : float
        Mean leave-one-out distance of the clean references, ``mean_i D_i(0)``.
    delta : dict
        ``family -> tuple`` of ``delta_f(d)``, one per degree.
    slopes : dict
        ``family -> slope`` of ``delta_f`` against the degree, through the origin.
    k : int
        Nearest references averaged.
    n_references : int
        Number of reference images.
    seed : int
        Seed of the corruptions.
    """

    families: tuple[str, ...]
    degrees: tuple[float, ...]
    baseline: float
    delta: dict[str, tuple[float, ...]]
    slopes: dict[str, float]
    k: int
    n_references: int
    seed: int

    def weights(self, families: Sequence[str] | None = None, *, floor: float = FLOOR,
                warn: bool = True) -> dict[str, float]:
        """Margin weights with mean 1 over ``families`` (default: all calibrated families).

        A subset is renormalised on its own, so one table serves several
        strong-view sets (e.g. every "all families but F" set). ``warn=False``
        does not log the floored families again.
        """
        fams = self.families if families is None else _check_families(families)
        missing = [f for f in fams if f not in self.slopes]
        if missing:
            raise ConfigError(f"families {missing} are not in this calibration table "
                             f"(calibrated: {', '.join(self.families)})")
        return margin_weights({f: self.slopes[f] for f in fams}, floor=floor, warn=warn)

    def rows(self) -> list[dict]:
        """One row per family and degree: ``family, degree, delta_distance, relative_increase``.

        ``relative_increase`` is ``delta / baseline``: the corruption's distance
        increase as a fraction of the clean references' own spread.
        """
        out = []
        for f in self.families:
            for d, v in zip(self.degrees, self.delta[f]):
                out.append({"family": f, "degree": d, "delta_distance": v,
                            "relative_increase": v / self.baseline if self.baseline > 0 else math.nan})
        return out

    def to_dict(self, *, floor: float = FLOOR) -> dict:
        """JSON-ready summary (with the weights over all families)."""
        return {"families": list(self.families), "degrees": list(self.degrees), "baseline": self.baseline,
                "delta": {f: list(v) for f, v in self.delta.items()}, "slopes": dict(self.slopes),
                "weights": self.weights(floor=floor, warn=False), "k": self.k, "n_references": self.n_references,
                "seed": self.seed, "floor": floor}

    def to_markdown(self, *, floor: float = FLOOR) -> str:
        """Markdown table: families x degrees of delta distance, then slope and weight."""
        from . import markdown

        w = self.weights(floor=floor, warn=False)
        head = ["family", *[f"d={d:g}" for d in self.degrees], "slope", "weight"]
        return markdown.table(head, ([f, *[f"{v:.4g}" for v in self.delta[f]], f"{self.slopes[f]:.4g}", f"{w[f]:.3f}"]
                                     for f in self.families))


# --------------------------------------------------------------------------- validation
def _check_families(families: Sequence[str]) -> tuple[str, ...]:
    if isinstance(families, str) or len(families) == 0:
        raise ConfigError(f"families must be a non-empty sequence of family names, got {families!r}")
    out: list[str] = []
    for f in families:
        get_family(f)  # ConfigError naming the unknown family and listing the valid ones
        if f not in out:
            out.append(f)
    return tuple(out)


def _check_degrees(degrees: Sequence[float]) -> tuple[float, ...]:
    try:
        ds = tuple(float(d) for d in degrees)
    except (TypeError, ValueError):
        raise ConfigError(f"degrees must be a sequence of numbers in (0, 1], got {degrees!r}") from None
    if not ds or any(not 0.0 < d <= 1.0 for d in ds):
        raise ConfigError(f"degrees must be a non-empty sequence of numbers in (0, 1], got {degrees!r}")
    return ds


def _check_references(images: Tensor, k: int) -> Tensor:
    if not isinstance(images, Tensor):
        raise InputError(f"reference_images must be a torch tensor (N, 1, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 1:
        raise InputError(f"reference_images must have shape (N, 1, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    if n == 0:
        raise InputError("reference_images is empty: calibration needs reference planes")
    if not images.is_floating_point():
        raise InputError(f"reference_images must be a float tensor in [0, 1], got {images.dtype}")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise InputError("reference_images must hold finite values in [0, 1]")
    k = validate.integer("k", k, minimum=1)
    if k >= n:
        raise ConfigError(f"k={k} must be smaller than the number of references ({n}): each reference is left out "
                         "of its own distance, so only N - 1 neighbours remain")
    return images


def _embed(embed_fn: EmbedFn, x: Tensor, what: str) -> Tensor:
    with torch.no_grad():
        e = embed_fn(x)
    e = torch.as_tensor(e)
    if e.ndim != 2 or e.shape[0] != x.shape[0]:
        raise ConfigError(f"embed_fn must return a ({x.shape[0]}, D) tensor for {what}, got shape {tuple(e.shape)}")
    if not torch.isfinite(e).all():
        raise ModelError(f"embed_fn returned NaN or inf for {what}")
    return e.detach().to("cpu", torch.float64)


def _loo_topk_distance(queries: Tensor, clean: Tensor, k: int) -> Tensor:
    """Mean of the k smallest distances of query i to clean[j], j != i (float64, (N,))."""
    d = torch.cdist(queries, clean, compute_mode="donot_use_mm_for_euclid_dist")
    d.fill_diagonal_(math.inf)
    return d.topk(k, dim=1, largest=False).values.mean(dim=1)


def _generator(seed: int, family: str, index: int) -> torch.Generator:
    """A generator for (seed, family, degree index) that does not depend on the other families."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(family.encode()), index]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


# --------------------------------------------------------------------------- core
def calibration_table(
    reference_images: Tensor,
    embed_fn: EmbedFn,
    families: Sequence[str],
    *,
    degrees: Sequence[float] = DEFAULT_DEGREES,
    k: int = 5,
    seed: int = 0,
) -> CalibrationTable:
    """Measure the pseudo-label distance increase of each family at each degree.

    Parameters
    ----------
    reference_images : Tensor
        (N, 1, H, W) float in [0, 1]: the high-quality reference planes, at the
        size ``embed_fn`` expects. N must exceed ``k``.
    embed_fn : callable
        ``embed_fn(images (B, 1, H, W)) -> (B, D)``: the embedding ``P(.)`` of
        the pseudo-labels (e.g. SonoNet block4, see :func:`calibrate_for_backbone`).
        Called once on the clean references and once per family and degree,
        under :func:`torch.no_grad`.
    families : sequence of str
        Corruption families (names from :data:`crl_uiqa.corruptions.FAMILIES`);
        repeated names are kept once.
    degrees : sequence of float
        Degrees in (0, 1] to measure (default 0.25, 0.5, 0.75, 1).
    k : int
        Nearest references averaged, as in the pseudo-labels (default 5).
    seed : int
        Seed of the random corruptions.

    Returns
    -------
    CalibrationTable
        ``delta[family][j]`` is the mean distance increase at ``degrees[j]``;
        ``slopes[family]`` the least-squares slope through the origin.

    Raises
    ------
    crl_uiqa.errors.InputError
        Empty or malformed references (not a (N, 1, H, W) float tensor of
        finite values in [0, 1]).
    crl_uiqa.errors.ConfigError
        ``k`` not a positive integer or ``k >= N``, unknown family, degree
        outside (0, 1], or an embedding of the wrong shape.
    crl_uiqa.errors.ModelError
        An embedding with NaN/inf.
    """
    x = _check_references(reference_images, k)
    fams = _check_families(families)
    degs = _check_degrees(degrees)
    clean = _embed(embed_fn, x, "the clean references")
    base = _loo_topk_distance(clean, clean, k)
    deg_arr = np.asarray(degs, dtype=np.float64)
    delta: dict[str, tuple[float, ...]] = {}
    slopes: dict[str, float] = {}
    for f in fams:
        vals = []
        for j, d in enumerate(degs):
            xc = corrupt(x, f, d, generator=_generator(seed, f, j))
            e = _embed(embed_fn, xc, f"{f} at degree {d:g}")
            vals.append(float((_loo_topk_distance(e, clean, k) - base).mean()))
        delta[f] = tuple(vals)
        slopes[f] = float(np.dot(deg_arr, vals) / np.dot(deg_arr, deg_arr))
    return CalibrationTable(fams, degs, float(base.mean()), delta, slopes, int(k), int(x.shape[0]), int(seed))


def margin_weights(slopes: Mapping[str, float], *, floor: float = FLOOR, warn: bool = True) -> dict[str, float]:
    """Turn per-family slopes into margin weights whose mean is 1.

    ``w_f = c * slope_f``, with ``c`` such that the weights average 1. A
    family with slope <= 0 (or NaN) is not seen by the embedding: it gets
    ``floor`` and a logged warning. A family whose ``c * slope_f`` would be
    under ``floor`` is raised to it too (logged at INFO level), and ``c`` is
    recomputed over the remaining families until no weight is below the floor.

    Parameters
    ----------
    slopes : mapping
        ``family -> slope`` (distance increase per unit degree).
    floor : float
        Smallest weight, in (0, 1) (default :data:`FLOOR` = 0.1).
    warn : bool
        Log the floored families (default True).

    Returns
    -------
    dict
        ``family -> weight``, in the order of ``slopes``; the mean is 1.

    Raises
    ------
    crl_uiqa.errors.InputError
        No slopes.
    crl_uiqa.errors.ConfigError
        ``floor`` not a number in (0, 1), or no family with a positive slope.
    """
    if not slopes:
        raise InputError("no slopes to turn into margin weights")
    floor = validate.real("floor", floor, minimum=0, maximum=1, strict_min=True, strict_max=True)
    s = {f: float(v) for f, v in slopes.items()}
    blind = [f for f, v in s.items() if not v > 0]  # also catches NaN
    if len(blind) == len(s):
        raise ConfigError(f"no corruption family moves the images away from the references in this embedding "
                         f"(slopes {s}): margins cannot be calibrated; leave the calibration off")
    for f in blind if warn else ():
        log.warning("the embedding does not see corruption family %s (distance slope %.3g <= 0): its margin weight "
                    "is set to the floor %.3g", f, s[f], floor)
    floored = set(blind)
    n = len(s)
    while True:
        active = [f for f in s if f not in floored]
        c = (n - floor * len(floored)) / sum(s[f] for f in active)
        low = {f for f in active if c * s[f] < floor}
        if not low:
            break
        for f in sorted(low) if warn else ():
            log.info("corruption family %s barely moves the embedding (slope %.3g): margin weight raised to the "
                     "floor %.3g", f, s[f], floor)
        floored |= low
    return {f: (float(floor) if f in floored else c * s[f]) for f in s}


def calibrate_margins(
    reference_images: Tensor,
    embed_fn: EmbedFn,
    families: Sequence[str],
    *,
    degrees: Sequence[float] = DEFAULT_DEGREES,
    k: int = 5,
    seed: int = 0,
    floor: float = FLOOR,
) -> dict[str, float]:
    """Per-family relativity-margin weights, mean 1 over ``families``.

    :func:`calibration_table` then :func:`margin_weights`; see the module
    docstring for the method. The result goes into
    ``TrainConfig.calibration`` / ``StrongViews.calibration``.

    Returns
    -------
    dict
        ``family -> weight`` (families in the given order).
    """
    table = calibration_table(reference_images, embed_fn, families, degrees=degrees, k=k, seed=seed)
    return table.weights(floor=floor)


# --------------------------------------------------------------------------- backbone convenience
def _backbone_embed_fn(net: torch.nn.Module, layer: str, device, batch_size: int) -> EmbedFn:
    from .embed import prepare_model

    model = prepare_model(net, device)

    @torch.inference_mode()
    def embed(x: Tensor) -> Tensor:
        out = []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            out.append(model.embed(xb, layer).float().cpu())
        return torch.cat(out)

    return embed


def backbone_calibration_table(
    reference_paths: Sequence[str],
    backbone: str | torch.nn.Module = "sononet16",
    weights=None,
    layer: str = "block4",
    size: tuple[int, int] | None = (224, 288),
    families: Sequence[str] = ULTRASOUND_FAMILIES,
    *,
    degrees: Sequence[float] = DEFAULT_DEGREES,
    k: int = 5,
    seed: int = 0,
    device="auto",
    crop=None,
    batch_size: int = 32,
    num_workers: int | None = None,
) -> CalibrationTable:
    """:func:`calibration_table` for reference image files and a named backbone.

    The references are read (every one must be readable), cropped with
    ``crop``, resized to ``size`` (``None``: the backbone's ``input_size``),
    corrupted there and embedded with ``backbone.embed(x, layer)``: the same
    ``P(.)`` and resolution as :func:`crl_uiqa.pseudo_labels.label_images`.
    """
    from .backbones import get_backbone
    from .embed import resolve_device
    from .io import iter_batches

    paths = [str(p) for p in reference_paths]
    if not paths:
        raise InputError("no reference images given for the margin calibration")
    dev = resolve_device(device)
    net = get_backbone(backbone, weights) if isinstance(backbone, str) else backbone
    size = tuple(size or getattr(net, "input_size", (224, 288)))
    chunks = [b.images for b in iter_batches(paths, size=size, batch_size=batch_size, crop=crop, strict=True,
                                             num_workers=num_workers)]
    images = torch.cat(chunks).clamp_(0.0, 1.0).to(dev)
    return calibration_table(images, _backbone_embed_fn(net, layer, dev, batch_size), families, degrees=degrees,
                             k=k, seed=seed)


def calibrate_for_backbone(
    reference_paths: Sequence[str],
    backbone: str | torch.nn.Module = "sononet16",
    weights=None,
    layer: str = "block4",
    size: tuple[int, int] | None = (224, 288),
    families: Sequence[str] = ULTRASOUND_FAMILIES,
    *,
    degrees: Sequence[float] = DEFAULT_DEGREES,
    k: int = 5,
    seed: int = 0,
    floor: float = FLOOR,
    device="auto",
    crop=None,
    batch_size: int = 32,
    num_workers: int | None = None,
) -> dict[str, float]:
    """Margin weights (mean 1 over ``families``) measured on reference image files.

    See :func:`backbone_calibration_table` for the parameters and
    :func:`margin_weights` for ``floor``.
    """
    table = backbone_calibration_table(reference_paths, backbone, weights, layer, size, families, degrees=degrees,
                                       k=k, seed=seed, device=device, crop=crop, batch_size=batch_size,
                                       num_workers=num_workers)
    return table.weights(floor=floor)
