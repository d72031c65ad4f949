"""Weighted score: the paper's confidence-softened standard-plane score (Table 2).

Clinical standard-plane scoring adds up points for the key anatomical
structures (KASs) present in the image (Wu et al. 2017, Lin et al. 2019); the
paper softens this cumulative score by weighting with each structure's
detection confidence (Baum et al. 2021). Two versions are offered.

**Detector version** (:func:`detection_weighted_score`) for users with a
structure detector. Two CSV files:

* ``detections.csv`` with columns ``path,structure,confidence`` (one row per
  detection; several rows per image and per structure allowed; relative
  paths are relative to the CSV's folder; confidences in [0, 1]);
* ``weights.csv`` with columns ``structure,weight`` (the clinical points of
  each structure, >= 0, not all 0).

``score_i = sum_s w_s * c_is / sum_s w_s`` where ``c_is`` is the highest
confidence of structure s in image i and 0 when s was not detected.
Structures absent from ``weights.csv`` are ignored (with a warning).

**Plane-classifier version** (:func:`weighted_score` without detections), for
when no structure detector is at hand: SonoNet-16's probability that the
image shows the target standard plane, i.e. the confidence that the plane's
structures are all present. The target plane is ``plane`` when given (any
SonoNet class name, see :func:`crl_uiqa.classify.plane_index`); otherwise
the plane SonoNet predicts most often for the reference images, or for the
scored images when there are no references (ties: the first class in
SonoNet's order). With ``class_weights`` ({class name: weight}) the score is
the confidence-weighted sum ``sum_c w_c p_c / sum_c w_c`` over several classes
instead (e.g. to give partial credit to a neighbouring plane).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .. import validate
from ..errors import ConfigError, InputError
from ..tables import path_key
from ._network import check_array_images, check_size, load_sononet, sononet_features

log = logging.getLogger(__name__)

__all__ = [
    "class_weighted_score",
    "target_plane",
    "read_detections",
    "read_structure_weights",
    "detection_weighted_score",
    "weighted_score",
]


def _check_weight(value, what: str) -> float:
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: weight must be a number, got {value!r}") from None
    if not math.isfinite(w) or w < 0:
        raise ConfigError(f"{what}: weight must be finite and >= 0, got {value!r}")
    return w


def class_weighted_score(probs, class_weights: Mapping, class_names: Sequence[str] | None = None) -> np.ndarray:
    """Confidence-weighted plane score ``sum_c w_c p_c / sum_c w_c``.

    Parameters
    ----------
    probs : array-like
        (N, C) class probabilities.
    class_weights : mapping
        Class name (see :func:`crl_uiqa.classify.plane_index`) or index -> weight >= 0, not all 0.
    class_names : sequence of str, optional
        Names of the C classes (default: SonoNet's 14).

    Returns
    -------
    numpy.ndarray
        (N,) float64 scores in [0, 1] when ``probs`` are probabilities.
    """
    from ..classify import plane_index

    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise InputError(f"probs must have shape (N, C), got {p.shape}")
    if not np.isfinite(p).all():
        raise InputError("probs contain NaN or inf")
    if not isinstance(class_weights, Mapping) or not class_weights:
        raise ConfigError("class_weights must be a non-empty mapping {class name: weight}")
    w = np.zeros(p.shape[1])
    for key, value in class_weights.items():
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not 0 <= key < p.shape[1]:
                raise ConfigError(f"class_weights: class index {key} out of range 0..{p.shape[1] - 1}")
            idx = int(key)
        else:
            idx = plane_index(str(key), class_names)
        w[idx] += _check_weight(value, f"class_weights[{key!r}]")
    if w.sum() <= 0:
        raise ConfigError("class_weights: the weights sum to 0")
    return p @ w / w.sum()


def target_plane(probs) -> int:
    """Index of the most frequently predicted class (argmax) of ``probs`` (N, C); ties: lowest index."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise InputError(f"probs must have shape (N, C), got {p.shape}")
    return int(np.bincount(p.argmax(axis=1), minlength=p.shape[1]).argmax())


def read_detections(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read ``path,structure,confidence`` rows into {normalised image path: {structure: max confidence}}.

    Relative image paths are taken relative to the CSV's folder.
    """
    from ..files import read_csv

    rows = read_csv(path)
    if not rows:
        raise InputError(f"{path}: no detections (expected columns path,structure,confidence)")
    missing = {"path", "structure", "confidence"} - set(rows[0])
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))} (expected path,structure,confidence)")
    root = Path(path).parent
    out: dict[str, dict[str, float]] = {}
    for line, r in enumerate(rows, start=2):
        img, s = (r["path"] or "").strip(), (r["structure"] or "").strip()
        if not img or not s:
            raise InputError(f"{path}, line {line}: empty path or structure")
        try:
            c = float(r["confidence"])
        except (TypeError, ValueError):
            raise InputError(f"{path}, line {line}: confidence {r['confidence']!r} is not a number") from None
        if not 0.0 <= c <= 1.0:
            raise InputError(f"{path}, line {line}: confidence must lie in [0, 1], got {r['confidence']!r}")
        per = out.setdefault(path_key(img, root), {})
        per[s] = max(c, per.get(s, 0.0))
    return out


def read_structure_weights(path: str | os.PathLike) -> dict[str, float]:
    """Read ``structure,weight`` rows into {structure: weight} (weights >= 0, not all 0, no duplicates)."""
    from ..files import read_csv

    rows = read_csv(path)
    if not rows:
        raise InputError(f"{path}: no weights (expected columns structure,weight)")
    missing = {"structure", "weight"} - set(rows[0])
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))} (expected structure,weight)")
    out: dict[str, float] = {}
    for line, r in enumerate(rows, start=2):
        s = (r["structure"] or "").strip()
        if not s:
            raise InputError(f"{path}, line {line}: empty structure name")
        if s in out:
            raise InputError(f"{path}, line {line}: structure {s!r} is listed twice")
        out[s] = _check_weight(r["weight"], f"{path}, line {line}")
    if sum(out.values()) <= 0:
        raise InputError(f"{path}: the weights sum to 0")
    return out


def detection_weighted_score(
    paths: Sequence[str | os.PathLike],
    detections: str | os.PathLike | Mapping[str, Mapping[str, float]],
    structure_weights: str | os.PathLike | Mapping[str, float],
) -> np.ndarray:
    """Structure-confidence weighted score of image files (see the module docstring).

    Parameters
    ----------
    paths : sequence of path
        The images to score (relative paths: relative to the current folder).
    detections : path or mapping
        ``detections.csv`` (see :func:`read_detections`) or
        {image path: {structure: confidence}} (relative paths: relative to the current folder).
    structure_weights : path or mapping
        ``weights.csv`` (see :func:`read_structure_weights`) or {structure: weight}.

    Returns
    -------
    numpy.ndarray
        (N,) float64 scores in [0, 1].

    Raises
    ------
    crl_uiqa.errors.InputError
        Malformed files or mappings, or none of ``paths`` appearing in the
        detections (almost always a path mismatch).
    crl_uiqa.errors.ConfigError
        A structure weight that is not a finite number >= 0, or mapped
        ``structure_weights`` that are empty or sum to 0.
    """
    if isinstance(paths, (str, os.PathLike)):
        raise InputError("paths must be a sequence of image paths, not a single path")
    paths = list(paths)
    if not paths:
        raise InputError("paths: the list of images is empty")
    if isinstance(detections, Mapping):
        det = {}
        for img, per in detections.items():
            if not isinstance(per, Mapping):
                raise InputError(f"detections[{img!r}] must map structure -> confidence")
            clean = {}
            for s, c in per.items():
                c = float(c)
                if not 0.0 <= c <= 1.0:
                    raise InputError(f"detections[{img!r}][{s!r}]: confidence must lie in [0, 1], got {c}")
                clean[str(s).strip()] = c
            det[path_key(img)] = clean
        det_name = "the detections"
    else:
        det = read_detections(detections)
        det_name = str(detections)
    if isinstance(structure_weights, Mapping):
        if not structure_weights:
            raise ConfigError("structure_weights is empty")
        sw = {str(s).strip(): _check_weight(v, f"structure_weights[{s!r}]") for s, v in structure_weights.items()}
        if sum(sw.values()) <= 0:
            raise ConfigError("structure_weights: the weights sum to 0")
    else:
        sw = read_structure_weights(structure_weights)
    keys = [path_key(p) for p in paths]
    if det and not any(k in det for k in keys):
        raise InputError(f"none of the {len(keys)} images appears in {det_name} (first image: {keys[0]}; first "
                         f"listed: {next(iter(det))}); relative paths in a detections CSV are relative to its folder")
    unknown = sorted({s for per in det.values() for s in per} - set(sw))
    if unknown:
        log.warning("structures without a weight are ignored: %s", ", ".join(unknown))
    names = list(sw)
    w = np.array([sw[s] for s in names])
    conf = np.array([[det.get(k, {}).get(s, 0.0) for s in names] for k in keys], dtype=np.float64)
    return conf @ w / w.sum()


def weighted_score(
    images: Sequence[np.ndarray],
    weights=None,
    device: str | None = None,
    references: Sequence[np.ndarray] | None = None,
    plane: str | None = None,
    class_weights: Mapping | None = None,
    detections: str | os.PathLike | Mapping | None = None,
    structure_weights: str | os.PathLike | Mapping | None = None,
    paths: Sequence[str] | None = None,
    batch_size: int = 32,
    size: tuple[int, int] = (224, 288),
    progress: bool = False,
) -> np.ndarray:
    """Weighted standard-plane score of each image (higher = better).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Grayscale (H, W) images in [0, 1].
    weights : str, path or torch.nn.Module, optional
        SonoNet-16 weights (default: the published ones) or a built SonoNet.
    device : str, optional
        Torch device (default: CUDA when available, else CPU).
    references : sequence of numpy.ndarray, optional
        High-quality standard planes; their most frequent predicted plane is
        the target when ``plane`` is not given.
    plane : str, optional
        Target plane name (``4CH``, ``abdominal``, ...).
    class_weights : mapping, optional
        {class name: weight}: score = confidence-weighted sum over these classes.
    detections, structure_weights : path or mapping, optional
        Detector version (both needed, with ``paths``): see
        :func:`detection_weighted_score`. The network is not used then.
    paths : sequence of str, optional
        The files ``images`` came from, in the same order (detector version).
    batch_size : int
        Images per forward pass.
    size : (int, int)
        Network input (height, width).
    progress : bool
        Show a progress bar.

    Returns
    -------
    numpy.ndarray
        (N,) float64 scores in [0, 1].

    Raises
    ------
    crl_uiqa.errors.InputError
        Bad images, or ``paths`` not one per image.
    crl_uiqa.errors.ConfigError
        Bad or conflicting options, unknown plane names.
    """
    from ..classify import plane_index

    imgs = check_array_images(images)
    if detections is not None or structure_weights is not None:
        if detections is None or structure_weights is None:
            raise ConfigError("the detector version needs both detections (detections.csv) and structure_weights "
                             "(weights.csv)")
        if plane is not None or class_weights is not None:
            raise ConfigError("give either detections + structure_weights or plane/class_weights, not both")
        if paths is None:
            raise ConfigError("the detector version matches images by file: give paths= (the images' files, in "
                             "order; `crl-uiqa compare` does this)")
        if len(paths) != len(imgs):
            raise InputError(f"{len(paths)} paths for {len(imgs)} images")
        return detection_weighted_score(paths, detections, structure_weights)
    if plane is not None and class_weights is not None:
        raise ConfigError("give either plane or class_weights, not both")
    batch_size = validate.integer("batch_size", batch_size, minimum=1, maximum=validate.MAX_BATCH)
    size = check_size(size)
    model, dev = load_sononet(weights, device)
    names = tuple(getattr(model, "class_names", ()))
    if class_weights is not None:
        class_weighted_score(np.full((1, len(names)), 1.0 / len(names)), class_weights, names)  # validate early
    target = plane_index(plane, names) if plane is not None else None
    refs = check_array_images(references, "references") if references is not None else None
    if target is None and class_weights is None and refs is not None:
        rprobs = sononet_features(refs, model, dev, size=size, batch_size=batch_size, outputs=("probs",))["probs"]
        target = target_plane(rprobs)
    probs = sononet_features(imgs, model, dev, size=size, batch_size=batch_size, outputs=("probs",),
                             progress="weighted score" if progress else False)["probs"]
    if class_weights is not None:
        return class_weighted_score(probs, class_weights, names)
    if target is None:
        target = target_plane(probs)
    log.info("weighted score: target plane %s", names[target] if target < len(names) else target)
    return probs[:, target].copy()
