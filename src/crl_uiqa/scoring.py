"""Scoring image files (:func:`score_paths`) or images in memory (:func:`score_arrays`) with a trained quality
model (higher = better)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .embed import prepare_model, resolve_device
from .errors import InputError
from .io import Crop, ReadFailure, apply_crop, gray_array, iter_batches, model_tensor


@dataclass
class Scores:
    """Scores of the readable images, in input order, with the paths exactly as given."""

    paths: list[str]
    scores: np.ndarray
    failures: list[ReadFailure] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.paths, map(float, self.scores)))

    def to_csv(self, path):
        from .files import write_csv

        return write_csv(path, [{"path": p, "score": float(s)} for p, s in zip(self.paths, self.scores)],
                         ["path", "score"])


@torch.inference_mode()
def score_tensor(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Scores (B,) of a batch (B, 1, H, W) in [0, 1] already at the model's size."""
    return model(x.contiguous(memory_format=torch.channels_last)).float()


@torch.inference_mode()
def score_paths(
    model: torch.nn.Module,
    paths: Sequence[str],
    *,
    size: tuple[int, int] | None = None,
    batch_size: int = 32,
    device="auto",
    crop: Crop | None = None,
    strict: bool = False,
    num_workers: int | None = None,
    progress: bool | str = True,
    amp: bool | str = True,
) -> Scores:
    """Score image files; unreadable ones are skipped and listed (or raise with ``strict``).

    ``amp``: bfloat16 autocast, on CUDA only (``True``), on the CPU too
    (``"bf16"``) or never (``False``); see :func:`crl_uiqa.devices.autocast_enabled`.
    """
    from .devices import autocast, autocast_enabled

    dev = resolve_device(device)
    model = prepare_model(model, dev)
    size = tuple(size or model.config.image_size)
    amp = autocast_enabled(amp, dev)
    failures: list[ReadFailure] = []
    out, kept = [], []
    for b in iter_batches(paths, size=size, batch_size=batch_size, crop=crop, strict=strict, failures=failures,
                          num_workers=num_workers, progress=("scoring" if progress is True else progress)):
        with autocast(dev, amp):
            out.append(score_tensor(model, b.images.to(dev, non_blocking=True)).cpu())
        kept.extend(b.indices)
    if not out:
        raise InputError(f"none of the {len(paths)} images could be read")
    return Scores([paths[i] for i in kept], torch.cat(out).numpy().astype(np.float64), failures)


_CHANNELS = (1, 3, 4)  # gray, RGB, RGBA


def as_image_list(images) -> list:
    """In-memory images as a list, one entry per image: an ``(H, W)`` array or an ``(H, W, C)`` array with C of 1,
    3 or 4 (gray, RGB, RGBA) is one image, any other 3-D array ``(N, H, W)`` a stack of N (so a channel-first
    ``(3, H, W)`` tensor is three gray images: give it as ``(1, 3, H, W)``), a 4-D ``(N, H, W, C)`` or
    channel-first ``(N, C, H, W)`` (torch's and MONAI's batches) a stack of N, a ``PIL.Image`` one image, and a
    list or tuple holds one image per entry."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if type(images).__module__.startswith("PIL."):
        return [images]
    a = images.detach().cpu().numpy() if type(images).__module__.startswith("torch") else np.asarray(images)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in _CHANNELS):
        return [a]
    if a.ndim == 4 and a.shape[1] in _CHANNELS and a.shape[3] not in _CHANNELS:
        a = np.moveaxis(a, 1, 3)  # (N, C, H, W) -> (N, H, W, C)
    if a.ndim in (3, 4):
        return list(a)
    raise InputError(f"expected an image (H, W[, C]) or a stack (N, H, W[, C]) or (N, C, H, W), got an array of "
                     f"shape {a.shape}")


def is_in_memory(images) -> bool:
    """Whether ``images`` are images in memory (arrays, tensors, PIL images) rather than file sources."""
    first = images[0] if isinstance(images, (list, tuple)) and images else images
    return isinstance(first, np.ndarray) or type(first).__module__.startswith(("PIL.", "torch"))


@torch.inference_mode()
def score_arrays(
    model: torch.nn.Module,
    images,
    *,
    size: tuple[int, int] | None = None,
    batch_size: int = 32,
    device="auto",
    crop: Crop | None = None,
    amp: bool | str = True,
) -> np.ndarray:
    """Scores ``(N,)`` float64 of images in memory, in order (:func:`as_image_list` says what is one image).

    Each image is converted as a file of the same pixels is decoded (:func:`crl_uiqa.io.gray_array`), cropped
    to ``crop`` and resized to the model's size as :func:`score_paths` does, so an array scores as its file.
    An image that cannot be converted raises :class:`crl_uiqa.io.ImageReadError` naming its index.
    """
    from .devices import autocast, autocast_enabled

    dev = resolve_device(device)
    model = prepare_model(model, dev)
    size = tuple(size or model.config.image_size)
    amp = autocast_enabled(amp, dev)
    items = as_image_list(images)
    out = []
    for start in range(0, len(items), batch_size):
        batch = []
        for i, image in enumerate(items[start:start + batch_size], start):
            what = f"image {i}"
            g = gray_array(image, what)
            batch.append(model_tensor(apply_crop(g, crop, what) if crop is not None else g, size, what))
        with autocast(dev, amp):
            out.append(score_tensor(model, torch.stack(batch).to(dev)).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0, dtype=np.float64)
