"""Scoring image files with a trained quality model (higher = better)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .embed import prepare_model, resolve_device
from .io import Crop, ReadFailure, iter_batches


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
        raise ValueError(f"none of the {len(paths)} images could be read")
    return Scores([paths[i] for i in kept], torch.cat(out).numpy().astype(np.float64), failures)
