"""Checks of single settings, shared by every config's ``__post_init__``.

Each check raises :class:`crl_uiqa.errors.ConfigError` naming the setting as
the user typed it (``name`` is e.g. ``"batch_size (--batch-size)"``), so a bad
value stops the run before any work is done.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

from .errors import ConfigError

#: largest training/scoring resolution accepted per side (a 8192 x 8192 batch of 16 views is already ~13 GB)
MAX_IMAGE_SIDE = 8192
#: largest value a setting used inside float32 training may take (torch's SGD refuses a larger lr or weight decay
#: with an overflow, and a larger loss weight makes every loss inf)
MAX_FLOAT32 = 3.4028234663852886e38
#: largest count a setting that sizes something (a batch, pairs per batch) may take when nothing smaller bounds it: a
#: C int, which every library behind them takes (a --batch-size above sys.maxsize was a ValueError from inside torch's
#: data loader). Counts that cost more have their own, smaller bounds: --batch-size, --epochs and --min-steps (below),
#: --threads (runtime.MAX_THREADS), --n-boot (evaluation.MAX_N_BOOT), SER-FIQ's passes (their dropout masks),
#: simulate's frames (crl_uiqa.data.simulate)
MAX_COUNT = 2**31 - 1
#: most items (images or frames) one forward pass may take (--batch-size of every command, training's included: each
#: of its images brings 3 views): they are held until the batch is full, at the model's input size, and then go
#: through the network at once; 4096 frames of 224 x 288 are 1 GiB of float32 input alone and several times that in
#: activations, and a video's frames are otherwise streamed (--batch-size 100000000 on a long video held every frame)
MAX_BATCH = 4096
#: most training epochs (--epochs): each passes over the whole training pool and scores the validation views (about
#: 10 s on 754 images on 2 CPU cores at the defaults, README), so 10000 is over a day of it and about 300 times the
#: paper's 35; a larger value ran, in effect, forever
MAX_EPOCHS = 10_000
#: most SGD steps --min-steps may ask for: it raises the epochs until they are reached, one epoch a step on a pool
#: of one batch, so this bound also keeps those epochs within MAX_EPOCHS (the default floor is 60 steps)
MAX_MIN_STEPS = MAX_EPOCHS
#: most image decoding processes (--workers): each is a process of its own and holds up to 4 batches decoded ahead
#: of the network (64 x 4 batches of 32 images at 224 x 288 are already 2 GiB), and decoding gains nothing from more
#: processes than cores
MAX_WORKERS = 64
#: largest random seed: the training draws from generators seeded with seed * 1_000_003 + epoch, which must fit
#: torch's 64-bit seed (2**32 - 1, numpy's legacy bound, leaves room for any number of epochs)
MAX_SEED = 2**32 - 1


def flag(field: str) -> str:
    """``batch_size`` -> ``batch_size (--batch-size)``: the config field and its command-line option."""
    return f"{field} (--{field.replace('_', '-')})"


def integer(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {v}")
    return v


def real(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
         strict_min: bool = False, strict_max: bool = False) -> float:
    """A finite number within the bounds (``strict_*``: the bound itself excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v}")
    if minimum is not None and (v <= minimum if strict_min else v < minimum):
        raise ConfigError(f"{name} must be {'>' if strict_min else '>='} {minimum:g}, got {v:g}")
    if maximum is not None and (v >= maximum if strict_max else v > maximum):
        raise ConfigError(f"{name} must be {'<' if strict_max else '<='} {maximum:g}, got {v:g}")
    return v


def choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def image_size(name: str, value: Any, *, minimum: int = 1) -> tuple[int, int]:
    """(H, W) of positive integers, each side within [minimum, MAX_IMAGE_SIDE]."""
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be two integers H W, got {value!r}") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ConfigError(f"{name} must be two integers H W, got {value!r}")
    h, w = int(h), int(w)
    if min(h, w) < minimum or max(h, w) > MAX_IMAGE_SIDE:
        raise ConfigError(f"{name} must be between {minimum} and {MAX_IMAGE_SIDE} pixels per side for this "
                          f"backbone, got {h} {w}")
    return h, w


def crop(name: str, value: Any) -> tuple[int, int, int, int] | None:
    """A crop box ``(top, left, height, width)`` of integers, top and left >= 0, height and width at least
    :data:`crl_uiqa.io.MIN_IMAGE_SIDE` (None: no crop): a smaller box made every image too small to use, found only
    after all of them were decoded (:func:`crop_side`). Whether it fits an image is the image's business
    (:func:`crl_uiqa.io.apply_crop`)."""
    if value is None:
        return None
    try:
        box = tuple(value)
    except TypeError:
        box = ()
    if len(box) != 4 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in box):
        raise ConfigError(f"{name} must be a box of four integers TOP LEFT HEIGHT WIDTH, got {value!r}")
    top, left, h, w = (int(v) for v in box)
    if top < 0 or left < 0 or h < 1 or w < 1:
        raise ConfigError(f"a crop box TOP LEFT HEIGHT WIDTH needs top, left >= 0 and height, width >= 1; "
                          f"got {top} {left} {h} {w}")
    crop_side((top, left, h, w), name)
    return top, left, h, w


def crop_side(box: tuple[int, int, int, int], name: str | None = None) -> None:
    """Refuse a crop box ``(top, left, height, width)`` with a side below :data:`crl_uiqa.io.MIN_IMAGE_SIDE`: every
    image or frame cut to it would be too small to use (:func:`crop` for images, and
    :class:`crl_uiqa.video.framing.RegionPolicy` for scans, say it in these words)."""
    from .io import MIN_IMAGE_SIDE

    h, w = box[2], box[3]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ConfigError(f"{name + ': ' if name else ''}crop box (top, left, height, width)={tuple(box)} is {h}x{w} "
                          f"pixels, below the model pipeline's minimum of {MIN_IMAGE_SIDE} per side")
