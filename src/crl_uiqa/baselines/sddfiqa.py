"""SDD-FIQA: quality from similarity distribution distance (Ou et al., CVPR 2021), and SDD-FIQA*.

A good sample is similar to the samples of its own class and dissimilar to
those of other classes. For each image x_i (following the reference code,
Tencent/TFace ``quality/generate_pseudo_labels``):

1. positives: up to ``n_pairs`` (24) other images of the same class, drawn
   without replacement (all of them when the class has fewer); negatives:
   up to ``n_pairs`` images of other classes, likewise;
2. the cosine similarities of x_i's embedding to the positives (S^P) and to
   the negatives (S^N);
3. ``WD(S^P, S^N)``, the 1-D Wasserstein distance of the two empirical
   distributions (:func:`scipy.stats.wasserstein_distance`);
4. the distances of all images are min-max scaled within the repetition;
   steps 1-4 are repeated ``repetitions`` (12) times with fresh draws and the
   scaled distances averaged;
5. the average is min-max scaled to [0, 1] over the set (1 = best).

Choices for ultrasound, documented:

* **classes** stand for the face identities of the original: plane types by
  default, predicted by SonoNet-16 (argmax of its 14 class probabilities), or
  any labels given (a manifest ``label`` column: plane types, or subject /
  video ids, the closer analogue of identities for single-plane data sets);
* **embeddings**: SonoNet-16's pooled block5 map (128-d), the layer the
  pseudo-labels of :mod:`crl_uiqa.pseudo_labels` use by default;
* the distance is **unsigned**, as in the reference code (``signed=True``
  gives it the sign of ``mean(S^P) - mean(S^N)``, so an image closer to other
  classes than to its own scores below one that separates them);
* negatives are needed: a set with a single class raises ``InputError``
  (there is no honest fallback: the references are positives, not
  negatives). An image that is alone in its class has no positives (the
  reference code asserts this never happens); it gets the lowest score, 0,
  with a warning;
* sampling uses ``numpy.random.default_rng(seed)``, so results repeat for a
  seed and a given image order. When every class is small enough that all
  pairs are used, the repetitions are identical and computed once.

**SDD-FIQA\\*** (the paper's Table 2): the same SDD-FIQA scores of the
*training* images used as pseudo-labels in our co-learning framework (same
model, views and losses; only the labels differ): :func:`sddfiqa_star`.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from .. import validate
from ..errors import InputError
from ._network import (
    check_array_images,
    check_size,
    load_sononet,
    sononet_features,
    sononet_outputs,
)

log = logging.getLogger(__name__)

__all__ = [
    "wasserstein_quality",
    "cosine_similarity_rows",
    "sddfiqa_from_embeddings",
    "sddfiqa_score",
    "sddfiqa_files",
    "sddfiqa_star",
]


def wasserstein_quality(positive, negative, signed: bool = False) -> float:
    """Wasserstein distance between positive and negative similarity samples.

    Parameters
    ----------
    positive, negative : array-like
        1-D similarity samples (each non-empty, finite).
    signed : bool
        Multiply by the sign of ``mean(positive) - mean(negative)``.

    Returns
    -------
    float
        ``scipy.stats.wasserstein_distance(positive, negative)`` (signed if asked).
    """
    from scipy.stats import wasserstein_distance

    p = np.asarray(positive, dtype=np.float64).ravel()
    n = np.asarray(negative, dtype=np.float64).ravel()
    if p.size == 0 or n.size == 0:
        raise InputError("both the positive and the negative similarity samples must be non-empty")
    if not (np.isfinite(p).all() and np.isfinite(n).all()):
        raise InputError("similarities contain NaN or inf")
    wd = float(wasserstein_distance(p, n))
    if signed and p.mean() < n.mean():
        wd = -wd
    return wd


def cosine_similarity_rows(embeddings: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """Cosine similarities of ``embeddings[rows]`` to every embedding (float64)."""
    e = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    e = e / np.where(norms > 0, norms, 1.0)
    return e[rows] @ e.T


def _check_labels(labels, n: int) -> np.ndarray:
    if labels is None:
        raise InputError("labels are required")
    if isinstance(labels, (str, bytes)):
        raise InputError("labels must be a sequence with one label per image, not a string")
    try:
        lab = list(labels)
    except TypeError:  # a number, not a sequence
        raise InputError(f"labels must be a sequence with one label per image, got {labels!r}") from None
    if len(lab) != n:
        raise InputError(f"{len(lab)} labels for {n} images")
    for i, v in enumerate(lab):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise InputError(f"labels[{i}] is empty")
        if isinstance(v, float) and not np.isfinite(v):
            raise InputError(f"labels[{i}] is {v}")
    _, codes = np.unique(np.asarray([str(v).strip() for v in lab], dtype=object), return_inverse=True)
    return codes.ravel()


def _minmax_or_constant(v: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(v)), float(np.max(v))
    return np.zeros_like(v) if hi == lo else (v - lo) / (hi - lo)


def sddfiqa_from_embeddings(
    embeddings,
    labels: Sequence,
    *,
    n_pairs: int = 24,
    repetitions: int = 12,
    seed: int = 0,
    signed: bool = False,
    chunk_size: int = 1024,
) -> np.ndarray:
    """SDD-FIQA scores in [0, 1] of embedded samples with class labels (see the module docstring).

    Parameters
    ----------
    embeddings : array-like
        (N, D) embeddings, N >= 2, finite.
    labels : sequence
        One class label per sample (anything with a string form); at least two classes.
    n_pairs : int
        Positive and negative pairs drawn per sample and repetition (original: 24).
    repetitions : int
        Independent draws averaged (original: 12).
    seed : int
        Seed of :func:`numpy.random.default_rng`.
    signed : bool
        Signed Wasserstein distance (see :func:`wasserstein_quality`).
    chunk_size : int
        Rows of the similarity matrix held in memory at once.

    Returns
    -------
    numpy.ndarray
        (N,) float64 scores in [0, 1], higher = better; 0 for samples alone in their class.

    Raises
    ------
    crl_uiqa.errors.InputError
        Bad shapes, NaN/inf, bad labels or a label count mismatch, a single class, or every class a singleton.
    crl_uiqa.errors.ConfigError
        ``n_pairs``, ``repetitions`` or ``chunk_size`` not a positive integer, ``seed`` not an integer.
    """
    from scipy.stats import wasserstein_distance

    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2 or e.shape[1] < 1:
        raise InputError(f"embeddings must have shape (N >= 2, D >= 1), got {e.shape}")
    if not np.isfinite(e).all():
        raise InputError("embeddings contain NaN or inf")
    n_pairs = validate.integer("n_pairs", n_pairs, minimum=1)
    repetitions = validate.integer("repetitions", repetitions, minimum=1)
    chunk_size = validate.integer("chunk_size", chunk_size, minimum=1)
    seed = validate.integer("seed", seed)
    codes = _check_labels(labels, e.shape[0])
    n = e.shape[0]
    classes, counts = np.unique(codes, return_counts=True)
    if classes.size < 2:
        raise InputError(
            f"SDD-FIQA needs at least two classes (its negatives are samples of other classes), but all {n} "
            "images are in one class; give labels with several plane types or several subjects/videos "
            "(e.g. a manifest 'label' column holding the video id)"
        )
    members = {int(c): np.flatnonzero(codes == c) for c in classes}
    others = {int(c): np.flatnonzero(codes != c) for c in classes}
    singleton = counts[codes] == 1
    if singleton.all():
        raise InputError("every class has a single image: SDD-FIQA has no positive pairs to compare")
    if singleton.any():
        log.warning("SDD-FIQA: %d image(s) are alone in their class and get the lowest score", int(singleton.sum()))
    # when every sample uses all its pairs, every repetition draws the same pairs
    use_all = int(counts.max()) - 1 <= n_pairs and int(n - counts.min()) <= n_pairs
    reps = 1 if use_all else repetitions

    rng = np.random.default_rng(int(seed))
    wd = np.full((reps, n), np.nan)
    for start in range(0, n, chunk_size):
        sims = cosine_similarity_rows(e, slice(start, start + chunk_size))
        for j in range(sims.shape[0]):
            i = start + j
            if singleton[i]:
                continue
            c = int(codes[i])
            pos_pool = members[c][members[c] != i]
            neg_pool = others[c]
            kp, kn = min(n_pairs, pos_pool.size), min(n_pairs, neg_pool.size)
            for r in range(reps):
                pos = pos_pool if kp == pos_pool.size else rng.choice(pos_pool, kp, replace=False)
                neg = neg_pool if kn == neg_pool.size else rng.choice(neg_pool, kn, replace=False)
                sp, sn = sims[j, pos], sims[j, neg]
                d = float(wasserstein_distance(sp, sn))
                wd[r, i] = -d if signed and sp.mean() < sn.mean() else d
    ok = ~singleton
    scaled = np.vstack([_minmax_or_constant(row[ok]) for row in wd])  # per repetition, as the original
    mean = scaled.mean(axis=0)
    out = np.zeros(n, dtype=np.float64)
    if np.ptp(mean) == 0:
        log.warning("SDD-FIQA: all scores are equal")
        out[ok] = 0.5
    else:
        out[ok] = _minmax_or_constant(mean)
    return out


def sddfiqa_score(
    images: Sequence[np.ndarray],
    weights=None,
    device: str | None = None,
    labels: Sequence | None = None,
    n_pairs: int = 24,
    repetitions: int = 12,
    seed: int = 0,
    signed: bool = False,
    batch_size: int = 32,
    size: tuple[int, int] = (224, 288),
    progress: bool = False,
) -> np.ndarray:
    """SDD-FIQA quality of each image within the set, with SonoNet-16 embeddings (higher = better).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Grayscale (H, W) images in [0, 1]; at least 2, of at least 2 classes.
    weights : str, path or torch.nn.Module, optional
        SonoNet-16 weights (default: the published ones) or a built SonoNet.
    device : str, optional
        Torch device (default: CUDA when available, else CPU).
    labels : sequence, optional
        Class of each image (plane type, subject or video id...). Default: the
        plane SonoNet predicts (argmax of its probabilities).
    n_pairs, repetitions, seed, signed
        See :func:`sddfiqa_from_embeddings` (originals: 24, 12).
    batch_size : int
        Images per forward pass.
    size : (int, int)
        Network input (height, width).
    progress : bool
        Show a progress bar.

    Returns
    -------
    numpy.ndarray
        (N,) float64 scores in [0, 1], relative to this set.

    Raises
    ------
    crl_uiqa.errors.InputError
        Bad images or labels, fewer than 2 images, or a single class
        (negatives are needed).
    crl_uiqa.errors.ConfigError
        Bad options (``n_pairs``, ``repetitions``, ``batch_size``, ``seed``,
        ``size``...).
    crl_uiqa.errors.ImageError
        An image whose network output is NaN or infinite.
    """
    imgs = check_array_images(images)
    if len(imgs) < 2:
        raise InputError(f"SDD-FIQA compares images with each other: it needs at least 2 images, got {len(imgs)}")
    if labels is not None:
        _check_labels(labels, len(imgs))  # fail before running the network
    batch_size = validate.integer("batch_size", batch_size, minimum=1, maximum=validate.MAX_BATCH)
    model, dev = load_sononet(weights, device)
    feats = sononet_features(imgs, model, dev, size=check_size(size), batch_size=batch_size,
                             outputs=("block5",) if labels is not None else ("block5", "probs"),
                             progress="SDD-FIQA" if progress else False)
    return _score_features(feats, labels, tuple(getattr(model, "class_names", ())), n_pairs=n_pairs,
                           repetitions=repetitions, seed=seed, signed=signed)


def _score_features(feats: dict, labels, class_names: tuple, **kw) -> np.ndarray:
    if labels is None:
        pred = feats["probs"].argmax(axis=1)
        labels = [class_names[i] if i < len(class_names) else str(i) for i in pred]
        if len(set(labels)) < 2:
            raise InputError(
                f"SDD-FIQA needs at least two classes (its negatives are samples of other classes), but SonoNet "
                f"predicts the same plane ({labels[0]}) for all {len(labels)} images; give labels (plane types "
                "or subject/video ids, e.g. a manifest 'label' column)"
            )
    return sddfiqa_from_embeddings(feats["block5"], labels, **kw)


def sddfiqa_files(
    images,
    *,
    labels: Sequence | None = None,
    weights=None,
    device="auto",
    crop=None,
    n_pairs: int = 24,
    repetitions: int = 12,
    seed: int = 0,
    signed: bool = False,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool = True,
) -> tuple[list[str], np.ndarray, list[str]]:
    """SDD-FIQA scores of image files (decoded in background workers).

    Parameters
    ----------
    images : str, path or list
        Folder(s), glob(s) or manifest CSV(s) (:func:`crl_uiqa.io.list_images`).
        A single manifest with a non-empty ``label`` column supplies the
        labels when ``labels`` is None.
    labels : sequence, optional
        One label per listed file; default: the manifest's, else SonoNet's predicted planes.
    weights, device, crop, n_pairs, repetitions, seed, signed, batch_size, num_workers, progress
        As in :func:`sddfiqa_score` and :func:`crl_uiqa.io.iter_batches`.

    Returns
    -------
    (paths, scores, labels)
        The readable files (in order), their scores in [0, 1] and the labels used.
    """
    import torch

    from ..io import iter_batches, list_images

    paths = list_images(images)
    if len(paths) < 2:
        raise InputError(f"SDD-FIQA needs at least 2 images, found {len(paths)}")
    if labels is None:
        labels = manifest_labels(images)
    if labels is not None:
        labels = list(labels)
        _check_labels(labels, len(paths))
    model, dev = load_sononet(weights, device)
    size = tuple(getattr(model, "input_size", (224, 288)))
    block5, probs, kept, failures = [], [], [], []
    with torch.inference_mode():
        for b in iter_batches(paths, size=size, batch_size=batch_size, crop=crop, num_workers=num_workers,
                              failures=failures, progress="SDD-FIQA embeddings" if progress else False):
            o = sononet_outputs(model, b.images.to(dev))
            block5.append(o["block5"])
            probs.append(o["probs"])
            kept.extend(b.indices)
    if not kept:
        raise InputError(f"none of the {len(paths)} images could be read")
    feats = {"block5": torch.cat(block5).numpy(), "probs": torch.cat(probs).numpy()}
    names = tuple(getattr(model, "class_names", ()))
    if labels is None:
        used = [names[i] for i in feats["probs"].argmax(axis=1)]
    else:
        used = [str(labels[i]).strip() for i in kept]
    scores = _score_features(feats, used if labels is not None else None, names, n_pairs=n_pairs,
                             repetitions=repetitions, seed=seed, signed=signed)
    return [paths[i] for i in kept], scores, used


def manifest_labels(images) -> list[str] | None:
    """The ``label`` column of ``images`` when it is one manifest CSV whose labels are all non-empty, else None."""
    from pathlib import Path

    from ..io import read_manifest

    src = images[0] if isinstance(images, (list, tuple)) and len(images) == 1 else images
    if isinstance(src, (list, tuple)) or Path(str(src)).suffix.lower() != ".csv" or not Path(str(src)).is_file():
        return None
    lab = read_manifest(src).labels
    if lab and all(v.strip() for v in lab):
        return list(lab)
    return None


def _learning_the_labels(train_config, model_config):
    """The settings of SDD-FIQA*: a head that learns the SDD-FIQA labels.

    The anchored head (the project's default) learns from its references' distance score and would ignore
    them, so an anchored ``model_config`` becomes the paper's head with the paper's training settings (the
    paper's Table 2 trains its own model on SDD-FIQA's labels); image size, backbone and seed are kept.
    """
    from dataclasses import replace

    from ..model import ModelConfig
    from ..training import TrainConfig, settings

    if model_config is None or model_config.head != "anchored":
        return train_config, model_config
    t_over, m_over = settings(paper=True)
    log.info("SDD-FIQA*: the anchored head learns from the references' distance score, not from labels: training "
             "the paper's head with the paper's settings on the SDD-FIQA labels")
    mc = ModelConfig(backbone=model_config.backbone, image_size=model_config.image_size,
                     activation=model_config.activation, **m_over)
    tc = replace(train_config if train_config is not None else TrainConfig(), **t_over)
    return tc, mc


def sddfiqa_star(
    train_images,
    *,
    labels: Sequence | None = None,
    weights=None,
    train_config=None,
    model_config=None,
    run_dir=None,
    device="auto",
    crop=None,
    smoothing: bool = False,
    n_pairs: int = 24,
    repetitions: int = 12,
    seed: int = 0,
    num_workers: int | None = None,
    progress: bool = True,
):
    """SDD-FIQA*: train the CRL-UIQA model on SDD-FIQA pseudo-labels (paper Table 2).

    The SDD-FIQA scores of the training images (:func:`sddfiqa_files`, in
    [0, 1], 1 = best) replace the distance-based pseudo-labels; everything else
    (model, weak and strong views, losses, optimiser) is
    :func:`crl_uiqa.training.train` with ``train_config``/``model_config``.

    Parameters
    ----------
    train_images : str, path or list
        Training images (folders, globs, manifests); a manifest's ``label``
        column gives the SDD-FIQA classes, else SonoNet's predicted planes do.
    labels : sequence, optional
        One class label per training file (overrides the manifest).
    weights : str or path, optional
        SonoNet-16 weights, for the SDD-FIQA embeddings and the model's trunk.
    train_config : crl_uiqa.training.TrainConfig, optional
    model_config : crl_uiqa.model.ModelConfig, optional
    run_dir : str or path, optional
        Run folder (checkpoints, history, ``model.*``); it also receives
        ``sddfiqa_labels.csv`` (path, class, label).
    device, crop, num_workers, progress
        As for :func:`crl_uiqa.training.train`.
    smoothing : bool
        Apply the paper's Yeo-Johnson smoothing (Eq. 2-3) to the SDD-FIQA
        scores too (default False: the SDD-FIQA labels as they are).
    n_pairs, repetitions, seed
        SDD-FIQA sampling (originals 24, 12).

    Returns
    -------
    crl_uiqa.training.TrainResult
        ``.model`` is the trained quality model (higher = better).
    """
    from pathlib import Path

    from ..files import write_csv
    from ..pseudo_labels import minmax, yeo_johnson
    from ..training import train

    paths, scores, used = sddfiqa_files(train_images, labels=labels, weights=weights, device=device, crop=crop,
                                        n_pairs=n_pairs, repetitions=repetitions, seed=seed,
                                        num_workers=num_workers, progress=progress)
    q = minmax(yeo_johnson(scores)[0]) if smoothing else scores
    if run_dir is not None:
        write_csv(Path(run_dir) / "sddfiqa_labels.csv",
                  [{"path": p, "class": c, "sdd_fiqa": float(s), "label": float(v)}
                   for p, c, s, v in zip(paths, used, scores, q)], ["path", "class", "sdd_fiqa", "label"])
    meta = {"pseudo_labels": {"method": "sdd-fiqa", "n_pairs": n_pairs, "repetitions": repetitions, "seed": seed,
                              "smoothing": smoothing, "classes": sorted(set(used))}}
    train_config, model_config = _learning_the_labels(train_config, model_config)
    return train(paths, q, config=train_config, model_config=model_config, weights=weights, run_dir=run_dir,
                 device=device, crop=crop, num_workers=num_workers, progress=progress, extra_meta=meta)
