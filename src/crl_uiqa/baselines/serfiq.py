"""SER-FIQ: quality from the robustness of stochastic embeddings (Terhoerst et al., CVPR 2020).

SER-FIQ passes an image ``T`` times through the last layers of the embedding
network with dropout active and measures how much the embeddings move:

    q(x) = 2 / (1 + exp(mean_{i<j} || e_i / |e_i| - e_j / |e_j| ||_2))

over the ``T (T - 1) / 2`` pairs of L2-normalised stochastic embeddings
``e_1..e_T`` (the original's ``2 * sigmoid(-mean distance)``). Identical
embeddings give 1; as the mean distance grows towards its maximum 2, q falls
towards ``2 / (1 + e^2) ~ 0.238``. Higher = better, as everywhere here. (The
reference code offers an extra monotonic rescaling ``1 / (1 + exp(-a (q - r)))``
that changes no ranking, so it is not applied.)

For SonoNet-16, which has no dropout layer of its own:

* the deterministic trunk (conv blocks 1-5) runs **once** per image;
* each of the ``T`` stochastic passes applies element-wise dropout
  (rate 0.5, the rate of the original's dropout layers, with the usual
  ``1 / (1 - p)`` rescaling) to the block5 feature map, then the first
  adaptation layer (1x1 conv to 64 channels, batch norm, ReLU), then dropout
  again on that 64-channel activation, then global average pooling;
* the embedding is this pooled 64-d adaptation activation, the network's
  pre-logit layer (``embedding="adaptation"``, default), the counterpart of
  the face network's embedding layer. ``embedding="block5"`` instead uses the
  pooled dropped-out block5 map (128-d; only the first dropout acts);
* the ``T`` passes of an image run as one batch. In multiply-adds a head
  pass is about 0.17 % of a full forward pass at 224x288 (a 1x1 conv on the
  14x18 map against 13 3x3 conv layers), so T = 100 costs about 1.2 full
  forward passes per image instead of 100; measured on one CPU thread it is
  1.3-1.8 (the masked copies are memory-bound; ``benchmarks/baselines_speed.py``).

Repeatability: the ``T`` dropout masks are drawn once from a
``torch.Generator`` seeded with ``seed`` and shared by every image ("common
random numbers"): a score depends only on the image and the seed, not on the
batch or the order, and two images are compared under the same random draws.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import validate
from ..errors import ConfigError, ImageError, InputError
from ._network import check_array_images, check_size, load_sononet

__all__ = ["serfiq_quality", "dropout_masks", "stochastic_embeddings", "serfiq_score"]

_EMBEDDINGS = ("adaptation", "block5")


def serfiq_quality(embeddings) -> np.ndarray | float:
    """SER-FIQ quality from stochastic embeddings.

    Parameters
    ----------
    embeddings : array-like or torch.Tensor
        ``(T, D)`` embeddings of one image or ``(N, T, D)`` of N images, T >= 2.
        They are L2-normalised here (an all-zero embedding stays zero).

    Returns
    -------
    float or numpy.ndarray
        ``2 / (1 + exp(mean pairwise Euclidean distance))``: a float for
        ``(T, D)`` input, a float64 array (N,) for ``(N, T, D)``.

    Raises
    ------
    crl_uiqa.errors.InputError
        Wrong number of dimensions, T < 2, D = 0, or NaN/inf values.
    """
    import torch

    if isinstance(embeddings, torch.Tensor):
        e = embeddings.detach()
        if e.is_complex() or e.dtype == torch.bool:
            raise InputError(f"embeddings must be real numbers, got dtype {e.dtype}")
    else:
        arr = np.asarray(embeddings)
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise InputError(f"embeddings must be real numbers, got dtype {arr.dtype}")
        e = torch.as_tensor(arr)
    single = e.ndim == 2
    if single:
        e = e[None]
    if e.ndim != 3:
        raise InputError(f"embeddings must have shape (T, D) or (N, T, D), got {tuple(e.shape)}")
    if e.shape[1] < 2:
        raise InputError(f"SER-FIQ needs at least 2 stochastic embeddings per image, got T={e.shape[1]}")
    if e.shape[2] == 0:
        raise InputError("embeddings have dimension 0")
    e = e.to(torch.float64)
    if not torch.isfinite(e).all():
        raise InputError("embeddings contain NaN or inf")
    e = torch.nn.functional.normalize(e, dim=2)
    d = torch.cdist(e, e, compute_mode="donot_use_mm_for_euclid_dist")  # (N, T, T)
    t = e.shape[1]
    iu = torch.triu_indices(t, t, offset=1)
    mean_d = d[:, iu[0], iu[1]].mean(dim=1)
    q = (2.0 / (1.0 + torch.exp(mean_d))).numpy()
    return float(q[0]) if single else q


def dropout_masks(passes: int, shape: tuple[int, ...], rate: float, generator) -> object:
    """``passes`` scaled Bernoulli keep-masks of ``shape``: 0 with probability ``rate``, else ``1 / (1 - rate)``."""
    import torch

    keep = torch.rand((passes, *shape), generator=generator) >= rate
    return keep.to(torch.float32) / (1.0 - rate)


def stochastic_embeddings(model, fmap, mask_block5, mask_adapt=None, embedding: str = "adaptation"):
    """The T stochastic embeddings of each image from its block5 feature map.

    Parameters
    ----------
    model : SonoNet
        Supplies ``adaptation[0]`` (1x1 conv -> 64, batch norm, ReLU).
    fmap : torch.Tensor
        ``(B, C, h, w)`` block5 feature maps (computed once per image).
    mask_block5 : torch.Tensor
        ``(T, C, h, w)`` scaled dropout masks for the feature map.
    mask_adapt : torch.Tensor, optional
        ``(T, 64, h, w)`` masks for the adaptation activation (``embedding="adaptation"``).
    embedding : {"adaptation", "block5"}
        Which pooled layer is the embedding.

    Returns
    -------
    torch.Tensor
        ``(B, T, D)`` with D = 64 (adaptation) or C (block5).
    """
    b, t = fmap.shape[0], mask_block5.shape[0]
    z = (fmap[:, None] * mask_block5[None]).flatten(0, 1)  # (B*T, C, h, w)
    if embedding == "block5":
        e = z.mean(dim=(2, 3))
    else:
        a = model.adaptation[0](z)
        a = (a.unflatten(0, (b, t)) * mask_adapt[None]).flatten(0, 1)
        e = a.mean(dim=(2, 3))
    return e.unflatten(0, (b, t))


#: most bytes the dropout masks of all passes may take: they are made up front, one per pass and dropout site, and
#: the passes of an image run as one batch (passes below 2**31 took terabytes: a torch RuntimeError, an internal
#: error, once the first images were read)
MAX_MASK_BYTES = 2**31


def _check_mask_memory(passes: int, size: tuple[int, int]) -> None:
    """Refuse ``passes`` whose dropout masks (float32, SonoNet-16's 128 block5 + 64 adaptation maps of a sixteenth
    of ``size`` a pass) would take more than :data:`MAX_MASK_BYTES`."""
    per_pass = 4 * (128 + 64) * (size[0] // 16) * (size[1] // 16)
    if passes * per_pass > MAX_MASK_BYTES:
        raise ConfigError(f"passes must be <= {MAX_MASK_BYTES // per_pass} at size {size[0]}x{size[1]} (the dropout "
                          f"masks, made up front, would take {passes * per_pass / 2**30:.3g} GiB; at most 2 GiB), "
                          f"got {passes}")


def serfiq_score(
    images: Sequence[np.ndarray],
    weights=None,
    device: str | None = None,
    passes: int = 100,
    dropout: float = 0.5,
    embedding: str = "adaptation",
    seed: int = 0,
    batch_size: int = 16,
    size: tuple[int, int] = (224, 288),
    progress: bool = False,
) -> np.ndarray:
    """SER-FIQ quality of each image with SonoNet-16 (higher = better).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Grayscale (H, W) images in [0, 1].
    weights : str, path or torch.nn.Module, optional
        SonoNet-16 weight file (default: the published weights, see
        :mod:`crl_uiqa.weights`) or an already built SonoNet.
    device : str, optional
        Torch device (default: CUDA when available, else CPU).
    passes : int
        Number T of stochastic passes (original: 100), at least 2.
    dropout : float
        Dropout rate in [0, 1) of both dropout sites (original: 0.5). 0 makes
        every pass identical and every score 1.
    embedding : {"adaptation", "block5"}
        Pooled 64-d adaptation activation (default) or pooled 128-d block5 map.
    seed : int
        Seed of the dropout masks (shared by all images).
    batch_size : int
        Images per trunk pass.
    size : (int, int)
        Network input (height, width); images are resized to it (antialiased bilinear).
    progress : bool
        Show a progress bar.

    Returns
    -------
    numpy.ndarray
        (N,) float64 qualities in (0.238, 1].

    Raises
    ------
    crl_uiqa.errors.InputError
        Bad images (the message names ``images[i]``).
    crl_uiqa.errors.ImageError
        An image whose network output is NaN or infinite.
    crl_uiqa.errors.ConfigError
        Bad parameters (``passes``, ``dropout``, ``embedding``, ``seed``,
        ``batch_size``, ``size``).
    FileNotFoundError
        SonoNet weights not found.
    """
    import torch

    from ..progress import progress as _progress
    from ._network import iter_tensor_batches

    imgs = check_array_images(images)
    # at least 2: SER-FIQ compares stochastic passes; at most what the dropout masks may take (_check_mask_memory,
    # always below validate.MAX_COUNT, with a message that says why)
    passes = validate.integer("passes (SER-FIQ compares stochastic passes)", passes, minimum=2)
    dropout = validate.real("dropout", dropout, minimum=0, maximum=1, strict_max=True)
    if embedding not in _EMBEDDINGS:
        raise ConfigError(f"embedding must be one of {', '.join(_EMBEDDINGS)}, got {embedding!r}")
    seed = validate.integer("seed", seed)
    batch_size = validate.integer("batch_size", batch_size, minimum=1, maximum=validate.MAX_BATCH)
    size = check_size(size)
    _check_mask_memory(passes, size)
    model, dev = load_sononet(weights, device)

    masks = None
    head_chunk = max(1, 512 // passes)  # images per head batch: B * T <= 512 maps in memory
    out = np.empty(len(imgs), dtype=np.float64)
    with torch.inference_mode(), _progress(total=len(imgs), desc="SER-FIQ", unit="img",
                                           enabled=bool(progress)) as bar:
        for start, x in iter_tensor_batches(imgs, size, batch_size, dev):
            fmap = model.feature_maps(x)  # deterministic part, once per image
            if masks is None:
                g = torch.Generator().manual_seed(int(seed))
                c, h, w = fmap.shape[1:]
                m1 = dropout_masks(passes, (c, h, w), float(dropout), g).to(dev)
                m2 = dropout_masks(passes, (model.adaptation[0][0].out_channels, h, w), float(dropout), g).to(dev)
                masks = (m1, m2)
            for i in range(0, fmap.shape[0], head_chunk):
                e = stochastic_embeddings(model, fmap[i : i + head_chunk], masks[0], masks[1], embedding)
                if not torch.isfinite(e).all():
                    raise ImageError(f"images[{start + i}]: the network output is NaN or infinite")
                out[start + i : start + i + e.shape[0]] = serfiq_quality(e.double().cpu())
            bar.update(x.shape[0])
    return out
