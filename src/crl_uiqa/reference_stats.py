"""How far an image's low-level statistics lie from those of the reference planes.

The pseudo-labels (Eq. 1-3) measure how far an image's embedding lies from
the high-quality reference planes. The embedding of a classifier trained on
standard planes sees anatomy well and pixel-level quality poorly: SonoNet
standardises every image by its own mean and deviation, and its pooled
features barely change under mild noise or a veil of haze. This module
applies the same idea — "a good frame looks like the references" — to six
statistics a sonographer's eye reads directly (:func:`image_statistics`):

====  ==========================================================  =====================
#     statistic                                                   moved by (examples)
====  ==========================================================  =====================
0     mean gray level                                             gain, haze, shadow
1     standard deviation of the gray levels                       contrast, haze
2     log mean absolute gradient at full resolution (g1)          noise up, blur down
3     log mean absolute gradient after 2x2 average pooling (g2)   noise, blur
4     log(g1 / g2): the finest scale against the next             noise up, blur down
5     log(g2 / g4), g4 after a second 2x2 pooling                 blur, low resolution
6     black level: the 5th percentile of the gray levels          haze (veiling glare
                                                                  lifts it), gain
====  ==========================================================  =====================

The black level is what a sonographer reads in cysts, vessels and fluid:
echo-free regions should be black. SonoNet standardises each frame, so the
network cannot see a veil of glare that lifts it; trained without haze, the
learned correction even rewards the near-field fog (BENCHMARKS.md, "Which
training families teach the haze shortcut"). Models saved before it was
added use the first six (:data:`SIX_STATISTICS`; their ``anchor`` names no
``statistics``).

The gradient is the mean of ``|x[i, j+1] - x[i, j]|`` plus the mean of
``|x[i+1, j] - x[i, j]|``. :class:`ReferenceDeviation` stores the centre (mean)
and scale (standard deviation) of each statistic over the reference planes and
maps an image to ``log(1 + |z|)`` per statistic, ``z = (s - centre) / scale``,
and their root mean square (``mode="norm"``: that alone, the default; ``"each"``: each and the root mean
square). The deviation is symmetric on purpose: the
references define "good", and a frame brighter *or* darker, noisier *or*
blurrier than them deviates alike. A correction that learns from one kind of
corruption that deviating is bad therefore carries the lesson to corruptions
it never saw (BENCHMARKS.md, "Corruptions it never trained on"); a signed
feature would learn a direction that holds only for the families it trained
on. The log keeps a severe corruption (``|z|`` in the tens) from swamping the
learning rate of the head.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError, InputError

STATISTIC_NAMES = ("mean", "std", "log_grad1", "log_grad2", "log_grad1_over_grad2", "log_grad2_over_grad4",
                   "black_level")
#: the statistics of models saved before the black level was added (an ``anchor`` without ``statistics``)
SIX_STATISTICS = STATISTIC_NAMES[:6]
#: the gray-level quantile that is the black level
BLACK_QUANTILE = 0.05
#: The smallest scale of a statistic (gray levels in [0, 1]; the log-gradient statistics vary by ~0.05-0.2
#: between good frames): with one reference, or references that agree exactly, |z| stays finite.
MIN_SCALE = 0.02
_EPS = 1e-6


def _mean_abs_gradient(x: torch.Tensor) -> torch.Tensor:
    gx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    gy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    return gx + gy + _EPS


def check_statistics(names) -> tuple[str, ...]:
    """``names`` as a tuple of known statistic names (:data:`STATISTIC_NAMES`), each once, at least one."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
        raise ConfigError(f"statistics must be a non-empty list of names from {', '.join(STATISTIC_NAMES)}, "
                         f"got {names!r}")
    unknown = [n for n in names if n not in STATISTIC_NAMES]
    if unknown:
        raise ConfigError(f"unknown statistic {unknown[0]!r}: choose from {', '.join(STATISTIC_NAMES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"statistics {list(names)} name one twice")
    return tuple(names)


def lower_quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile (``q`` <= 0.5) of each row of ``flat`` (B, N), linear interpolation as
    :func:`numpy.quantile`; through :func:`torch.topk` of the smallest values, which exports to ONNX
    (``torch.quantile`` does not) and sorts only the ``q`` share of each row."""
    n = flat.shape[1]
    pos = q * (n - 1)
    lo = int(pos)
    frac = pos - lo
    smallest = torch.topk(flat, min(lo + 2, n), dim=1, largest=False, sorted=True).values
    a, b = smallest[:, lo], smallest[:, min(lo + 1, n - 1)]
    return a + (b - a) * frac


def image_statistics(x: torch.Tensor, names=STATISTIC_NAMES) -> torch.Tensor:
    """The statistics ``names`` (B, len(names)), all seven by default (table above), of gray images ``x``
    (B, 1, H, W) in [0, 1], H and W at least 8."""
    names = check_statistics(names)
    if x.dim() != 4 or x.shape[1] != 1:
        raise InputError(f"image_statistics needs gray images (B, 1, H, W), got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < 8:
        raise InputError(f"image_statistics needs images of at least 8x8 pixels, got {tuple(x.shape[-2:])}")
    x = x.float()
    flat = x.flatten(1)
    out = {}
    if {"mean", "std"} & set(names):
        out["mean"], out["std"] = flat.mean(dim=1), flat.std(dim=1)
    if any(n.startswith("log_grad") for n in names):
        g1 = _mean_abs_gradient(x)
        x2 = F.avg_pool2d(x, 2)
        g2 = _mean_abs_gradient(x2)
        g4 = _mean_abs_gradient(F.avg_pool2d(x2, 2))
        out.update(log_grad1=g1.log(), log_grad2=g2.log(), log_grad1_over_grad2=(g1 / g2).log(),
                   log_grad2_over_grad4=(g2 / g4).log())
    if "black_level" in names:
        out["black_level"] = lower_quantile(flat, BLACK_QUANTILE)
    return torch.stack([out[n] for n in names], 1)


MODES = ("norm", "each")


class ReferenceDeviation(nn.Module):
    """How far an image's :func:`image_statistics` lie from the references': ``log(1 + |z|)`` per statistic.

    ``statistics``: the names used (default all seven, :data:`STATISTIC_NAMES`;
    :data:`SIX_STATISTICS` for models saved before the black level).
    ``mode="norm"``: their root mean square, one feature (B, 1), the distance
    of the image from the references in this space: a head can only learn
    "deviating is worse" as a whole. ``mode="each"``: each statistic's and
    their root mean square (B, S + 1): a head can weigh each statistic, i.e.
    learn which deviations matter for the corruptions it trains on. Buffers
    ``center`` and ``scale`` (S,): set by :meth:`set` from the references'
    statistics (saved with the model). Until then the centre is 0 and the scale 1.
    """

    def __init__(self, mode: str = "norm", statistics=STATISTIC_NAMES) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"reference_stats must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.statistics = check_statistics(statistics)
        n = len(self.statistics)
        self.n_features = 1 if mode == "norm" else n + 1
        self.register_buffer("center", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))

    @torch.no_grad()
    def set(self, statistics: torch.Tensor) -> None:
        """Centre and scale from the references' statistics (n, S): mean and standard deviation (at least
        :data:`MIN_SCALE`; one reference has no spread, so its scale is the floor)."""
        s = torch.as_tensor(statistics, dtype=torch.float32)
        n = len(self.statistics)
        if s.dim() != 2 or s.shape[1] != n or s.shape[0] < 1:
            raise InputError(f"reference statistics must have shape (n >= 1, {n}), got {tuple(s.shape)}")
        if not torch.isfinite(s).all():
            raise InputError("the reference images' statistics hold NaN or inf")
        spread = s.std(dim=0) if s.shape[0] > 1 else torch.zeros(n)
        self.center.copy_(s.mean(dim=0))
        self.scale.copy_(spread.clamp_min(MIN_SCALE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_statistics(image_statistics(x, self.statistics))

    def from_statistics(self, statistics: torch.Tensor) -> torch.Tensor:
        """The features of images whose :func:`image_statistics` (of :attr:`statistics`) are ``statistics``."""
        z = (statistics - self.center) / self.scale
        d = torch.log1p(z.abs())
        m = d.square().mean(dim=1, keepdim=True).sqrt()
        return m if self.mode == "norm" else torch.cat([d, m], dim=1)
