"""Quality pseudo-labels from distances to high-quality reference planes (paper Sec. 2.1).

* Eq. 1: ``D_i = {||P(x_i) - P(g_j)||_2, j = 1..n}``, Euclidean distances of
  each image embedding to the n reference embeddings;
* ``s_i = -mean(k smallest of D_i)``;
* Eq. 2: ``S_hat = YeoJohnson(S)`` with lambda fitted by maximum likelihood
  (:func:`scipy.stats.yeojohnson`), the "distribution smoothing";
* Eq. 3: ``q_i = (s_hat_i - min S_hat) / (max S_hat - min S_hat)``, so the best
  image gets 1 and the worst 0.

Distances are computed on the device in chunks of rows, so memory is
``O(chunk * n)`` beyond the embeddings themselves and time is linear in m.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from . import validate
from .errors import ConfigError, InputError


def _check_embeddings(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as a 2-D tensor of finite numbers (a tensor that requires grad is detached), else :class:`InputError`."""
    try:
        t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{name} must be a 2-D array of numbers (count, dim): {exc}") from None
    if t.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (count, dim), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise InputError(f"{name} is empty")
    # A finite sum proves every entry finite without the elementwise temporaries of
    # isfinite (about twice the array's size); only a non-finite sum needs the full check.
    if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
        raise InputError(f"{name} contain NaN or inf")
    return t


def topk_mean_distance(
    embeddings: np.ndarray | torch.Tensor,
    references: np.ndarray | torch.Tensor,
    k: int,
    *,
    chunk_size: int = 65536,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Mean of the ``k`` smallest Euclidean distances of each row to the references (Eq. 1).

    Returns float64 array (m,). Rows are processed ``chunk_size`` at a time on
    ``device``; distances are computed in float64 for exactness when either
    input is float64, else float32.
    """
    from .devices import resolve_device

    k = validate.integer(validate.flag("k"), k, minimum=1)
    chunk_size = validate.integer("chunk_size", chunk_size, minimum=1)
    device = resolve_device(device)
    x = _check_embeddings(embeddings, "image embeddings")
    r = _check_embeddings(references, "reference embeddings")
    n = r.shape[0]
    if x.shape[1] != r.shape[1]:
        raise InputError(f"embedding sizes differ: images {x.shape[1]}, references {r.shape[1]}")
    if k > n:
        raise ConfigError(f"k={k} (--k) is larger than the number of references n={n}")
    dtype = torch.float64 if torch.float64 in (x.dtype, r.dtype) else torch.float32  # as numpy would promote
    r = r.to(device=device, dtype=dtype)
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for start in range(0, x.shape[0], chunk_size):
        xc = x[start : start + chunk_size].to(device=device, dtype=dtype)
        d = torch.cdist(xc, r, compute_mode="donot_use_mm_for_euclid_dist")
        out[start : start + xc.shape[0]] = d.topk(k, dim=1, largest=False).values.mean(dim=1).double().cpu()
    return out.numpy()


def yeo_johnson(values: np.ndarray, lmbda: float | None = None) -> tuple[np.ndarray, float]:
    """Yeo-Johnson transform (Eq. 2); lambda by maximum likelihood when not given."""
    v = np.asarray(values, dtype=np.float64)
    if lmbda is None:
        out, lam = stats.yeojohnson(v)
        return np.asarray(out, dtype=np.float64), float(lam)
    return np.asarray(stats.yeojohnson(v, lmbda=lmbda), dtype=np.float64), float(lmbda)


def minmax(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Eq. 3: scale to [0, 1] by the min and max (of ``values`` unless given)."""
    v = np.asarray(values, dtype=np.float64)
    lo = float(v.min()) if lo is None else lo
    hi = float(v.max()) if hi is None else hi
    if not hi > lo:
        raise InputError("all pseudo-label scores are equal: the distances carry no quality information")
    return (v - lo) / (hi - lo)


@dataclass
class PseudoLabels:
    """The pseudo-labels of m images and every intermediate quantity."""

    distance: np.ndarray  # mean of the k smallest distances
    score: np.ndarray  # s_i = -distance
    smoothed: np.ndarray  # Yeo-Johnson(s) (or s when smoothing is off)
    label: np.ndarray  # q_i in [0, 1]
    lmbda: float | None  # fitted Yeo-Johnson lambda (None when smoothing is off)
    k: int


def pseudo_labels_from_distances(distance: np.ndarray, *, k: int, smoothing: bool = True) -> PseudoLabels:
    """Eq. 1 (sign) to Eq. 3 from per-image mean top-k distances."""
    k = validate.integer(validate.flag("k"), k, minimum=1)
    smoothing = validate.boolean("smoothing (--no-smoothing)", smoothing)
    d = np.asarray(distance, dtype=np.float64)
    if d.ndim != 1 or d.size < 2:
        raise InputError(f"pseudo-labels need at least 2 images, got {d.size}")
    if not np.isfinite(d).all():
        raise InputError("distances contain NaN or inf")
    if np.ptp(d) == 0:
        raise InputError("all distances to the references are equal: the pseudo-labels would be constant")
    s = -d
    if smoothing:
        s_hat, lam = yeo_johnson(s)
        if not np.isfinite(s_hat).all():
            raise InputError("the Yeo-Johnson transform produced NaN/inf; try --no-smoothing")
    else:
        s_hat, lam = s, None
    return PseudoLabels(d, s, s_hat, minmax(s_hat), lam, k)


def compute_pseudo_labels(
    embeddings: np.ndarray | torch.Tensor,
    references: np.ndarray | torch.Tensor,
    *,
    k: int = 5,
    smoothing: bool = True,
    chunk_size: int = 65536,
    device: str | torch.device = "cpu",
) -> PseudoLabels:
    """Pseudo-labels (Eq. 1-3) for image embeddings given reference embeddings.

    ``embeddings`` ``(m, dim)`` and ``references`` ``(n, dim)`` are numpy arrays, torch tensors or nested lists of
    numbers; bad shapes, empty or non-finite inputs raise :class:`crl_uiqa.errors.InputError`, bad settings
    :class:`crl_uiqa.errors.ConfigError` (both ``ValueError``).
    """
    smoothing = validate.boolean("smoothing (--no-smoothing)", smoothing)
    d = topk_mean_distance(embeddings, references, k, chunk_size=chunk_size, device=device)
    return pseudo_labels_from_distances(d, k=k, smoothing=smoothing)


@dataclass
class LabelledImages:
    """Pseudo-labels of image files (readable ones, input order) and the files skipped."""

    paths: list[str]
    labels: PseudoLabels
    layer: str
    backbone: str
    failures: list

    def rows(self) -> list[dict]:
        pl = self.labels
        return [
            {"path": p, "distance": float(pl.distance[i]), "score": float(pl.score[i]),
             "smoothed": float(pl.smoothed[i]), "pseudo_label": float(pl.label[i])}
            for i, p in enumerate(self.paths)
        ]

    def to_csv(self, path) -> object:
        """Write ``path,distance,score,smoothed,pseudo_label`` atomically."""
        from .files import write_csv

        return write_csv(path, self.rows(), ["path", "distance", "score", "smoothed", "pseudo_label"])


def _warn_references_among_images(img_paths, ref_paths, k: int) -> None:
    """Say when images to label are also references: each is at distance 0 from itself, one of its k nearest,
    so it gets a pseudo-label near the top whatever its quality (Eq. 1: the references are the standard)."""
    import logging

    from .tables import path_key

    refs = {path_key(p) for p in ref_paths}
    both = [p for p in img_paths if path_key(p) in refs]
    if both:
        logging.getLogger(__name__).warning(
            "%d of the %d images are also references (first: %s): each is among its own k=%d nearest references, "
            "at distance 0, so its pseudo-label is near the top by construction; leave the references out of "
            "--images to label them by the others", len(both), len(img_paths), both[0], k)


def label_images(
    images,
    references,
    *,
    k: int = 5,
    layer: str = "block4",
    backbone: str | torch.nn.Module = "sononet16",
    weights=None,
    smoothing: bool = True,
    size: tuple[int, int] | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = "auto",
    crop=None,
    reference_crop=None,
    strict: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> LabelledImages:
    """From image and reference sources (folders, globs, manifests) to pseudo-labels.

    ``images``/``references`` are anything :func:`crl_uiqa.io.list_images`
    accepts. Reference files that cannot be read are an error (a silently
    smaller reference set would change every label).
    """
    from .backbones import get_backbone
    from .embed import check_layer, compute_embeddings, resolve_device
    from .io import list_images, list_references

    validate.integer(validate.flag("k"), k, minimum=1)
    validate.integer(validate.flag("batch_size"), batch_size, minimum=1, maximum=validate.MAX_BATCH)
    dev = resolve_device(device)
    img_paths = list_images(images)
    ref_paths = list_references(references)
    if len(img_paths) < 2:
        raise InputError(f"pseudo-labels need at least 2 images, found {len(img_paths)}")
    if k > len(ref_paths):
        raise ConfigError(f"k={k} (--k) is larger than the number of references n={len(ref_paths)}")
    _warn_references_among_images(img_paths, ref_paths, k)
    name = backbone if isinstance(backbone, str) else type(backbone).__name__
    model = get_backbone(backbone, weights) if isinstance(backbone, str) else backbone
    check_layer(model, layer, name)
    common = dict(layer=layer, size=size, batch_size=batch_size, device=dev, num_workers=num_workers)
    refs = compute_embeddings(ref_paths, model, crop=reference_crop if reference_crop is not None else crop,
                              strict=True, progress="references" if progress else False, **common)
    embs = compute_embeddings(img_paths, model, crop=crop, strict=strict,
                              progress="images" if progress else False, **common)
    labels = compute_pseudo_labels(embs.vectors, refs.vectors, k=k, smoothing=smoothing, device=dev)
    return LabelledImages(embs.paths, labels, layer, name, embs.failures)
