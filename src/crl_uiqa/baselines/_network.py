"""Shared plumbing of the network-based baselines (SER-FIQ, SDD-FIQA, weighted score).

These baselines all run SonoNet-16 on in-memory images: validate the arrays,
resize them to the network's input size (antialiased bilinear, as
:func:`crl_uiqa.io.to_tensor` does for files, so scoring an array and scoring
the file it came from agree), batch them, and run the trunk once per image.
Error messages name inputs as ``images[i]`` so that callers holding the file
list can substitute the path (``crl-uiqa baseline`` and ``crl-uiqa compare`` do).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..errors import ConfigError, ImageError, InputError, ModelError

__all__ = ["check_array_images", "check_size", "load_sononet",
           "iter_tensor_batches", "sononet_outputs", "sononet_features"]

#: Tolerance on the [0, 1] value range (interpolation may overshoot slightly).
_RANGE_TOL = 1e-4


def check_array_images(images, what: str = "images") -> list[np.ndarray]:
    """Validate a sequence of grayscale (H, W) images in [0, 1] without copying them.

    The one image validator of every baseline (the NSS metrics use it as
    :func:`crl_uiqa.baselines._nss.check_images`).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Images of shape (H, W), values in [0, 1]. A single (H, W) array or an
        (N, H, W) stack is accepted too.
    what : str
        Name used in error messages (``"images"``, ``"references"``).

    Returns
    -------
    list of numpy.ndarray
        The images as arrays (views, not copies), in their own dtype (metrics
        convert them one at a time, so that a large set is not duplicated in float64).

    Raises
    ------
    crl_uiqa.errors.InputError (a ValueError)
        Not a sequence, empty sequence, non-2-D, empty, non-real, non-finite or out-of-range image.
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            images = [images]
        elif images.ndim == 3:
            images = list(images)
        else:
            raise InputError(f"{what}: expected a sequence of (H, W) images, got an array of shape {images.shape}")
    try:
        images = list(images)
    except TypeError:
        raise InputError(f"{what}: expected a sequence of (H, W) images, got {type(images).__name__}") from None
    if not images:
        raise InputError(f"{what}: the list of images is empty")
    out = []
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim != 2:
            raise InputError(f"{what}[{i}]: expected a grayscale (H, W) image, got shape {arr.shape} "
                             "(convert colour images to grayscale first)")
        if arr.size == 0:
            raise InputError(f"{what}[{i}]: empty image of shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise InputError(f"{what}[{i}]: expected a real-valued image, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{what}[{i}]: the image contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise InputError(f"{what}[{i}]: values must lie in [0, 1], got [{lo:g}, {hi:g}] (divide 8-bit images by 255)")
        out.append(arr)
    return out


def check_size(size) -> tuple[int, int]:
    """``(height, width)`` of the network input; at least 16 x 16 (SonoNet pools four times)."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be (height, width), got {size!r}") from None
    if h < 16 or w < 16:
        raise ConfigError(f"size must be at least 16x16 pixels (SonoNet halves it four times), got {size!r}")
    return h, w


def load_sononet(weights=None, device=None):
    """SonoNet-16 (eval mode) and the torch device; ``weights`` may also be a ready ``nn.Module``.

    ``weights`` None resolves the published weights (``$CRL_UIQA_WEIGHTS_DIR``,
    the user cache, a checksummed download); a missing file raises
    ``FileNotFoundError`` naming the places searched.
    """
    import torch

    from ..backbones import get_backbone
    from ..devices import prepare_model, resolve_device

    dev = resolve_device("auto" if device is None else device)
    if isinstance(weights, torch.nn.Module):
        model = weights
    else:
        model = get_backbone("sononet16", weights)
    for attr in ("feature_maps", "adaptation"):
        if not hasattr(model, attr):
            raise ModelError(f"the network must be a SonoNet (it lacks {attr!r})")
    return prepare_model(model, dev), dev  # eval, channels-last, batch norm folded (as every scoring network)


def iter_tensor_batches(images: Sequence[np.ndarray], size: tuple[int, int], batch_size: int,
                        device=None) -> Iterator[tuple[int, object]]:
    """Yield ``(start, tensor (B, 1, H, W))`` for consecutive batches of ``images`` at ``size``."""
    import torch

    from ..io import to_tensor

    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = torch.stack([to_tensor(np.asarray(img, dtype=np.float32), size) for img in chunk]).clamp_(0.0, 1.0)
        if device is not None:
            x = x.to(device)
        yield start, x


def sononet_outputs(model, x, outputs: tuple[str, ...] = ("block5", "probs")) -> dict:
    """Pooled block5 embeddings and/or class probabilities of one batch ``x`` (B, 1, H, W), one trunk pass.

    Returns ``{name: float64 CPU tensor (B, D)}`` for each name of ``outputs``
    (``block5``: global average of the last conv block, 128-d; ``probs``:
    softmax of the 14 plane logits). Call it under ``torch.inference_mode()``.
    """
    f = model.feature_maps(x)
    out = {}
    if "block5" in outputs:
        out["block5"] = f.mean(dim=(2, 3)).double().cpu()
    if "probs" in outputs:
        out["probs"] = model.adaptation(f).mean(dim=(2, 3)).softmax(dim=1).double().cpu()
    return out


def sononet_features(images: Sequence[np.ndarray], model, device, *, size: tuple[int, int], batch_size: int,
                     outputs: tuple[str, ...] = ("block5", "probs"), progress: bool | str = False) -> dict:
    """Pooled block5 embeddings and/or class probabilities of in-memory images, one trunk pass each.

    Returns ``{name: float64 array (N, D)}`` for each name of ``outputs``
    (see :func:`sononet_outputs`); a NaN or infinite output raises a
    :class:`crl_uiqa.errors.ImageError` naming ``images[i]``.
    """
    import torch

    from ..progress import progress as _progress

    chunks: dict[str, list] = {k: [] for k in outputs}
    with torch.inference_mode(), _progress(total=len(images), desc=progress if isinstance(progress, str) else "SonoNet",
                                           unit="img", enabled=bool(progress)) as bar:
        for _, x in iter_tensor_batches(images, size, batch_size, device):
            for k, v in sononet_outputs(model, x, outputs).items():
                chunks[k].append(v)
            bar.update(x.shape[0])
    out = {k: torch.cat(v).numpy() for k, v in chunks.items()}
    for k, v in out.items():
        bad = ~np.isfinite(v).all(axis=1)
        if bad.any():
            raise ImageError(f"images[{int(np.flatnonzero(bad)[0])}]: the network output ({k}) is NaN or infinite")
    return out
