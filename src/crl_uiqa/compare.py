"""Table 2 on your data: every quality method scored on the same better/worse pairs.

:func:`compare_methods` scores the test images with each chosen method,
evaluates the scores on the pairs (the paper's pairwise accuracy T / (T + F),
with a bootstrap 95 % interval, overall and per pair type) and returns one
row per method, with the wall time it took. Methods:

=========== ====================================================================
crl-uiqa    a trained CRL-UIQA model (``model=``: a run directory)
distance    the untrained pseudo-label score ``s_i = -mean top-k distance`` to
            the references (paper Sec. 2.1; what the model learns from)
<baseline>  every method of :data:`crl_uiqa.baselines.BASELINES` (brisque,
            niqe, niqe-ref, mssim, serfiq, sddfiqa, weighted, ...)
sddfiqa*    SDD-FIQA*: our model trained on SDD-FIQA pseudo-labels of the
            training images (``train_images=``), see
            :func:`crl_uiqa.baselines.sddfiqa.sddfiqa_star`
=========== ====================================================================

A method that cannot run here (no model, no references, no training images,
a missing optional package or weight file) becomes a row with status
``skipped`` and the reason; one that fails on the data (e.g. SDD-FIQA on a
single class) a row with status ``failed``. Unreadable test images stop the
comparison (every method must see the same images).

Test images: those listed by ``images=`` (folder, glob or manifest CSV;
normally exactly the images of the pairs), else the images named in the pairs.
Set-level methods (sddfiqa, weighted without a plane) use this set as their
population; a manifest's ``label`` column gives SDD-FIQA its classes.

Caching: with ``out_dir``, each method's scores go to
``out_dir/scores_<method>.csv`` (``sddfiqa*`` -> ``scores_sddfiqa_star.csv``)
with a sidecar ``.json`` holding a hash of everything the scores depend on
(method, options, the image and reference files with their sizes and
modification times, model and weight files, crop, crl-uiqa version). A rerun
with the same hash reads the CSV instead of recomputing, and reports the wall
time of the run that computed it. ``use_cache=False`` recomputes.

Reported wall time covers the method's image decoding, model loading and
scoring (the classical baselines decode at native resolution, in chunks of
``chunk_size`` images; the SonoNet baselines decode straight to 224x288).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["BUILTIN_METHODS", "available_methods", "compare_methods", "format_table", "method_slug"]

#: methods that are not registry baselines
BUILTIN_METHODS = ("crl-uiqa", "distance", "sddfiqa*")
#: registry baselines computed per image (safe to run in chunks at native resolution)
_PER_IMAGE = frozenset({"brisque", "niqe", "niqe-ref", "mssim"})
#: registry baselines that resize to the SonoNet input themselves (decoded straight to that size)
_NETWORK = frozenset({"serfiq", "sddfiqa", "weighted"})
_NETWORK_SIZE = (224, 288)


class _Skip(Exception):
    """A method that cannot run with the inputs given (reported as skipped)."""


def available_methods() -> list[str]:
    """Every method name :func:`compare_methods` accepts, in table order."""
    from .baselines import BASELINES

    return ["crl-uiqa", "distance", *sorted(BASELINES), "sddfiqa*"]


def method_slug(method: str) -> str:
    """File-name-safe form of a method name (``sddfiqa*`` -> ``sddfiqa_star``)."""
    return re.sub(r"[^a-z0-9_.-]+", "_", method.lower().replace("*", "_star"))


def _parse_methods(methods) -> list[str]:
    valid = available_methods()
    if methods is None:
        return valid
    if isinstance(methods, str):
        methods = methods.split(",")
    out: list[str] = []
    for m in methods:
        key = str(m).strip().lower()
        if not key:
            continue
        if key not in valid:
            raise ValueError(f"unknown method {m!r}; valid methods: {', '.join(valid)}")
        if key not in out:
            out.append(key)
    if not out:
        raise ValueError(f"no method given; valid methods: {', '.join(valid)}")
    return out


# ----------------------------------------------------------------------------- files and hashing
def _norm(path, root=None) -> str:
    p = Path(str(path))
    if root is not None and not p.is_absolute():
        p = Path(root) / p
    return os.path.normpath(os.path.abspath(p))


def _file_sig(path) -> list:
    try:
        st = os.stat(path)
    except OSError:
        return [str(path), None, None]
    return [str(path), st.st_mtime_ns, st.st_size]


def _source_sig(source) -> list:
    """Signatures of the source files themselves (manifest CSVs) given as a source."""
    if source is None:
        return []
    items = source if isinstance(source, (list, tuple)) else [source]
    return [_file_sig(_norm(s)) for s in items if Path(str(s)).is_file()]


def _canonical(value):
    """JSON-able form of an option value; an existing file also contributes its size and mtime."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, os.PathLike)) and len(str(value)) < 4096 and Path(str(value)).is_file():
        return {"file": _file_sig(_norm(value))}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _hash(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _weights_sig(weights) -> list | None:
    """Signature of the SonoNet-16 weight file the SonoNet methods will use."""
    from .weights import resolve_weights

    try:
        return _file_sig(resolve_weights("SonoNet16.npz", weights, download=False))
    except (FileNotFoundError, OSError):
        return [str(weights), None, None]


def _read_cache(csv_path: Path, key: str, paths: list[str]) -> tuple[dict[str, float], dict] | None:
    from .files import read_csv

    meta_path = csv_path.with_suffix(".json")
    if not (csv_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None
        scores = {r["path"]: float(r["score"]) for r in read_csv(csv_path)}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if any(p not in scores for p in paths):
        return None
    return scores, meta


def _write_cache(csv_path: Path, key: str, method: str, scores: Mapping[str, float], seconds: float,
                 extra: dict) -> None:
    from .files import write_csv, write_json

    write_csv(csv_path, ({"path": p, "score": float(s)} for p, s in scores.items()), ["path", "score"])
    write_json(csv_path.with_suffix(".json"), {"key": key, "method": method, "seconds": seconds,
                                               "n": len(scores), **extra})


# ----------------------------------------------------------------------------- reading images
def _read_arrays(paths: Sequence[str], size, crop, num_workers, progress: bool | str) -> list[np.ndarray]:
    """Decode ``paths`` (all must be readable) to float32 (H, W) arrays, at ``size`` or native size."""
    from .io import iter_batches

    out: list[np.ndarray] = [None] * len(paths)  # type: ignore[list-item]
    for b in iter_batches(list(paths), size=size, batch_size=32 if size is not None else 1, crop=crop, strict=True,
                          num_workers=num_workers, progress=progress):
        for j, i in enumerate(b.indices):
            out[i] = b.images[j, 0].numpy()
    return out


def _name_files(message: str, images: Sequence[str], references: Sequence[str]) -> str:
    """Replace ``images[i]`` / ``references[i]`` in a baseline's error message by the file path."""

    def sub(m: re.Match) -> str:
        i = int(m.group(2))
        paths = images if m.group(1) == "images" else references
        return paths[i] if i < len(paths) else m.group(0)

    return re.sub(r"\b(images|references)\[(\d+)\]", sub, message)


# ----------------------------------------------------------------------------- the methods
def _run_registry(name: str, paths: list[str], ctx: dict, opts: dict) -> np.ndarray:
    from .baselines import get_spec, run_baseline

    spec = get_spec(name)
    refs = None
    if spec.references == "required" and ctx["ref_paths"] is None:
        raise _Skip("needs reference images (--references)")
    if spec.references != "none" and ctx["ref_paths"] is not None:
        refs = ctx["ref_arrays"](native=name not in _NETWORK)
    params = inspect.signature(spec.func).parameters
    opts = dict(opts)
    if "paths" in params and "paths" not in opts:
        opts["paths"] = paths
    if "labels" in params and "labels" not in opts and ctx["labels"] is not None:
        opts["labels"] = ctx["labels"]
    if "progress" in params and "progress" not in opts:
        opts["progress"] = ctx["progress"]
    weights = ctx["weights"] if spec.weights != "none" else None
    device = ctx["device"] if spec.device else None
    progress = f"reading images ({name})" if ctx["progress"] else False
    ref_paths = ctx["ref_paths"] or []

    def call(images, offset, o):
        try:
            return run_baseline(name, images, references=refs, weights=weights, device=device, **o)
        except ValueError as exc:
            raise ValueError(_name_files(str(exc), paths[offset: offset + len(images)], ref_paths)) from None

    if name in _NETWORK:
        size = opts.get("size", _NETWORK_SIZE)
        size = tuple(size) if isinstance(size, (list, tuple)) else _NETWORK_SIZE  # a bad size: the method says so
        return call(_read_arrays(paths, size, ctx["crop"], ctx["num_workers"], progress), 0, opts)
    if name in _PER_IMAGE:
        out = np.empty(len(paths))
        step = ctx["chunk_size"]
        for start in range(0, len(paths), step):
            chunk = paths[start: start + step]
            imgs = _read_arrays(chunk, None, ctx["crop"], ctx["num_workers"], progress)
            out[start: start + len(chunk)] = call(imgs, start, opts)
        return out
    return call(_read_arrays(paths, None, ctx["crop"], ctx["num_workers"], progress), 0, opts)


def _run_crl(paths: list[str], ctx: dict) -> np.ndarray:
    from .scoring import score_paths
    from .training import load_model

    if ctx["model"] is None:
        raise _Skip("needs a trained model (--model RUN_DIR)")
    model, _ = load_model(ctx["model"], device=ctx["dev"])
    res = score_paths(model, paths, device=ctx["dev"], crop=ctx["crop"], strict=True, num_workers=ctx["num_workers"],
                      progress="crl-uiqa" if ctx["progress"] else False)
    return res.scores


def _run_distance(paths: list[str], ctx: dict) -> np.ndarray:
    from .backbones import get_backbone
    from .embed import compute_embeddings
    from .pseudo_labels import topk_mean_distance

    if ctx["ref_paths"] is None:
        raise _Skip("needs reference images (--references)")
    net = get_backbone(ctx["backbone"], ctx["weights"])
    common = dict(layer=ctx["layer"], device=ctx["dev"], num_workers=ctx["num_workers"], strict=True)
    refs = compute_embeddings(ctx["ref_paths"], net, crop=ctx["reference_crop"],
                              progress="references" if ctx["progress"] else False, **common)
    embs = compute_embeddings(paths, net, crop=ctx["crop"], progress="distance" if ctx["progress"] else False,
                              **common)
    return -topk_mean_distance(embs.vectors, refs.vectors, ctx["k"], device=ctx["dev"])


def _run_sddfiqa_star(paths: list[str], ctx: dict, opts: dict) -> np.ndarray:
    from .baselines.sddfiqa import sddfiqa_star
    from .scoring import score_paths

    if ctx["train_images"] is None:
        raise _Skip("needs training images (--train-images)")
    run_dir = Path(ctx["out_dir"]) / "sddfiqa_star" if ctx["out_dir"] is not None else None
    res = sddfiqa_star(ctx["train_images"], weights=ctx["weights"], train_config=ctx["train_config"],
                       model_config=ctx["model_config"], run_dir=run_dir, device=ctx["dev"], crop=ctx["crop"],
                       num_workers=ctx["num_workers"], progress=ctx["progress"], **opts)
    sc = score_paths(res.model, paths, device=ctx["dev"], crop=ctx["crop"], strict=True,
                     num_workers=ctx["num_workers"], progress="sddfiqa*" if ctx["progress"] else False)
    return sc.scores


def _unavailable(method: str, ctx: dict) -> str | None:
    """Why ``method`` cannot run with the inputs given, or None."""
    if method == "crl-uiqa" and ctx["model"] is None:
        return "needs a trained model (--model RUN_DIR)"
    if method == "distance" and ctx["ref_paths"] is None:
        return "needs reference images (--references)"
    if method == "sddfiqa*" and ctx["train_images"] is None:
        return "needs training images (--train-images)"
    if method not in BUILTIN_METHODS:
        from .baselines import get_spec

        if get_spec(method).references == "required" and ctx["ref_paths"] is None:
            return "needs reference images (--references)"
    return None


def _key_payload(method: str, ctx: dict, opts: dict) -> dict:
    from . import __version__

    payload: dict[str, Any] = {"method": method, "version": __version__, "options": _canonical(opts),
                               "images": ctx["image_sig"], "crop": ctx["crop"]}
    if method == "crl-uiqa":
        m = Path(ctx["model"]) if ctx["model"] is not None else None
        if m is not None and m.is_dir():
            m = m / "model.safetensors"
        payload.update(model=_file_sig(m) if m is not None else None, device=ctx["dev"].type)
    elif method == "distance":
        payload.update(references=ctx["ref_sig"], reference_crop=ctx["reference_crop"], k=ctx["k"],
                       layer=ctx["layer"], backbone=ctx["backbone"], weights=ctx["weights_sig"](),
                       device=ctx["dev"].type)
    elif method == "sddfiqa*":
        tc, mc = ctx["train_config"], ctx["model_config"]
        payload.update(train_images=ctx["train_sig"], weights=ctx["weights_sig"](), device=ctx["dev"].type,
                       train_config=tc.to_dict() if tc is not None else None,
                       model_config=mc.to_dict() if mc is not None else None)
    else:
        from .baselines import get_spec

        spec = get_spec(method)
        if spec.references != "none":
            payload.update(references=ctx["ref_sig"], reference_crop=ctx["reference_crop"])
        if spec.weights != "none":
            payload.update(weights=ctx["weights_sig"]())
        if spec.device:
            payload.update(device=ctx["dev"].type)
        if "labels" in inspect.signature(spec.func).parameters:
            payload.update(labels=ctx["labels"])
    return payload


def _skip_reason_for(exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, ImportError):
        return f"optional package missing: {msg}"
    return msg


# ----------------------------------------------------------------------------- the comparison
def compare_methods(
    pairs_csv: str | os.PathLike,
    methods: str | Sequence[str] | None = None,
    *,
    images=None,
    references=None,
    model: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    train_images=None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    weights=None,
    backbone: str = "sononet16",
    layer: str = "block4",
    k: int = 5,
    device="auto",
    crop=None,
    reference_crop=None,
    train_config=None,
    model_config=None,
    n_boot: int = 2000,
    chunk_size: int = 256,
    use_cache: bool = True,
    num_workers: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Score the test images with each method and evaluate every method on the same pairs.

    Parameters
    ----------
    pairs_csv : path
        CSV ``better,worse[,type]``; relative paths resolve against ``root``.
    methods : str or sequence of str, optional
        Method names (a list or a comma-separated string); default: all of
        :func:`available_methods` (those that cannot run are reported as skipped).
    images : source, optional
        Test images (folder, glob, manifest CSV or a list); every pair image
        must be among them. Default: the images named in the pairs.
    references : source, optional
        High-quality reference planes (for distance, mssim, niqe-ref, weighted).
    model : path, optional
        CRL-UIQA run directory (or its ``model.safetensors``).
    out_dir : path, optional
        Where score caches and ``compare.csv``/``.md``/``.json`` go (none written when None).
    root : path, optional
        Folder the pair paths are relative to. Default: the pairs CSV's folder,
        then (when ``images`` is one folder) that folder.
    train_images : source, optional
        Training images for ``sddfiqa*``.
    options : mapping, optional
        ``{method: {option: value}}`` passed to the methods (e.g.
        ``{"serfiq": {"passes": 20}, "weighted": {"plane": "4CH"}}``;
        ``sddfiqa*`` takes the options of :func:`~crl_uiqa.baselines.sddfiqa.sddfiqa_star`).
    weights : path, optional
        SonoNet-16 weights for every SonoNet-based method.
    backbone, layer, k : str, str, int
        Embedding network, layer and top-k of the ``distance`` method.
    device : str
        ``auto``, ``cpu`` or ``cuda[:N]``.
    crop, reference_crop : (top, left, height, width), optional
        Crop of the test images and of the references (default: ``crop``).
    train_config, model_config : optional
        :class:`~crl_uiqa.training.TrainConfig` / :class:`~crl_uiqa.model.ModelConfig` of ``sddfiqa*``.
    n_boot : int
        Bootstrap resamples of the 95 % intervals.
    chunk_size : int
        Images decoded at once (native size) for the per-image classical baselines.
    use_cache : bool
        Reuse cached scores whose hash matches.
    num_workers : int, optional
        Image decoding processes.
    progress : bool
        Progress bars.

    Returns
    -------
    list of dict
        One row per method: ``method``, ``status`` (ok, skipped, failed),
        ``accuracy``, ``ci_low``, ``ci_high``, ``n_pairs``, ``acc_<type>`` per
        pair type, ``seconds``, ``cached``, ``note``.
    """
    from .embed import resolve_device
    from .evaluation import pairwise_accuracy, read_pairs
    from .files import write_csv, write_json, write_text
    from .io import ImageReadError, list_images

    wanted = _parse_methods(methods)
    options = {str(m).strip().lower(): dict(v) for m, v in (options or {}).items()}
    bad = sorted(set(options) - set(available_methods()))
    if bad:
        raise ValueError(f"options given for unknown method(s) {', '.join(bad)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    pairs_csv = Path(pairs_csv)
    raw_pairs = read_pairs(pairs_csv)
    if not raw_pairs:
        raise ValueError(f"{pairs_csv} lists no pairs")
    for line, (b, w, _) in enumerate(raw_pairs, start=2):
        if not (b or "").strip() or not (w or "").strip():
            raise ValueError(f"{pairs_csv}, line {line}: empty better or worse path")

    def _single(src):
        return src[0] if isinstance(src, (list, tuple)) and len(src) == 1 else src

    images, references, train_images = _single(images), _single(references), _single(train_images)
    # the test images and the pairs, keyed by normalised absolute paths
    roots = [Path(root)] if root is not None else [pairs_csv.parent]
    if root is None and images is not None and not isinstance(images, (list, tuple)) and Path(str(images)).is_dir():
        roots.append(Path(str(images)))
    if images is not None:
        paths = list(dict.fromkeys(_norm(p) for p in list_images(images)))
        listed = set(paths)
        pairs = None
        for r in roots:
            cand = [(_norm(b, r), _norm(w, r), t) for b, w, t in raw_pairs]
            if all(b in listed and w in listed for b, w, _ in cand):
                pairs = cand
                break
        if pairs is None:
            cand = [(_norm(b, roots[0]), _norm(w, roots[0]), t) for b, w, t in raw_pairs]
            absent = next(p for pr in cand for p in pr[:2] if p not in listed)
            raise ValueError(f"the pair image {absent} is not among the --images ({len(paths)} images); "
                             f"pair paths are relative to {' or '.join(map(str, roots))} (set --root)")
    else:
        pairs = [(_norm(b, roots[0]), _norm(w, roots[0]), t) for b, w, t in raw_pairs]
        paths = sorted({p for pr in pairs for p in pr[:2]})
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} pair image(s) not found, first: {missing[0]} "
                                    f"(pair paths are relative to {roots[0]}; set --root)")
    labels = None
    if images is not None:
        from .baselines.sddfiqa import manifest_labels

        lab = manifest_labels(images)
        if lab is not None:
            by_path = {_norm(p): v for p, v in zip(list_images(images), lab)}
            labels = [by_path[p] for p in paths]

    ref_paths = [_norm(p) for p in list_images(references)] if references is not None else None
    if model is not None and not Path(model).exists():
        raise FileNotFoundError(f"model not found: {model}")
    train_paths = list_images(train_images) if train_images is not None else None
    dev = resolve_device(device)
    reference_crop = reference_crop if reference_crop is not None else crop
    out = Path(out_dir) if out_dir is not None else None

    ref_cache: dict[bool, list] = {}

    def ref_arrays(native: bool) -> list[np.ndarray]:
        if native not in ref_cache:
            ref_cache[native] = _read_arrays(ref_paths, None if native else _NETWORK_SIZE, reference_crop,
                                             num_workers, "reading references" if progress else False)
        return ref_cache[native]

    wsig: list = []

    def weights_sig():
        if not wsig:
            wsig.append(_weights_sig(weights))
        return wsig[0]

    ctx = {
        "paths": paths, "ref_paths": ref_paths, "ref_arrays": ref_arrays, "labels": labels, "model": model,
        "train_images": train_images, "weights": weights, "backbone": backbone, "layer": layer, "k": k, "dev": dev,
        "device": str(dev), "crop": tuple(crop) if crop is not None else None,
        "reference_crop": tuple(reference_crop) if reference_crop is not None else None,
        "train_config": train_config, "model_config": model_config, "chunk_size": chunk_size,
        "num_workers": num_workers, "progress": progress, "out_dir": out,
        "image_sig": [_file_sig(p) for p in paths] + _source_sig(images),
        "ref_sig": ([_file_sig(p) for p in ref_paths] + _source_sig(references)) if ref_paths is not None else None,
        "train_sig": ([_file_sig(_norm(p)) for p in train_paths] + _source_sig(train_images))
        if train_paths is not None else None,
        "weights_sig": weights_sig,
    }

    rows: list[dict] = []
    for method in wanted:
        opts = options.get(method, {})
        row: dict[str, Any] = {"method": method, "status": "ok", "accuracy": None, "ci_low": None, "ci_high": None,
                               "n_pairs": len(pairs), "seconds": None, "cached": False, "note": ""}
        csv_path = out / f"scores_{method_slug(method)}.csv" if out is not None else None
        try:
            reason = _unavailable(method, ctx)
            if reason is not None:
                raise _Skip(reason)
            key = _hash(_key_payload(method, ctx, opts))
            hit = _read_cache(csv_path, key, paths) if (csv_path is not None and use_cache) else None
            if hit is not None:
                scores, meta = hit
                row.update(seconds=meta.get("seconds"), cached=True)
                log.info("%s: cached scores from %s", method, csv_path)
            else:
                log.info("%s: scoring %d images", method, len(paths))
                t0 = time.perf_counter()
                if method == "crl-uiqa":
                    if opts:
                        raise ValueError(f"crl-uiqa takes no options, got {', '.join(opts)}")
                    values = _run_crl(paths, ctx)
                elif method == "distance":
                    if opts:
                        raise ValueError(f"distance takes no options (use k=, layer=), got {', '.join(opts)}")
                    values = _run_distance(paths, ctx)
                elif method == "sddfiqa*":
                    values = _run_sddfiqa_star(paths, ctx, opts)
                else:
                    values = _run_registry(method, paths, ctx, opts)
                seconds = time.perf_counter() - t0
                values = np.asarray(values, dtype=np.float64)
                if values.shape != (len(paths),):
                    raise RuntimeError(f"{method} returned {values.shape[0] if values.ndim else 0} scores for "
                                       f"{len(paths)} images")
                bad_idx = np.flatnonzero(~np.isfinite(values))
                if bad_idx.size:
                    raise ValueError(f"{bad_idx.size} non-finite score(s), first for {paths[int(bad_idx[0])]}")
                scores = dict(zip(paths, values.tolist()))
                row["seconds"] = round(seconds, 3)
                if csv_path is not None:
                    _write_cache(csv_path, key, method, scores, row["seconds"],
                                 {"options": _canonical(opts), "n_images": len(paths)})
        except _Skip as exc:
            row.update(status="skipped", note=str(exc), n_pairs=None)
            log.info("%s: skipped (%s)", method, exc)
            rows.append(row)
            continue
        except ImageReadError:
            raise
        except (ImportError, FileNotFoundError) as exc:
            row.update(status="skipped", note=_skip_reason_for(exc), n_pairs=None)
            log.warning("%s: skipped (%s)", method, row["note"])
            rows.append(row)
            continue
        except (ValueError, TypeError, RuntimeError, FloatingPointError) as exc:
            row.update(status="failed", note=str(exc), n_pairs=None)
            log.warning("%s: failed (%s)", method, exc)
            log.debug("%s failure", method, exc_info=True)
            rows.append(row)
            continue
        acc = pairwise_accuracy(scores, pairs, n_boot=n_boot)
        ov = acc["overall"]
        row.update(accuracy=ov["accuracy"], ci_low=ov["ci_low"], ci_high=ov["ci_high"], n_pairs=ov["n"])
        for t, s in acc["by_type"].items():
            row[f"acc_{t}"] = s["accuracy"]
            row[f"n_{t}"] = s["n"]
        if csv_path is not None:
            row["scores_csv"] = str(csv_path)
        rows.append(row)

    if out is not None:
        keys: list[str] = []
        for r in rows:
            keys += [c for c in r if c not in keys]
        write_csv(out / "compare.csv", rows, keys)
        write_text(out / "compare.md", format_table(rows) + "\n")
        write_json(out / "compare.json", {"pairs": str(pairs_csv), "n_pairs": len(pairs), "n_images": len(paths),
                                          "references": len(ref_paths) if ref_paths is not None else 0,
                                          "methods": rows})
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`compare_methods` rows (Table 2 layout, one row per method)."""
    types = []
    for r in rows:
        types += [c for c in r if c.startswith("acc_") and c not in types]
    head = ["method", "accuracy", "95% CI", *[t.removeprefix("acc_") for t in types], "pairs", "seconds", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]

    def num(v, fmt="{:.3f}"):
        return fmt.format(v) if isinstance(v, (int, float)) and v is not None else ""

    for r in rows:
        ok = r.get("status") == "ok"
        note = r.get("note") or ""
        if not ok:
            note = f"{r.get('status')}: {note}"
        elif r.get("cached"):
            note = "cached" + (f"; {note}" if note else "")
        secs = r.get("seconds")
        cells = [
            str(r.get("method", "")),
            num(r.get("accuracy")) if ok else "--",
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if ok and r.get("ci_low") is not None else "",
            *[num(r.get(t)) if ok else "" for t in types],
            str(r.get("n_pairs") or "") if ok else "",
            num(secs, "{:.1f}") if secs is not None else "",
            note.replace("|", "/").replace("\n", " "),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
