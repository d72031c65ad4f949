"""Score consistency and relativity co-learning (paper Sec. 2.2 and 3.2).

Each step takes a batch of source images x with pseudo-labels q, builds the
weak view (flips, rotation) and the strong view (a corruption of degree d with
margin epsilon), runs the three views through the shared model in one forward
pass and minimises Eq. 7. Defaults are the paper's (SGD, lr 1e-3, 35 epochs,
batch 16, alpha/theta/beta 0.05/0.1/0.1); "YOLOv5 default parameters for the
rest" gives SGD momentum 0.937, weight decay 5e-4 and a linear learning-rate
decay to 1 % of the initial rate over the run. One default departs from the
paper on evidence: the strong views draw from all eleven ultrasound corruption
families instead of blur alone (``strong_views="paper"`` restores the paper),
because blur-only relativity ranks noisy, speckled or under-gained frames above
clean ones (leave-one-family-out benchmark, BENCHMARKS.md).

Repeatability: the shuffling and the views of epoch e come from a generator
seeded with (seed, e), and every epoch ends with a checkpoint holding the
model and optimizer state, so a run resumed after an interruption follows the
same path as an uninterrupted one (bit for bit on the CPU).
"""
from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .checkpoint import check_run_dir, inputs_digest, load_tensors, optimizer_tensors, restore_optimizer, save_tensors
from .devices import autocast as _autocast
from .devices import autocast_enabled
from .embed import resolve_device
from .errors import ConfigError, InputError, ModelError, NotFoundError
from .files import holds_output_dir, write_csv
from .io import ImageReadError, check_image, iter_batches, list_references
from .losses import LossWeights, total_loss
from .model import ModelConfig, QualityModel, build_model, load_model, save_model  # noqa: F401 - kept importable from here
from .reference_stats import SIX_STATISTICS, STATISTIC_NAMES
from .tables import path_key
from .views import StrongViews, parse_strong_views, weak_view

log = logging.getLogger(__name__)


#: most clean-over-corrupted validation pairs asked for: each is a corrupted copy of a validation image held in
#: memory and scored every epoch (10000 at 224x288 is about 0.6 GB); a larger --min-val-pairs drew views until
#: memory ran out, after the pseudo-label pass
MAX_VAL_PAIRS = 10_000


@dataclass
class TrainConfig:
    """Training settings; the defaults are the paper's where it gives one."""

    epochs: int = 35
    batch_size: int = 16
    lr: float = 1e-3
    momentum: float = 0.937
    weight_decay: float = 5e-4
    lr_schedule: str = "linear"  # linear (YOLOv5: to lr*final_lr_fraction) | constant
    final_lr_fraction: float = 0.01
    alpha: float = 0.05
    theta: float = 0.1
    beta: float = 0.1
    consistency: bool = True
    relativity: bool = True
    strong_views: str = "ultrasound"  # paper: gaussian + motion blur (see BENCHMARKS.md, leave-one-family-out)
    degree_range: tuple[float, float] = (0.1, 1.0)
    margin_scale: float = 0.1
    calibration: dict = field(default_factory=dict)
    max_rotation: float = 15.0
    val_fraction: float = 0.15
    seed: int = 0
    amp: bool | str = True  # bfloat16 autocast: True on CUDA only; "bf16" on the CPU too; False off
    select: str = "last"  # last (paper) | best: keep the epoch with the best label-free validation criterion
    min_steps: int = 0  # raise the epochs until the run makes at least this many SGD steps (small pools)
    # train on random crops of the frames (see train()): (H, W) pixels, or a fraction of each side of the image size
    train_crop: tuple[int, int] | float | None = None
    min_val_pairs: int = 0  # fixed corrupted views per validation image until the criterion has this many pairs
    # anchored head: with fewer training images than this the correction sees the deviation features only
    # (ModelConfig anchor correction "deviation"); without reference_stats the model keeps its teacher (warns)
    min_train_images: int = 0

    def __post_init__(self) -> None:
        """Refuse an invalid setting now, before any work (one :class:`~crl_uiqa.errors.ConfigError`)."""
        from . import validate as v

        f = v.flag
        v.integer(f("epochs"), self.epochs, minimum=1, maximum=v.MAX_EPOCHS)
        v.integer(f("batch_size"), self.batch_size, minimum=1, maximum=v.MAX_BATCH)
        v.real(f("lr"), self.lr, minimum=0, strict_min=True, maximum=v.MAX_FLOAT32)
        v.real(f("momentum"), self.momentum, minimum=0, maximum=1, strict_max=True)
        v.real(f("weight_decay"), self.weight_decay, minimum=0, maximum=v.MAX_FLOAT32)
        v.choice(f("lr_schedule"), self.lr_schedule, ("linear", "constant"))
        v.real("final_lr_fraction", self.final_lr_fraction, minimum=0, maximum=1, strict_min=True)
        for name in ("alpha", "theta", "beta", "margin_scale"):
            v.real(f(name), getattr(self, name), minimum=0, maximum=v.MAX_FLOAT32)
        v.boolean("consistency", self.consistency)
        v.boolean("relativity", self.relativity)
        if not isinstance(self.strong_views, str):
            raise ConfigError(f"{f('strong_views')} must be a string, got {self.strong_views!r}")
        try:
            parse_strong_views(self.strong_views)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"{f('strong_views')}: {exc}") from None
        try:
            lo, hi = self.degree_range
        except (TypeError, ValueError):
            raise ConfigError(f"degree_range must be two numbers, got {self.degree_range!r}") from None
        v.real("degree_range[0]", lo, minimum=0, strict_min=True, maximum=1)
        v.real("degree_range[1]", hi, minimum=lo, maximum=1)
        if not isinstance(self.calibration, dict):
            raise ConfigError(f"calibration must be a dict of family -> weight, got {self.calibration!r}")
        for fam, w in self.calibration.items():
            v.real(f"calibration[{fam!r}]", w, minimum=0)
        v.real(f("max_rotation"), self.max_rotation, minimum=0, maximum=180)
        v.real(f("val_fraction"), self.val_fraction, minimum=0, maximum=1, strict_max=True)
        v.integer(f("seed"), self.seed, minimum=0, maximum=v.MAX_SEED)
        if not (isinstance(self.amp, bool) or self.amp == "bf16"):
            raise ConfigError(f"{f('amp')} must be true (bfloat16 on CUDA only), false or 'bf16' (the CPU too), "
                              f"got {self.amp!r}")
        if isinstance(self.train_crop, numbers.Real) and not isinstance(self.train_crop, bool):
            v.real(f("train_crop"), self.train_crop, minimum=0, maximum=1, strict_min=True)
            self.train_crop = float(self.train_crop)
        elif self.train_crop is not None:
            self.train_crop = v.image_size(f("train_crop"), self.train_crop, minimum=1)
        v.choice(f("select"), self.select, ("last", "best"))
        v.integer(f("min_steps"), self.min_steps, minimum=0, maximum=v.MAX_MIN_STEPS)
        v.integer(f("min_val_pairs"), self.min_val_pairs, minimum=0, maximum=MAX_VAL_PAIRS)
        v.integer(f("min_train_images"), self.min_train_images, minimum=0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["degree_range"] = list(self.degree_range)
        if isinstance(self.train_crop, tuple):
            d["train_crop"] = list(self.train_crop)
        return d

    def crop_size(self, image_size: tuple[int, int], minimum: int = 1) -> tuple[int, int] | None:
        """The training window (H, W) for frames of ``image_size``; None = whole frames.

        A fraction f gives round(f * side) per side (at least ``minimum``, at
        most the side); (H, W) is taken as given.
        """
        if self.train_crop is None:
            return None
        if isinstance(self.train_crop, float):
            return tuple(min(side, max(minimum, round(self.train_crop * side))) for side in image_size)
        return tuple(self.train_crop)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"train_config must be a JSON object, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if isinstance(d.get("degree_range"), list):
            d["degree_range"] = tuple(d["degree_range"])
        if isinstance(d.get("train_crop"), list):
            d["train_crop"] = tuple(d["train_crop"])
        return cls(**d)


# The defaults of the commands and of CRLUIQA, and the paper's settings (``--paper``); TrainConfig and
# ModelConfig keep the paper's values field by field. Evidence for each change: README "method here".
DEFAULT_SETTINGS = {"train": {"epochs": 6, "lr": 0.5, "strong_views": "ultrasound", "select": "best", "train_crop": 0.5,
                              "min_steps": 60, "min_val_pairs": 300, "min_train_images": 100},
                    "model": {"head": "anchored", "train_from": "head",
                              "anchor": {"reference_stats": "norm", "statistics": list(STATISTIC_NAMES)}}}
PAPER_SETTINGS = {"train": {"epochs": 35, "lr": 1e-3, "strong_views": "paper", "select": "last", "min_steps": 0,
                            "train_crop": None,
                            "min_train_images": 0,
                            "min_val_pairs": 0},
                  "model": {"head": "paper", "train_from": "block1"}}


def settings(paper: bool = False) -> tuple[dict, dict]:
    """(TrainConfig overrides, ModelConfig overrides): the defaults, or the paper's with ``paper=True``."""
    import copy

    s = copy.deepcopy(PAPER_SETTINGS if paper else DEFAULT_SETTINGS)
    return s["train"], s["model"]


# the settings that must not change when a run is resumed
# epochs too: the linear schedule decays over the run's epochs, so a resumed run with more or fewer epochs is no
# run's (resuming a finished 8-epoch run with --epochs 10 jumped the lr from 0.005 back to 0.06 at epoch 9, and a
# later --resume --epochs 8 re-saved its 10 epochs as an 8-epoch run)
_RESUME_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_schedule", "final_lr_fraction", "alpha", "theta",
                "beta", "consistency", "relativity", "strong_views", "degree_range", "margin_scale", "max_rotation",
                "val_fraction", "seed", "select", "min_steps", "train_crop", "min_val_pairs", "min_train_images")


@dataclass
class TrainResult:
    model: QualityModel
    history: list[dict]
    run_dir: Path | None
    train_paths: list[str]
    val_paths: list[str]
    failures: list = field(default_factory=list)  # crl_uiqa.io.ReadFailure of the images skipped
    kept_epoch: int | None = None  # the epoch whose weights the model holds (0 = the initial model)
    warnings: list[str] = field(default_factory=list)  # "did not learn" diagnoses (see diagnose_training)


def selection_criterion(row: dict) -> float:
    """The label-free validation criterion that picks the epoch kept with ``select="best"``.

    The validation strong-view accuracy: does the model rank each held-out
    clean image above fixed corruptions of it (drawn once from the training
    families and degrees)? ``TrainConfig.min_val_pairs`` sets how many pairs it
    counts: each validation image gets ``ceil(min_val_pairs / n_val)`` views,
    so a small pool (6 validation images of 40) is judged on 300 pairs (50
    views each), not on 6 that the teacher already ranked all right before
    training (BENCHMARKS.md "A pool of 40 images"). The default, 300 pairs,
    makes one pair worth at most 0.0033 of the criterion: with 100 pairs
    (the default before) a 150-image pool whose last epoch was 0.106 better
    on the dev protocol came out one pair below its teacher and kept it
    (BENCHMARKS.md "Pools of 75 and 150 images"). The validation
    SRCC with the pseudo-labels when that was not measured; NaN when neither
    was. Needs no quality label. (The mean of
    the two, tried first, kept the teacher on the dev protocol although the
    last epoch was 0.044 better: any correction lowers the SRCC with the
    teacher's own labels; BENCHMARKS.md.)
    """
    for k in ("val_strong_accuracy", "val_srcc"):
        if k in row and np.isfinite(row[k]):
            return float(row[k])
    return float("nan")


def diagnose_training(history: list[dict], kept_epoch: int | None, *, lr: float, steps: int, n_train: int,
                      head: str = "paper", tol: float = 1e-3) -> list[str]:
    """Warnings when a run did not learn, each naming the likely cause.

    * the criterion never rose above the initial model's (epoch 0) by ``tol``;
    * the kept model's validation SRCC < 0.2 or strong-view accuracy < 0.6
      (chance is 0 and 0.5).
    """
    rows = {int(r["epoch"]): r for r in history}
    causes = []
    if lr <= 1e-4:
        causes.append(f"the learning rate {lr:g} is too low")
    if steps < 200:
        causes.append(f"only {steps} SGD steps (raise --epochs or --min-steps)")
    if n_train < 100:
        causes.append(f"only {n_train} training images")
    cause = "; likely cause: " + ", ".join(causes) if causes else "; try a higher --lr or more --epochs"
    out = []
    init, kept = rows.get(0), rows.get(kept_epoch) if kept_epoch is not None else (history[-1] if history else None)
    if init is not None and len(rows) > 1:
        c0 = selection_criterion(init)
        best = max((selection_criterion(r) for e, r in rows.items() if e > 0), default=float("nan"))
        if np.isfinite(c0) and np.isfinite(best) and best <= c0 + tol:
            what = ("the model kept is its teacher, the distance score" if head == "anchored" and kept_epoch == 0
                    else "the model kept is no better than the initial one")
            out.append(f"training did not learn anything the validation criterion prefers: best epoch {best:.3f}, "
                       f"before training {c0:.3f}; {what}{cause}")
    if kept is not None:
        srcc, acc = kept.get("val_srcc", float("nan")), kept.get("val_strong_accuracy", float("nan"))
        if (np.isfinite(srcc) and srcc < 0.2) or (np.isfinite(acc) and acc < 0.6):
            # a measure a run could not take (one validation image has no SRCC) is said so, not printed as nan
            shown = [f"{what} {v:.3f}" for what, v in (("SRCC with the pseudo-labels", srcc),
                                                        ("clean-over-corrupted accuracy", acc)) if np.isfinite(v)]
            out.append(f"the model kept is near chance on validation ({', '.join(shown)}){cause}")
    return out


def _validate_labels(paths: Sequence[str], labels: Sequence[float]) -> np.ndarray:
    q = np.asarray(labels, dtype=np.float64)
    if len(paths) != q.size:
        raise InputError(f"{len(paths)} paths but {q.size} labels")
    if q.size < 2:
        raise InputError(f"training needs at least 2 labelled images, got {q.size}")
    if not np.isfinite(q).all():
        bad = paths[int(np.flatnonzero(~np.isfinite(q))[0])]
        raise InputError(f"pseudo-labels contain NaN or inf (first: {bad})")
    if np.ptp(q) == 0:
        raise InputError("all pseudo-labels are equal: there is nothing to learn")
    return q


def load_image_cache(paths: Sequence[str], size: tuple[int, int], *, crop=None, num_workers=None,
                     progress: bool = True, desc: str = "loading",
                     what: str = "training image") -> tuple[torch.Tensor, list[int], list]:
    """Decode and resize every image once into a uint8 tensor (N, 1, H, W).

    Training revisits each image 3 x epochs times; decoding it once keeps the
    CPU for the model. (N images at 224x288 take N x 64 KB.)
    """
    failures: list = []
    chunks, kept = [], []
    for b in iter_batches(paths, size=size, batch_size=64, crop=crop, failures=failures, num_workers=num_workers,
                          progress=desc if progress else False):
        chunks.append((b.images * 255.0).round_().clamp_(0, 255).to(torch.uint8))
        kept.extend(b.indices)
    if not chunks:
        first = f" (the first: {failures[0].path}: {failures[0].reason})" if failures else ""
        raise InputError(f"no readable {what}{first}")
    return torch.cat(chunks), kept, failures


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random split of ``range(n)`` (at least one image on each side when val_fraction > 0)."""
    from . import validate

    val_fraction = validate.real("val_fraction", val_fraction, minimum=0, maximum=1, strict_max=True)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0:
        n_val = min(max(n_val, 1), n - 2)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _lr_factor(cfg: TrainConfig, epoch: int) -> float:
    if cfg.lr_schedule == "constant" or cfg.epochs <= 1:
        return 1.0
    if cfg.lr_schedule != "linear":
        raise ConfigError(f"lr_schedule must be linear or constant, got {cfg.lr_schedule!r}")
    return 1.0 - (1.0 - cfg.final_lr_fraction) * epoch / (cfg.epochs - 1)


def random_crops(images: torch.Tensor, size: tuple[int, int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random (h, w) window per image of (B, C, H, W), at the same pixel scale (no resizing).

    Returns the crops (B, C, h, w) and the windows' top-left corners (B, 2),
    drawn uniformly from ``generator``; :func:`cut_windows` cuts the same
    windows out of another batch of the same size (e.g. its corrupted view).
    """
    h, w = size
    H, W = images.shape[-2:]
    if h > H or w > W:
        raise ConfigError(f"crop {h}x{w} is larger than the images ({H}x{W})")
    b = images.shape[0]
    corners = torch.stack([torch.randint(0, H - h + 1, (b,), generator=generator),
                           torch.randint(0, W - w + 1, (b,), generator=generator)], dim=1)
    return cut_windows(images, corners, size), corners


def cut_windows(images: torch.Tensor, corners: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The (h, w) windows at ``corners`` (B, 2: top, left) of images (B, C, H, W)."""
    h, w = size
    return torch.stack([images[i, :, int(t) : int(t) + h, int(c) : int(c) + w] for i, (t, c) in enumerate(corners)])


@torch.inference_mode()
def predict_cache(model: QualityModel, cache: torch.Tensor, device, batch_size: int = 64, amp: bool = False) -> np.ndarray:
    """Scores of cached uint8 images."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, cache.shape[0], batch_size):
            with _autocast(device, amp):
                out.append(model(_batch_of(cache, i, batch_size, device)).float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def _batch_of(cache: torch.Tensor, start: int, batch_size: int, device) -> torch.Tensor:
    return cache[start : start + batch_size].to(device).float().div_(255.0).contiguous(memory_format=torch.channels_last)


#: the most memory (bytes) training spends on keeping the frozen trunk's outputs of its fixed validation images
#: (:class:`FixedImageScorer`); past it, those images go through the whole model every epoch instead
FIXED_FEATURES_BUDGET = 1 << 30


class FixedImageScorer:
    """Scores the same uint8 images after every epoch, running a frozen trunk only once.

    With :attr:`QualityModel.trunk_frozen` (the default ``train_from="head"``),
    training changes only the head, so the outputs of the fixed parts
    (:meth:`QualityModel.fixed_features`: the trunk's map, the teacher term,
    the statistics) are computed once, batch by batch as
    :func:`predict_cache` would, and each call runs the head alone on them:
    the same scores as :func:`predict_cache`, at a fraction of the time.
    ``budget`` is a one-element list of the bytes still allowed for kept
    outputs, shared by the scorers of one run; a set that does not fit, or a
    trunk that trains, is scored with :func:`predict_cache` every call.
    """

    def __init__(self, model: QualityModel, cache: torch.Tensor, device, amp: bool, budget: list[int],
                 batch_size: int = 64, fixed: QualityModel | None = None) -> None:
        self.model, self.cache, self.device, self.amp, self.batch_size = model, cache, device, amp, batch_size
        self.features: list[tuple] | None = None
        if model.trunk_frozen and cache.shape[0] > 0:
            self.features = self._fixed(budget, fixed or model)

    def _fixed(self, budget: list[int], net: QualityModel) -> list[tuple] | None:
        self.model.eval()
        net.eval()
        out, used = [], 0
        with torch.no_grad():
            for i in range(0, self.cache.shape[0], self.batch_size):
                with _autocast(self.device, self.amp):
                    feats = net.fixed_features(_batch_of(self.cache, i, self.batch_size, self.device))
                used += sum(t.numel() * t.element_size() for t in feats if t is not None)
                if used > budget[0]:
                    return None
                out.append(feats)
        budget[0] -= used
        return out

    def __call__(self) -> np.ndarray:
        if self.features is None:
            return predict_cache(self.model, self.cache, self.device, self.batch_size, self.amp)
        self.model.eval()
        with torch.no_grad(), _autocast(self.device, self.amp):
            out = [self.model.from_fixed_features(f).float().cpu() for f in self.features]
        return torch.cat(out).numpy().astype(np.float64)


def strong_views_of(cfg: TrainConfig) -> StrongViews:
    """The strong views of a run: its families (``cfg.strong_views``), degree range, margins.

    The training views (with relativity) and the fixed validation views of
    the kept-epoch criterion both come from here, so a family left out of
    ``strong_views`` (e.g. held out to test generalisation) is never seen,
    not even by the criterion that picks the epoch, also when relativity is off.
    """
    return StrongViews(parse_strong_views(cfg.strong_views), tuple(cfg.degree_range), cfg.margin_scale,
                       dict(cfg.calibration))


def validation_views_per_image(n_val: int, min_pairs: int) -> int:
    """Fixed corrupted views of each validation image: ``max(1, ceil(min_pairs / n_val))``.

    Enough that the clean-over-corrupted criterion counts at least
    ``min_pairs`` pairs (one view each when there are that many validation
    images already); 0 without validation images.
    """
    if n_val <= 0:
        return 0
    return max(1, math.ceil(min_pairs / n_val))


def _fixed_strong_views(val_cache: torch.Tensor | None, strong: StrongViews, seed: int,
                        min_pairs: int = 0) -> torch.Tensor | None:
    """Fixed corruptions of the validation images (uint8), drawn once and reused every epoch.

    :func:`validation_views_per_image` views of each image, drawn view by view
    from one generator seeded with ``10_000 + seed`` (a family and a degree per
    image and view, from the training's strong-view distribution): rows
    ``[k * n_val, (k + 1) * n_val)`` are view ``k`` of every image. The first
    view is the one a single-view run draws, so a pool with at least
    ``min_pairs`` validation images gets exactly the views it got before.
    """
    if val_cache is None or val_cache.shape[0] == 0:
        return None
    g = torch.Generator().manual_seed(10_000 + seed)
    x = val_cache.float().div(255.0)
    views = []
    for _ in range(validation_views_per_image(x.shape[0], min_pairs)):
        xs, _ = strong(x, generator=g)
        views.append((xs * 255).round().to(torch.uint8))
    return torch.cat(views)


class _Validation:
    """The per-epoch validation metrics of a run on its fixed images (validation images, their fixed corrupted
    views, the validation pairs), each set scored by a :class:`FixedImageScorer`."""

    def __init__(self, model: QualityModel, val_cache, val_q, device, strong_cache: torch.Tensor | None, amp: bool,
                 val_pairs=None, fixed: QualityModel | None = None) -> None:
        budget = [FIXED_FEATURES_BUDGET]
        self.val_q = val_q
        self.clean = strong = pairs = None
        if val_cache is not None and val_cache.shape[0] > 0:
            self.clean = FixedImageScorer(model, val_cache, device, amp, budget, fixed=fixed)
            if strong_cache is not None:
                strong = FixedImageScorer(model, strong_cache, device, amp, budget, fixed=fixed)
            if val_pairs is not None:
                pairs = tuple(FixedImageScorer(model, c, device, amp, budget, fixed=fixed) for c in val_pairs)
        self.strong, self.pairs = strong, pairs

    def __call__(self) -> dict:
        from scipy import stats

        from .evaluation import pair_outcomes

        if self.clean is None:
            return {}
        p = self.clean()
        m = {"val_l_d": float(np.mean((p - self.val_q) ** 2))}
        if self.val_q.size >= 3 and np.ptp(p) > 0:
            m["val_srcc"] = float(stats.spearmanr(p, self.val_q).statistic)
        else:
            m["val_srcc"] = float("nan")
        if self.strong is not None:  # does the model rank each clean image above its fixed corruptions?
            ps = self.strong()
            m["val_strong_accuracy"] = float(pair_outcomes(np.tile(p, ps.size // p.size), ps).mean())
            m["val_strong_pairs"] = int(ps.size)
        if self.pairs is not None:
            pb, pw = (scorer() for scorer in self.pairs)
            m["val_accuracy"] = float(pair_outcomes(pb, pw).mean())
        return m


@holds_output_dir("run_dir")
def train(
    paths: Sequence[str],
    labels: Sequence[float],
    *,
    config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    weights=None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    device="auto",
    crop=None,
    num_workers: int | None = None,
    val_pairs: Sequence[tuple[str, str]] | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    extra_meta: dict | None = None,
    overwrite: bool = True,
    references: Sequence[str] | None = None,
    reference_crop=None,
    anchor_transform: tuple[float | None, float, float] | None = None,
) -> TrainResult:
    """Train a CRL-UIQA quality model on images with pseudo-labels.

    ``run_dir`` receives the per-epoch checkpoint (``last.*``), ``history.csv``,
    ``training_curves.png`` and the final ``model.*``. With ``resume=True`` a
    run continues from ``run_dir/last.*``. ``val_pairs`` (better, worse
    paths) adds the validation pairwise accuracy to each epoch's metrics.

    Without ``resume``, a ``run_dir`` holding a run is refused unless
    ``overwrite`` (the default of this low-level function; the ``fit`` and
    ``train`` commands and :class:`~crl_uiqa.estimator.CRLUIQA` default to
    refusing). A resumed run must train on the same paths and labels.
    ``run_dir`` is held for the call (:func:`crl_uiqa.files.output_lock`):
    while another run fills it, the call is refused before anything there changes.
    The anchored head (``model_config.head == "anchored"``) needs the
    ``references`` (image paths): their embeddings and the pseudo-label map
    (``anchor_transform`` = (Yeo-Johnson lambda or None, lo, hi) of Eq. 2-3;
    fitted on the training images' distances when not given) become buffers
    of the model, which then starts at the pseudo-label score. Without an
    ``anchor_transform``, at the backbone's own size, the ``labels`` must rank
    the images as that score does (Spearman >= :data:`MIN_LABEL_AGREEMENT`),
    else ConfigError: the anchored head learns from its references' score and
    would ignore other labels (at another size the score is refitted there by
    design, and a disagreement is logged as a warning).

    Epoch 0 in the history is the model before training. ``config.select``
    ``"best"`` keeps the epoch with the highest :func:`selection_criterion`
    (``"last"``, the paper, keeps the last); ``TrainResult.warnings`` holds
    :func:`diagnose_training`'s diagnoses, also logged.
    """
    cfg = config or TrainConfig()
    mcfg = model_config or ModelConfig()
    extra = extra_meta or {}
    q_all = _validate_labels(paths, labels)
    check_val_pairs(val_pairs)
    dev = resolve_device(device)
    amp = autocast_enabled(cfg.amp, dev)
    window = _training_window(cfg, mcfg)  # TrainConfig.train_crop; ``crop`` is the users' crop box of every image
    run_dir, last = _open_run_dir(run_dir, resume, overwrite)
    # the images by file (a run resumed from another folder is the same run); the second is how checkpoints
    # written before 2026-12-02 identified them (the path strings as given)
    digest, legacy_digest = (inputs_digest([key(p) for p in paths], [float(v) for v in q_all])
                             for key in (path_key, str))
    torch.manual_seed(cfg.seed)
    given_labels = anchor_transform is None  # not the pseudo-labels' own map: labels to check against the teacher
    if references:  # listed once, for the embeddings and the statistics alike; a reference given twice counts once
        references = list_references(references)
    ref_emb, mcfg, anchor_transform, native = _anchored_references(references, mcfg, weights, dev, reference_crop,
                                                                   num_workers, progress, anchor_transform)
    mcfg = _small_pool_correction(cfg, mcfg, len(paths))
    model, opt = _model_and_optimizer(cfg, mcfg, weights, dev, pretrained=not (resume and last.exists()))
    state = _resume(last, run_dir, model, opt, cfg, mcfg, (digest, legacy_digest), dev) if resume else _RunState(_BestEpoch(cfg.select))
    history, best = state.history, state.best
    # the images (decoded once), the anchored head's teacher, the validation views and pairs
    data = _load_data(paths, q_all, cfg, mcfg.image_size, crop, num_workers, progress)
    if ref_emb is not None and state.start_epoch == 0:  # a resumed run has its teacher in its checkpoint
        teacher = _set_teacher(model, ref_emb, data.cache, anchor_transform, references, reference_crop, num_workers,
                               dev, amp)
        if teacher is not None and given_labels:
            _check_labels_follow_teacher(data, teacher, mcfg.image_size, refuse=native)
    vp_cache = _load_val_pairs(val_pairs, mcfg.image_size, crop, num_workers) if val_pairs else None
    views = strong_views_of(cfg)  # the run's families only, also for the validation views and without L_r
    va_strong = _validation_views(data.va_cache, views, cfg)
    fixed = _folded_fixed_parts(model)  # a frozen trunk's outputs, computed with its batch norms folded
    evaluate = _Validation(model, data.va_cache, data.q_va, dev, va_strong, amp, vp_cache, fixed)  # frozen parts once
    # epoch 0 is the model before training; every epoch trained ends with a checkpoint
    n = data.tr_cache.shape[0]
    steps = math.ceil(n / cfg.batch_size)
    epochs, untrained = _epoch_schedule(cfg, mcfg, n, steps, 0 if data.va_cache is None else data.va_cache.shape[0])
    sched = replace(cfg, epochs=max(epochs, 1))
    meta_base = {"model_config": mcfg.to_dict(), "train_config": cfg.to_dict(), "inputs_sha256": digest, **extra}
    if run_dir is not None and history:  # history.csv may lag the checkpoint by one epoch after a kill
        _write_history(run_dir, history)
    if state.start_epoch == 0:  # epoch 0: the model before training (the teacher itself for the anchored head)
        _epoch_zero(model, evaluate, best, history, progress)
    t_run = time.perf_counter()
    for epoch in range(state.start_epoch, epochs):
        t0 = time.perf_counter()
        lr = cfg.lr * _lr_factor(sched, epoch)
        sums = _train_epoch(model, opt, data.tr_cache, data.q_tr, cfg=cfg, head=mcfg.head, epoch=epoch, epochs=epochs,
                            lr=lr, window=window, views=views, dev=dev, amp=amp, progress=progress, fixed=fixed)
        row = {"epoch": epoch + 1, "lr": lr, **{k: v / n for k, v in sums.items()}, **evaluate()}
        row["seconds"] = time.perf_counter() - t0
        best.consider(row, model)
        history.append(row)
        if progress:
            _log_epoch(row, epoch, epochs, state.start_epoch, t_run)
        if run_dir is not None:
            _save_checkpoint(run_dir, model, opt, best, meta_base, epoch, history)
        if on_epoch is not None:  # after the checkpoint: a callback that stops the run loses nothing
            on_epoch(row)
    kept_epoch, warnings = _keep_and_diagnose(model, best, history, cfg, mcfg.head, epochs, steps, n, untrained)
    return _finish_run(model, history, run_dir, data, cfg, extra, kept_epoch, warnings)


def _folded_fixed_parts(model: QualityModel) -> QualityModel | None:
    """What computes the outputs of a frozen trunk (:attr:`QualityModel.trunk_frozen`) in training: a copy of the
    model with its batch norms folded into the convolutions (:func:`crl_uiqa.devices.fold_batch_norm`; the same
    outputs to float rounding, a fifth less time), made once the teacher is set; None when the trunk trains or
    nothing folds (the model computes them itself)."""
    from .devices import fold_batch_norm

    if not model.trunk_frozen or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                         for m in model.backbone.modules()):
        return None  # a trunk that trains, or one without batch norm (a copy would gain nothing)
    was = model.training
    try:
        folded = fold_batch_norm(model.eval())
    finally:
        model.train(was)
    if folded is model:
        return None
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.to(memory_format=torch.channels_last)


def _training_window(cfg: TrainConfig, mcfg: ModelConfig) -> tuple[int, int] | None:
    """The training window (H, W) of ``cfg.train_crop`` at the model's size; None = whole frames.

    Refused (ConfigError) unless it fits in the image size and is at least the
    backbone's smallest input per side.
    """
    if cfg.train_crop is None:
        return None
    from .backbones import min_input_size

    smallest = min_input_size(mcfg.backbone)
    window = cfg.crop_size(mcfg.image_size, smallest)
    (ch, cw), (h, w) = window, mcfg.image_size
    if ch > h or cw > w or min(ch, cw) < smallest:
        raise ConfigError(f"train_crop {ch} {cw} must fit in the image size {h} {w} and be at least "
                          f"{smallest} pixels per side for {mcfg.backbone}")
    return window


def _open_run_dir(run_dir: str | Path | None, resume: bool, overwrite: bool) -> tuple[Path | None, Path | None]:
    """(run directory, its ``last.safetensors``), both None without one; refuses what cannot be (re)started."""
    run_dir = Path(run_dir) if run_dir is not None else None
    if resume and run_dir is None:
        raise ConfigError("--resume needs a run directory")
    if run_dir is not None:
        check_run_dir(run_dir, resume=resume, overwrite=overwrite,
                      files=("last.safetensors", "last.json", "model.safetensors", "model.json"))
    last = run_dir / "last.safetensors" if run_dir is not None else None
    if resume and not last.exists() and not any((run_dir / f).exists() for f in ("labels.csv", "fit.json")):
        raise NotFoundError(f"--resume: {run_dir} holds no interrupted run (no last.safetensors)")
    return run_dir, last


def _anchored_references(references, mcfg: ModelConfig, weights, dev, reference_crop, num_workers, progress,
                         anchor_transform):
    """(reference embeddings, completed ModelConfig, pseudo-label map or None to fit it, whether the model's size
    is the backbone's own, the size pseudo-labels are computed at) of the anchored head.

    (None, ``mcfg``, ``anchor_transform``, True) for the paper's head, which has no references.
    """
    if mcfg.head != "anchored":
        return None, mcfg, anchor_transform, True
    if not references:
        raise ConfigError("the anchored head needs the reference planes (references=...; --references), "
                          "or use head='paper' (--head paper)")
    ref_emb, mcfg, native = _reference_embeddings(references, mcfg, weights, dev, reference_crop, num_workers,
                                                  progress)
    if anchor_transform is not None and not native:
        log.info("the model's size %s is not the size the pseudo-labels were computed at: the anchored head's "
                 "label map is fitted on the training images at the model's size", tuple(mcfg.image_size))
        anchor_transform = None
    return ref_emb, mcfg, anchor_transform, native


def _model_and_optimizer(cfg: TrainConfig, mcfg: ModelConfig, weights, dev, pretrained: bool):
    """The model on ``dev`` (channels-last) and SGD (Nesterov) over its trainable parameters."""
    model = build_model(mcfg, weights=weights, pretrained=pretrained)
    model.to(dev).to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    return model, opt


def _set_teacher(model: QualityModel, ref_emb: torch.Tensor, cache: torch.Tensor, anchor_transform, references,
                 reference_crop, num_workers, dev, amp: bool) -> np.ndarray | None:
    """The anchored head's teacher: the references and the label map, the references' statistics if it uses them.

    Returns the teacher's pseudo-labels of the ``cache`` images when the label map was fitted on them (no
    ``anchor_transform`` given), else None.
    """
    labels = _set_anchor(model, ref_emb, cache, dev, anchor_transform, amp)
    if model.config.anchor.get("reference_stats"):
        model.deviation.set(_reference_statistics(references, model.config.image_size, reference_crop, num_workers,
                                                  model.deviation.statistics))
    return labels


#: The least Spearman correlation between given labels and the anchored head's own pseudo-labels: below it the
#: labels were not computed from these references (the same setup gives 0.99+: the labels' map is monotone).
MIN_LABEL_AGREEMENT = 0.9


def _check_labels_follow_teacher(data: _Data, teacher: np.ndarray, size: tuple[int, int], refuse: bool) -> None:
    """Refuse (``refuse``) or warn about labels the anchored head would not learn: it starts from, and its L_d on
    training windows targets, the distance score of its references, so labels made otherwise (expert grades,
    another score) would be ignored.

    Refused at the backbone's own size, where pseudo-labels of the same references agree (Spearman 0.99+). At
    another size the head's score is refitted there by design and agrees less with labels made at the backbone's
    size (0.5-0.9 measured), so a disagreement is only logged.
    """
    from scipy.stats import spearmanr

    q = np.empty(len(data.kept_paths))
    q[data.tr_idx] = data.q_tr.numpy()
    q[data.va_idx] = data.q_va
    rho = float(spearmanr(q, teacher).statistic) if np.ptp(teacher) > 0 and np.ptp(q) > 0 else float("nan")
    if rho >= MIN_LABEL_AGREEMENT:
        return
    if not refuse:
        log.warning("the anchored head learns from its references' distance score at the model's size %dx%d, not "
                    "from the labels (Spearman %.2f over %d images); to learn these labels use the paper's head "
                    "(--paper)", size[0], size[1], rho, q.size)
        return
    raise ConfigError(f"the labels do not follow the anchored head's own score, the distance to the references "
                      f"at the model's size {size[0]}x{size[1]} (Spearman {rho:.2f} over {q.size} images; "
                      f"{MIN_LABEL_AGREEMENT} or more for labels computed from these references): it learns from "
                      "that score and would ignore them. Give the references the labels were computed against, or "
                      "train on these labels with the paper's head (--paper)")


class _BestEpoch:
    """The epoch kept with ``select="best"``: the highest :func:`selection_criterion` so far, and its weights.

    A trained epoch must beat epoch 0 (the starting model); among trained
    epochs a tie goes to the later. Every row considered gets its
    ``"criterion"``, also with ``select="last"``.
    """

    def __init__(self, select: str, state: dict | None = None, epoch: int | None = None,
                 criterion: float = -float("inf")) -> None:
        self.select, self.state, self.epoch, self.criterion = select, state, epoch, criterion

    def consider(self, row: dict, model: QualityModel) -> None:
        crit = selection_criterion(row)
        row["criterion"] = crit
        # a trained epoch must beat epoch 0 (the starting model); among trained epochs a tie goes to the later
        better = crit > self.criterion if self.epoch in (None, 0) else crit >= self.criterion
        if self.select == "best" and np.isfinite(crit) and better:
            self.criterion, self.epoch = crit, int(row["epoch"])
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def keep(self, model: QualityModel, history: list[dict]) -> int | None:
        """Load the kept epoch's weights into ``model`` (``select="best"``); the kept epoch (None: no epoch)."""
        kept_epoch = int(history[-1]["epoch"]) if history else None
        if self.select == "best" and self.state is not None:
            model.load_state_dict(self.state)
            kept_epoch = self.epoch
        elif self.select == "best":
            log.warning("no validation images (val_fraction 0, or a pool of 2): keeping the last epoch")
        return kept_epoch


@dataclass
class _RunState:
    """Where a run starts: at epoch 0, or where an interrupted run's checkpoint left it."""

    best: _BestEpoch
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)


def _resume(last: Path, run_dir: Path, model: QualityModel, opt: torch.optim.Optimizer, cfg: TrainConfig,
            mcfg: ModelConfig, digests: tuple[str, ...], dev) -> _RunState:
    """Restore the model, the optimizer, the history and the best epoch from ``last`` (a resumed run).

    Refuses a checkpoint of other settings or other inputs; without a
    checkpoint yet (killed before the first one) the run starts at epoch 1.
    """
    state = _RunState(_BestEpoch(cfg.select))
    if not last.exists():
        log.info("%s has no checkpoint yet: training from epoch 1", run_dir)
        return state
    tensors, meta = load_tensors(last, device=dev)
    try:
        old = meta["train_config"]
        changed = [k for k in _RESUME_KEYS if k in old and TrainConfig.from_dict(old).to_dict()[k] != cfg.to_dict()[k]]
        same_model = ModelConfig.from_dict(meta["model_config"]).to_dict() == mcfg.to_dict()
    except (KeyError, TypeError, ConfigError) as exc:
        raise ModelError(f"{last}: not a crl-uiqa training checkpoint ({exc})") from None
    if changed or not same_model:
        raise ConfigError(f"cannot resume {run_dir}: settings differ from the checkpoint ({', '.join(changed) or 'model'})")
    if meta.get("inputs_sha256", digests[0]) not in digests:
        raise ConfigError(f"cannot resume {run_dir}: the training images or labels differ from those of the "
                          "interrupted run; give the same inputs, or start anew with --overwrite (or another --out)")
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    restore_optimizer(opt, tensors, meta["optimizer"])
    state.start_epoch = int(meta["epoch"]) + 1
    state.history = list(meta.get("history", []))
    if "best_epoch" in meta:
        state.best.state = {k.removeprefix("best."): v.clone() for k, v in tensors.items() if k.startswith("best.")}
        state.best.epoch, state.best.criterion = int(meta["best_epoch"]), float(meta["best_criterion"])
    log.info("resuming %s at epoch %d", run_dir, state.start_epoch + 1)
    return state


@dataclass
class _Data:
    """The readable training images (decoded once), split into training and validation."""

    kept_paths: list[str]  # the paths of the readable images
    cache: torch.Tensor  # all of them (uint8)
    tr_idx: np.ndarray
    va_idx: np.ndarray
    tr_cache: torch.Tensor
    va_cache: torch.Tensor | None
    q_tr: torch.Tensor
    q_va: np.ndarray
    failures: list

    def paths_of(self, idx: np.ndarray) -> list[str]:
        return [self.kept_paths[i] for i in idx]


def _load_data(paths: Sequence[str], q_all: np.ndarray, cfg: TrainConfig, size, crop, num_workers,
               progress: bool) -> _Data:
    """Decode the images once and split the readable ones (and their labels) into training and validation."""
    cache, kept, failures = load_image_cache(paths, size, crop=crop, num_workers=num_workers,
                                             progress=progress, desc="loading images")
    kept_paths = [paths[i] for i in kept]
    q_all = q_all[kept]
    tr_idx, va_idx = split_train_val(len(kept_paths), cfg.val_fraction, cfg.seed)
    return _Data(kept_paths, cache, tr_idx, va_idx, cache[tr_idx], cache[va_idx] if len(va_idx) else None,
                 torch.tensor(q_all[tr_idx], dtype=torch.float32), q_all[va_idx], failures)


def check_val_pairs(val_pairs: Sequence[Sequence[str]] | None) -> None:
    """Refuse, before any work, validation pairs naming an image that is not a file, or one whose header the image
    reader refuses (:func:`crl_uiqa.io.check_image`: not an image, too large, several frames): both were found
    only when the pairs were decoded, after the pseudo-labels (``fit``, minutes of work)."""
    import os

    missing = [p for pair in val_pairs or () for p in pair[:2] if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise NotFoundError(f"validation pair image not found (--val-pairs): {missing[0]}{more}")
    for i, pair in enumerate(val_pairs or (), start=1):
        for side, path in zip(("better", "worse"), pair[:2]):
            try:
                check_image(path)
            except ImageReadError as exc:
                raise InputError(f"validation pair image {path} cannot be read: {exc.reason} (--val-pairs: pair "
                                 f"{i}, its {side} image; every one must be readable)") from None


def _load_val_pairs(val_pairs, size, crop, num_workers) -> tuple[torch.Tensor, torch.Tensor]:
    """The (better, worse) validation pairs' images, decoded once; every one must be readable."""
    caches, failures = [], []
    for side in (0, 1):
        cache, _, failed = load_image_cache([pair[side] for pair in val_pairs], size, crop=crop,
                                            num_workers=num_workers, progress=False, what="validation pair image")
        caches.append(cache)
        failures += failed
    if failures:
        raise InputError(f"validation pair image {failures[0].path} cannot be read: {failures[0].reason} (--val-pairs: "
                         "every one must be)")
    return caches[0], caches[1]


def _validation_views(va_cache: torch.Tensor | None, views: StrongViews, cfg: TrainConfig) -> torch.Tensor | None:
    """The fixed corrupted views of the validation images (:func:`_fixed_strong_views`), said when several each."""
    va_strong = _fixed_strong_views(va_cache, views, cfg.seed, cfg.min_val_pairs)
    if va_strong is not None and va_strong.shape[0] > va_cache.shape[0]:
        log.info("%d validation images: %d fixed corrupted views each, %d clean-over-corrupted pairs (min_val_pairs)",
                 va_cache.shape[0], va_strong.shape[0] // va_cache.shape[0], va_strong.shape[0])
    return va_strong


def _small_pool_correction(cfg: TrainConfig, mcfg: ModelConfig, n_images: int) -> ModelConfig:
    """``mcfg`` with the anchored head's correction limited to the deviation features (``correction="deviation"``)
    when the pool's training split has fewer than ``min_train_images`` images and the head has the
    deviation-from-references features; else ``mcfg`` unchanged.

    On three 40-image HC18 pools the deviation correction (two parameters, with ``reference_stats="norm"``)
    beat its teacher on the dev protocol by as much as the full correction (a conv head on the trunk's feature
    map), +0.10 each, and neither moved simulated plane-position pairs beyond noise (BENCHMARKS.md "A pool of
    40 images").

    The deviation correction measures the six statistics of before the black level
    (:data:`~crl_uiqa.reference_stats.SIX_STATISTICS`): with the seventh its root mean square has a term that
    is 0 for every clean frame, and on one pool of 20 and of 40 images it then kept its teacher, or gained
    0.044 less, where the six gained +0.10 (BENCHMARKS.md "The black level"; the other pools alike).
    """
    if (mcfg.head != "anchored" or not mcfg.anchor.get("reference_stats") or "correction" in mcfg.anchor
            or not cfg.min_train_images):
        return mcfg
    n_train = len(split_train_val(n_images, cfg.val_fraction, cfg.seed)[0])
    if n_train >= cfg.min_train_images:
        return mcfg
    log.info("%d training images (fewer than min_train_images = %d): the correction learns only how much deviating "
             "from the references' statistics costs (--min-train-images 0 trains the full correction)",
             n_train, cfg.min_train_images)
    return replace(mcfg, anchor={**mcfg.anchor, "correction": "deviation", "statistics": list(SIX_STATISTICS)})


def _epoch_schedule(cfg: TrainConfig, mcfg: ModelConfig, n: int, steps: int, n_val: int) -> tuple[int, str | None]:
    """(epochs to train, the reason the model stays untrained or None) for ``n`` training and ``n_val``
    validation images, ``steps`` batches per epoch.

    The anchored student keeps its teacher without training (0 epochs, with
    the reason as a warning) when it is to keep the best epoch but no image is
    left to validate on (a pool of 2), or when the pool is under
    ``min_train_images`` and the head has no deviation features
    (:func:`_small_pool_correction`); otherwise the epochs rise until the run
    makes ``min_steps`` SGD steps.
    """
    if mcfg.head == "anchored" and cfg.select == "best" and n_val == 0:
        return 0, (f"no validation image (val_fraction {cfg.val_fraction:g} of {n + n_val} images): nothing can show "
                   "that a trained correction beats its teacher, so the model is its teacher, the distance score, "
                   "untrained; give more images, or --select last to train anyway")
    if mcfg.head == "anchored" and n < cfg.min_train_images and mcfg.anchor.get("correction") != "deviation":
        return 0, (f"only {n} training images (fewer than min_train_images = {cfg.min_train_images}) and no "
                   "deviation-from-references features (--reference-stats off): the model is its teacher, the "
                   "distance score, untrained — on pools of 34 images the co-learned correction lost to its teacher "
                   "on 2 of 3 measured pools (README, Known limits); --min-train-images 0 trains anyway")
    epochs = cfg.epochs
    if cfg.min_steps and epochs * steps < cfg.min_steps:
        epochs = math.ceil(cfg.min_steps / steps)
        log.info("%d training images make %d steps per epoch: %d epochs instead of %d to reach %d steps (min_steps)",
                 n, steps, epochs, cfg.epochs, cfg.min_steps)
    return epochs, None


def _epoch_zero(model: QualityModel, evaluate: Callable[[], dict], best: _BestEpoch, history: list[dict],
                progress: bool) -> None:
    """The history's first row: the model before training, validated."""
    row0 = {"epoch": 0, "lr": 0.0, **evaluate()}
    best.consider(row0, model)
    history.append(row0)
    if progress:
        log.info("before training (epoch 0)  %s", _metrics_text(row0, ("epoch", "lr")))


def _train_epoch(model: QualityModel, opt: torch.optim.Optimizer, tr_cache: torch.Tensor, q_tr: torch.Tensor, *,
                 cfg: TrainConfig, head: str, epoch: int, epochs: int, lr: float, window: tuple[int, int] | None,
                 views: StrongViews, dev, amp: bool, progress: bool, fixed: QualityModel | None = None) -> dict[str, float]:
    """One pass over the training images at learning rate ``lr``: the loss terms summed over the images.

    The shuffling, the crops and the views come from one generator seeded
    with (``cfg.seed``, ``epoch``), drawn in batch order, so an epoch is the
    same whether or not the run was resumed before it. The strong ``views``
    (and L_r) only with ``cfg.relativity``. ``fixed`` (:func:`_folded_fixed_parts`): the network that computes
    a frozen trunk's outputs, the model's head learning on them.
    """
    from .progress import progress as _progress

    for grp in opt.param_groups:
        grp["lr"] = lr
    model.train()
    strong = views if cfg.relativity else None
    n = tr_cache.shape[0]
    steps = math.ceil(n / cfg.batch_size)
    weights_ = LossWeights(cfg.alpha, cfg.theta, cfg.beta)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    sums: dict[str, float] = {}
    bar = _progress(range(steps), desc=f"epoch {epoch + 1}/{epochs}", unit="batch", enabled=progress)
    for s in bar:
        idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
        x = tr_cache[idx].to(dev, non_blocking=True).float().div_(255.0)
        q = q_tr[idx].to(dev)
        frames = x
        if window is not None:  # the same window of each view; corruptions made on the whole frame
            x, corners = random_crops(frames, window, g)
        batch = [x]
        if cfg.consistency:
            batch.append(weak_view(x, max_rotation=cfg.max_rotation, generator=g))
        eps = 0.0
        if strong is not None:
            xs, eps = strong(frames, generator=g)
            batch.append(cut_windows(xs, corners, window) if window is not None else xs)
        xb = torch.cat(batch).contiguous(memory_format=torch.channels_last)
        with _autocast(dev, amp):
            feats = None
            if fixed is not None:  # a frozen trunk: nothing in it learns, so it runs without autograd, folded
                with torch.no_grad():
                    feats = fixed.fixed_features(xb)
            if window is not None and head == "anchored":
                # L_d's target for a crop is the teacher's score of that crop (its own pseudo-label under the
                # stored map), not the whole frame's: the correction is held to the teacher on what it sees
                q0, corr = model.anchored_terms(xb, feats)
                out = (q0 + corr).float()
                q = q0[: x.shape[0]].detach().float()
            else:
                out = (model(xb) if feats is None else model.from_fixed_features(feats)).float()
        parts_out = out.split(x.shape[0])
        p = parts_out[0]
        p_weak = parts_out[1] if cfg.consistency else None
        p_strong = parts_out[-1] if strong is not None else None
        loss, parts = total_loss(p, q, p_weak, p_strong, eps, weights_)
        if not torch.isfinite(loss):
            raise _diverged(f"the loss became {float(loss.detach())}", epoch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * x.shape[0]
        bar.set_postfix(loss=f"{parts['loss']:.4f}")
    bar.close()
    # weights gone to inf/NaN make the next step's loss non-finite (checked above); after the last step, once per
    # epoch and before its checkpoint, not a device sync per parameter at every step
    if not all(bool(torch.isfinite(q_).all()) for grp in opt.param_groups for q_ in grp["params"]):
        raise _diverged("a weight became inf or NaN", epoch, cfg)
    return sums


def _diverged(what: str, epoch: int, cfg: TrainConfig) -> ConfigError:
    """Training that ran off to inf/NaN: a setting's fault (one line naming the settings that scale the steps)."""
    return ConfigError(f"training diverged: {what} at epoch {epoch + 1} (--lr {cfg.lr:g}, --weight-decay "
                       f"{cfg.weight_decay:g}, --alpha {cfg.alpha:g}, --theta {cfg.theta:g}, --beta {cfg.beta:g}); "
                       f"lower --lr or the loss weights")


def _metrics_text(row: dict, skip: tuple[str, ...]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in skip and isinstance(v, float))


def _log_epoch(row: dict, epoch: int, epochs: int, start_epoch: int, t_run: float) -> None:
    """The epoch's metrics, the time elapsed since ``t_run`` and an estimate of the time left."""
    from .progress import eta, format_duration

    elapsed = time.perf_counter() - t_run
    left = eta(elapsed, epoch + 1 - start_epoch, epochs - start_epoch)
    log.info("epoch %d/%d  %s  (%s elapsed, about %s left)", epoch + 1, epochs,
             _metrics_text(row, ("epoch", "seconds")), format_duration(elapsed), format_duration(left or 0))


def _save_checkpoint(run_dir: Path, model: QualityModel, opt: torch.optim.Optimizer, best: _BestEpoch,
                     meta_base: dict, epoch: int, history: list[dict]) -> None:
    """The end of an epoch on disk: ``last.*`` (model, optimizer, best epoch's weights, history) and history.csv."""
    opt_t, opt_meta = optimizer_tensors(opt)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_t)
    best_meta = {}
    if best.state is not None:
        tensors.update({f"best.{k}": v for k, v in best.state.items()})
        best_meta = {"best_epoch": best.epoch, "best_criterion": best.criterion}
    save_tensors(run_dir / "last.safetensors", tensors,
                 {**meta_base, "epoch": epoch, "optimizer": opt_meta, "history": history, **best_meta})
    _write_history(run_dir, history)


def _keep_and_diagnose(model: QualityModel, best: _BestEpoch, history: list[dict], cfg: TrainConfig, head: str,
                       epochs: int, steps: int, n: int, untrained: str | None) -> tuple[int | None, list[str]]:
    """Load the kept epoch into ``model`` (eval mode); (kept epoch, warnings), the warnings logged."""
    kept_epoch = best.keep(model, history)
    model.eval()
    warnings = diagnose_training(history, kept_epoch, lr=cfg.lr, steps=steps * epochs, n_train=n, head=head)
    if untrained:
        warnings.insert(0, untrained)
    if cfg.select == "best" and kept_epoch is not None and np.isfinite(best.criterion):
        log.info("kept epoch %d of %d (best validation criterion %.4f)", kept_epoch, epochs, best.criterion)
    for w in warnings:
        log.warning("%s", w)
    return kept_epoch, warnings


def _finish_run(model: QualityModel, history: list[dict], run_dir: Path | None, data: _Data, cfg: TrainConfig,
                extra: dict, kept_epoch: int | None, warnings: list[str]) -> TrainResult:
    """Write the final model (``run_dir/model.*``), report the unreadable images, return the result."""
    if run_dir is not None:
        save_model(model, run_dir, history=history, extra={**extra, "kept_epoch": kept_epoch, "warnings": warnings},
                   train_config=cfg, train_paths=data.paths_of(data.tr_idx))
    if data.failures:
        log.warning("%d training image(s) could not be read and were skipped", len(data.failures))
    return TrainResult(model, history, run_dir, data.paths_of(data.tr_idx), data.paths_of(data.va_idx),
                       data.failures, kept_epoch, warnings)


def _reference_embeddings(references, mcfg: ModelConfig, weights, dev, crop, num_workers, progress):
    """Reference embeddings at the model's resolution and the completed anchored ModelConfig."""
    from .backbones import get_backbone
    from .embed import compute_embeddings
    from .io import list_images

    a = dict(mcfg.anchor)
    a.setdefault("layer", "block4")
    a.setdefault("k", 5)
    a.setdefault("smoothing", True)
    net = get_backbone(mcfg.backbone, weights)
    refs = compute_embeddings(list_images(references), net, layer=a["layer"], size=tuple(mcfg.image_size),
                              device=dev, crop=crop, strict=True, num_workers=num_workers,
                              progress="references" if progress else False)
    a["n_references"], a["dim"] = (int(v) for v in refs.vectors.shape)
    if a["k"] > a["n_references"]:
        raise ConfigError(f"k={a['k']} is larger than the number of references n={a['n_references']}")
    native = tuple(getattr(net, "input_size", mcfg.image_size)) == tuple(mcfg.image_size)
    return torch.from_numpy(refs.vectors), replace(mcfg, anchor=a), native


def _reference_statistics(references, size, crop, num_workers, names) -> torch.Tensor:
    """The references' :func:`~crl_uiqa.reference_stats.image_statistics` ``names`` (n, S) at the model's size."""
    from .io import list_images
    from .reference_stats import image_statistics

    refs, _, failures = load_image_cache(list_images(references), tuple(size), crop=crop, num_workers=num_workers,
                                         progress=False)
    if failures:
        raise InputError(f"reference image {failures[0].path} cannot be read: {failures[0].reason}")
    return torch.cat([image_statistics(refs[i : i + 64].float().div_(255.0), names)
                      for i in range(0, refs.shape[0], 64)])


@torch.inference_mode()
def _set_anchor(model: QualityModel, ref_emb: torch.Tensor, cache: torch.Tensor, dev, transform,
                amp: bool) -> np.ndarray | None:
    """Store the references and the label map; fit the map on the images' distances when not given.

    Returns the images' pseudo-labels when the map was fitted on them, else None.
    """
    from .pseudo_labels import pseudo_labels_from_distances

    labels = None
    if transform is None:
        model.eval()
        model.anchor.references.copy_(ref_emb)
        d = []
        for i in range(0, cache.shape[0], 64):
            f = model.anchor_map(_batch_of(cache, i, 64, dev))
            d.append(model.anchor.distance(f.mean(dim=(2, 3)).float()).double().cpu())
        pl = pseudo_labels_from_distances(torch.cat(d).numpy(), k=model.anchor.k,
                                          smoothing=bool(model.config.anchor.get("smoothing", True)))
        transform = (pl.lmbda, float(pl.smoothed.min()), float(pl.smoothed.max()))
        labels = np.asarray(pl.label, dtype=np.float64)
    model.anchor.set(ref_emb.to(dev), *transform)
    return labels


def _write_history(run_dir: Path, history: list[dict]) -> None:
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    write_csv(run_dir / "history.csv", history, keys)
    try:
        from .files import write_bytes
        from .reporting.figures import fig_to_png, training_curves

        write_bytes(run_dir / "training_curves.png", fig_to_png(training_curves(history)))
    except Exception as exc:  # a plot must never stop training
        log.warning("could not draw training curves: %s", exc)
