"""Train a SonoNet-16 plane classifier on your own labelled planes.

The paper's P(.) is "a pre-trained US image classification model". Where the
published SonoNet weights are not available (offline, or another anatomy),
this trains one from scratch (or fine-tunes the published one) on images with
plane labels; the result is saved with :func:`~crl_uiqa.backbones.sononet.save_sononet`
and used anywhere a backbone is asked for with ``--weights FILE.safetensors``.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import InputError
from .sononet import SonoNet

log = logging.getLogger(__name__)


def train_plane_classifier(
    images: torch.Tensor,
    labels: Sequence[int],
    class_names: Sequence[str],
    *,
    epochs: int = 4,
    batch_size: int = 32,
    lr: float = 0.05,
    seed: int = 0,
    init: SonoNet | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> SonoNet:
    """Train SonoNet-16 (random init or ``init``) on images (N, 1, H, W) in [0, 1] with integer labels.

    SGD with momentum 0.9, cosine learning-rate decay, random horizontal flips.
    Returns the model in eval mode with ``class_names`` set.
    """
    from tqdm.auto import tqdm

    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if images.ndim != 4 or images.shape[0] != y.numel():
        raise InputError("images must be (N, 1, H, W) with one label each")
    if len(set(y.tolist())) < 2:
        raise InputError("a plane classifier needs at least two classes")
    if int(y.max()) >= len(class_names) or int(y.min()) < 0:
        raise InputError("labels must index class_names")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = init if init is not None else SonoNet(16, num_classes=len(class_names))
    model.class_names = tuple(class_names)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    steps = epochs * max(1, (len(y) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    bar = tqdm(total=steps, desc="training plane classifier", unit="batch", disable=not progress or None)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            x = images[idx].to(device)
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip.to(device).view(-1, 1, 1, 1), x.flip(-1), x)
            loss = F.cross_entropy(model(x), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()
