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

Every method is a :class:`Method` entry: how it runs, what it needs (a
model, references, training images) and what its cached scores depend on;
the built-in ones are in :data:`BUILTIN`, the baselines come from the
registry. A method that cannot run here (no model, no references, no training
images, a missing optional package or weight file) becomes a row with status
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import validate
from .errors import ConfigError, ImageError, InputError, NotFoundError, reworded
from .files import holds_output_dir
from .tables import Pair, csv_folder, path_key, read_pairs

log = logging.getLogger(__name__)

__all__ = ["BUILTIN_METHODS", "BUILTIN", "Method", "CompareContext", "available_methods", "compare_methods",
           "format_table", "method_slug", "get_method"]

#: registry baselines computed per image (safe to run in chunks at native resolution)
_PER_IMAGE = frozenset({"brisque", "niqe", "niqe-ref", "mssim"})
#: registry baselines that resize to the SonoNet input themselves (decoded straight to that size)
_NETWORK = frozenset({"serfiq", "sddfiqa", "weighted"})
_NETWORK_SIZE = (224, 288)


def method_slug(method: str) -> str:
    """File-name-safe form of a method name (``sddfiqa*`` -> ``sddfiqa_star``)."""
    return re.sub(r"[^a-z0-9_.-]+", "_", method.lower().replace("*", "_star"))


# ----------------------------------------------------------------------------- files and hashing
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
    return [_file_sig(path_key(s)) for s in items if Path(str(s)).is_file()]


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
        return {"file": _file_sig(path_key(value))}
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
    from .tables import read_score_table

    meta_path = csv_path.with_suffix(".json")
    if not (csv_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None
        scores = {r.path: r.value for r in read_score_table(csv_path)}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
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




# ----------------------------------------------------------------------------- the context every method sees


@dataclass
class CompareContext:
    """Everything the methods of one comparison share: the test images, references, model and settings."""

    paths: list[str]
    labels: list | None = None
    ref_paths: list[str] | None = None
    model: str | os.PathLike | None = None
    train_images: Any = None
    weights: Any = None
    backbone: str = "sononet16"
    layer: str = "block4"
    k: int = 5
    dev: Any = None
    crop: tuple | None = None
    reference_crop: tuple | None = None
    train_config: Any = None
    model_config: Any = None
    chunk_size: int = 256
    num_workers: int | None = None
    progress: bool = True
    out_dir: Path | None = None
    image_sig: list = field(default_factory=list)
    ref_sig: list | None = None
    train_sig: list | None = None
    _refs: dict = field(default_factory=dict, repr=False)
    _wsig: list = field(default_factory=list, repr=False)

    def bar(self, what: str) -> str | bool:
        """A progress-bar label, or ``False`` when progress is off."""
        return what if self.progress else False

    def ref_arrays(self, native: bool) -> list[np.ndarray]:
        """The reference images, at native size or at the SonoNet input size (decoded once each)."""
        if native not in self._refs:
            self._refs[native] = _read_arrays(self.ref_paths, None if native else _NETWORK_SIZE, self.reference_crop,
                                              self.num_workers, self.bar("reading references"))
        return self._refs[native]

    def weights_sig(self) -> list | None:
        """Signature of the SonoNet-16 weight file (looked up once)."""
        if not self._wsig:
            self._wsig.append(_weights_sig(self.weights))
        return self._wsig[0]


#: what a method may need, the reason given when it is missing, and how to tell
_NEEDS: dict[str, tuple[str, Callable[[CompareContext], bool]]] = {
    "model": ("needs a trained model (--model RUN_DIR)", lambda c: c.model is not None),
    "references": ("needs reference images (--references)", lambda c: c.ref_paths is not None),
    "train_images": ("needs training images (--train-images)", lambda c: c.train_images is not None),
}


@dataclass(frozen=True)
class Method:
    """One row of the comparison.

    Attributes
    ----------
    name : str
    run : callable
        ``run(ctx, options) -> scores`` of ``ctx.paths`` (higher = better).
    key : callable
        ``key(ctx) -> dict``: what the scores depend on besides the images,
        options, crop and crl-uiqa version (hashed for the cache).
    needs : tuple of str
        ``"model"``, ``"references"``, ``"train_images"``: without them the method is skipped.
    no_options : str or None
        When set, the method takes no options and this is said when some are given.
    """

    name: str
    run: Callable[[CompareContext, dict], np.ndarray]
    key: Callable[[CompareContext], dict]
    needs: tuple[str, ...] = ()
    no_options: str | None = None

    def unavailable(self, ctx: CompareContext) -> str | None:
        """Why the method cannot run with the inputs given, or ``None``."""
        for need in self.needs:
            reason, present = _NEEDS[need]
            if not present(ctx):
                return reason
        return None

    def __call__(self, ctx: CompareContext, opts: dict) -> np.ndarray:
        if opts and self.no_options is not None:
            raise ConfigError(f"{self.name} takes no options{self.no_options}, got {', '.join(opts)}")
        values = np.asarray(self.run(ctx, opts), dtype=np.float64)
        if values.shape != (len(ctx.paths),):
            raise RuntimeError(f"{self.name} returned {values.shape[0] if values.ndim else 0} scores for "
                               f"{len(ctx.paths)} images")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ImageError(f"{bad.size} non-finite score(s), first for {ctx.paths[int(bad[0])]}")
        return values


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




# ----------------------------------------------------------------------------- the methods


def _run_crl(ctx: CompareContext, opts: dict) -> np.ndarray:
    from .model import load_model
    from .scoring import score_paths

    model, _ = load_model(ctx.model, device=ctx.dev)
    return score_paths(model, ctx.paths, device=ctx.dev, crop=ctx.crop, strict=True, num_workers=ctx.num_workers,
                       progress=ctx.bar("crl-uiqa")).scores


def _crl_key(ctx: CompareContext) -> dict:
    m = Path(ctx.model) if ctx.model is not None else None
    if m is not None and m.is_dir():
        m = m / "model.safetensors"
    return {"model": _file_sig(m) if m is not None else None, "device": ctx.dev.type}


def _run_distance(ctx: CompareContext, opts: dict) -> np.ndarray:
    from .backbones import get_backbone
    from .embed import compute_embeddings
    from .pseudo_labels import topk_mean_distance

    net = get_backbone(ctx.backbone, ctx.weights)
    common = dict(layer=ctx.layer, device=ctx.dev, num_workers=ctx.num_workers, strict=True)
    refs = compute_embeddings(ctx.ref_paths, net, crop=ctx.reference_crop, progress=ctx.bar("references"), **common)
    embs = compute_embeddings(ctx.paths, net, crop=ctx.crop, progress=ctx.bar("distance"), **common)
    return -topk_mean_distance(embs.vectors, refs.vectors, ctx.k, device=ctx.dev)


def _distance_key(ctx: CompareContext) -> dict:
    return {"references": ctx.ref_sig, "reference_crop": ctx.reference_crop, "k": ctx.k, "layer": ctx.layer,
            "backbone": ctx.backbone, "weights": ctx.weights_sig(), "device": ctx.dev.type}


def _run_sddfiqa_star(ctx: CompareContext, opts: dict) -> np.ndarray:
    from .baselines.sddfiqa import sddfiqa_star
    from .scoring import score_paths

    run_dir = ctx.out_dir / "sddfiqa_star" if ctx.out_dir is not None else None
    res = sddfiqa_star(ctx.train_images, weights=ctx.weights, train_config=ctx.train_config,
                       model_config=ctx.model_config, run_dir=run_dir, device=ctx.dev, crop=ctx.crop,
                       num_workers=ctx.num_workers, progress=ctx.progress, **opts)
    return score_paths(res.model, ctx.paths, device=ctx.dev, crop=ctx.crop, strict=True,
                       num_workers=ctx.num_workers, progress=ctx.bar("sddfiqa*")).scores


def _sddfiqa_star_key(ctx: CompareContext) -> dict:
    tc, mc = ctx.train_config, ctx.model_config
    return {"train_images": ctx.train_sig, "weights": ctx.weights_sig(), "device": ctx.dev.type,
            "train_config": tc.to_dict() if tc is not None else None,
            "model_config": mc.to_dict() if mc is not None else None}


def _run_baseline(name: str, ctx: CompareContext, opts: dict) -> np.ndarray:
    """A registry baseline, its images decoded the way it needs them (see the module docstring)."""
    from .baselines import get_spec, name_files, run_baseline

    spec = get_spec(name)
    refs = ctx.ref_arrays(native=name not in _NETWORK) if spec.references != "none" and ctx.ref_paths else None
    params = inspect.signature(spec.func).parameters
    opts = dict(opts)
    if "paths" in params and "paths" not in opts:
        opts["paths"] = ctx.paths
    if "labels" in params and "labels" not in opts and ctx.labels is not None:
        opts["labels"] = ctx.labels
    if "progress" in params and "progress" not in opts:
        opts["progress"] = ctx.progress
    weights = ctx.weights if spec.weights != "none" else None
    device = str(ctx.dev) if spec.device else None
    progress = ctx.bar(f"reading images ({name})")

    def call(images, offset, o):
        try:
            return run_baseline(name, images, references=refs, weights=weights, device=device, **o)
        except ValueError as exc:
            raise reworded(exc, name_files(str(exc), ctx.paths[offset: offset + len(images)], ctx.ref_paths or [])
                           ) from None

    if name in _NETWORK:
        size = opts.get("size", _NETWORK_SIZE)
        size = tuple(size) if isinstance(size, (list, tuple)) else _NETWORK_SIZE  # a bad size: the method says so
        return call(_read_arrays(ctx.paths, size, ctx.crop, ctx.num_workers, progress), 0, opts)
    if name in _PER_IMAGE:
        out = np.empty(len(ctx.paths))
        for start in range(0, len(ctx.paths), ctx.chunk_size):
            chunk = ctx.paths[start: start + ctx.chunk_size]
            out[start: start + len(chunk)] = call(_read_arrays(chunk, None, ctx.crop, ctx.num_workers, progress),
                                                  start, opts)
        return out
    return call(_read_arrays(ctx.paths, None, ctx.crop, ctx.num_workers, progress), 0, opts)


def _baseline_key(name: str, ctx: CompareContext) -> dict:
    from .baselines import get_spec

    spec = get_spec(name)
    payload: dict[str, Any] = {}
    if spec.references != "none":
        payload.update(references=ctx.ref_sig, reference_crop=ctx.reference_crop)
    if spec.weights != "none":
        payload.update(weights=ctx.weights_sig())
    if spec.device:
        payload.update(device=ctx.dev.type)
    if "labels" in inspect.signature(spec.func).parameters:
        payload.update(labels=ctx.labels)
    return payload


#: The methods that are not registry baselines, in table order.
BUILTIN: dict[str, Method] = {
    "crl-uiqa": Method("crl-uiqa", _run_crl, _crl_key, needs=("model",), no_options=""),
    "distance": Method("distance", _run_distance, _distance_key, needs=("references",),
                       no_options=" (use k=, layer=)"),
    "sddfiqa*": Method("sddfiqa*", _run_sddfiqa_star, _sddfiqa_star_key, needs=("train_images",)),
}
#: Their names.
BUILTIN_METHODS = tuple(BUILTIN)


def get_method(name: str) -> Method:
    """The :class:`Method` of a name of :func:`available_methods`."""
    if name in BUILTIN:
        return BUILTIN[name]
    from functools import partial

    from .baselines import get_spec

    spec = get_spec(name)
    needs = ("references",) if spec.references == "required" else ()
    return Method(name, partial(_run_baseline, name), partial(_baseline_key, name), needs=needs)


def available_methods() -> list[str]:
    """Every method name :func:`compare_methods` accepts, in table order."""
    from .baselines import BASELINES

    return ["crl-uiqa", "distance", *sorted(BASELINES), "sddfiqa*"]


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
            raise ConfigError(f"unknown method {m!r}; valid methods: {', '.join(valid)}")
        if key not in out:
            out.append(key)
    if not out:
        raise ConfigError(f"no method given; valid methods: {', '.join(valid)}")
    return out


def _skip_reason_for(exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, ImportError):
        return f"optional package missing: {msg}"
    return msg


# ----------------------------------------------------------------------------- the comparison
#: what :func:`compare_methods` writes into its folder: the tables and each method's score cache (and sddfiqa*'s run
#: in sddfiqa_star/)
COMPARE_OUTPUTS = ("compare.csv", "compare.md", "compare.json", "scores_*.csv", "scores_*.json")


@holds_output_dir("out_dir")
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
        Bootstrap resamples of the 95 % intervals (>= 0; 0: no interval,
        ``ci_low``/``ci_high`` None).
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
    from .devices import resolve_device
    from .evaluation import check_n_boot

    n_boot = check_n_boot(n_boot)
    wanted = _parse_methods(methods)
    options = _check_options(options, k, chunk_size)
    pairs_csv = Path(pairs_csv)
    raw_pairs = read_pairs(pairs_csv)
    if not raw_pairs:
        raise InputError(f"{pairs_csv} lists no pairs")
    images, references, train_images = _single(images), _single(references), _single(train_images)
    paths, pairs = _test_set(raw_pairs, pairs_csv, images, root)
    if model is not None and not Path(model).exists():
        raise NotFoundError(f"no model at {model}")
    reference_crop = reference_crop if reference_crop is not None else crop
    ctx = CompareContext(
        paths=paths, labels=_labels(images, paths), model=model, train_images=train_images, weights=weights,
        backbone=backbone, layer=layer, k=k, dev=resolve_device(device),
        crop=tuple(crop) if crop is not None else None,
        reference_crop=tuple(reference_crop) if reference_crop is not None else None,
        train_config=train_config, model_config=model_config, chunk_size=chunk_size, num_workers=num_workers,
        progress=progress, out_dir=Path(out_dir) if out_dir is not None else None,
    )
    if ctx.out_dir is not None:  # a file of the user's named like an output: refused before any scoring
        from .checkpoint import RUN_FILES
        from .files import check_outputs_free

        check_outputs_free(ctx.out_dir, [*COMPARE_OUTPUTS, *(f"sddfiqa_star/{f}" for f in RUN_FILES)])
    _sign(ctx, images, references, train_images)
    rows = [_row(get_method(m), ctx, pairs, options.get(m, {}), n_boot, use_cache) for m in wanted]
    if ctx.out_dir is not None:
        _write_outputs(ctx.out_dir, rows, pairs_csv, len(pairs), ctx)
    return rows


def _single(src):
    return src[0] if isinstance(src, (list, tuple)) and len(src) == 1 else src


def _check_options(options, k, chunk_size) -> dict[str, dict]:
    options = {str(m).strip().lower(): dict(v) for m, v in (options or {}).items()}
    bad = sorted(set(options) - set(available_methods()))
    if bad:
        raise ConfigError(f"options given for unknown method(s) {', '.join(bad)}")
    validate.integer("k", k, minimum=1)
    validate.integer("chunk_size", chunk_size, minimum=1)
    _check_detector_files(options.get("weighted", {}))
    return options


def _check_detector_files(weighted: Mapping[str, Any]) -> None:
    """Read the weighted score's detector files (``--detections``, ``--structure-weights``) before any scoring: they
    are settings, so a malformed one is a one-line error, not a "failed" row after the other methods ran."""
    from .baselines.weighted import read_detections, read_structure_weights

    for key, read in (("detections", read_detections), ("structure_weights", read_structure_weights)):
        value = weighted.get(key)
        if isinstance(value, (str, os.PathLike)):
            read(value)


def _test_set(raw_pairs: list[Pair], pairs_csv: Path, images, root) -> tuple[list[str], list[Pair]]:
    """The test images and the pairs, keyed by :func:`crl_uiqa.tables.path_key`.

    Pair paths are relative to ``root``, else to the pairs CSV's folder, else
    (when ``images`` is one folder) to that folder.
    """
    from .io import list_images

    roots = [Path(root)] if root is not None else [csv_folder(pairs_csv)]
    if root is None and images is not None and not isinstance(images, (list, tuple)) and Path(str(images)).is_dir():
        roots.append(Path(str(images)))

    def keyed(r) -> list[Pair]:
        return [(path_key(b, r), path_key(w, r), t) for b, w, t in raw_pairs]

    if images is None:
        pairs = keyed(roots[0])
        paths = sorted({p for pr in pairs for p in pr[:2]})
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise NotFoundError(f"{len(missing)} pair image(s) not found, first: {missing[0]} "
                                f"(pair paths are relative to {roots[0]}; set --root)")
        return paths, pairs
    paths = list(dict.fromkeys(path_key(p) for p in list_images(images)))
    listed = set(paths)
    for r in roots:
        pairs = keyed(r)
        if all(b in listed and w in listed for b, w, _ in pairs):
            return paths, pairs
    absent = next(p for pr in keyed(roots[0]) for p in pr[:2] if p not in listed)
    raise InputError(f"the pair image {absent} is not among the --images ({len(paths)} images); "
                     f"pair paths are relative to {' or '.join(map(str, roots))} (set --root)")


def _labels(images, paths: list[str]) -> list | None:
    """Class labels of the test images from a manifest's ``label`` column (for SDD-FIQA), if any."""
    if images is None:
        return None
    from .baselines.sddfiqa import manifest_labels
    from .io import list_images

    lab = manifest_labels(images)
    if lab is None:
        return None
    by_path = {path_key(p): v for p, v in zip(list_images(images), lab)}
    return [by_path[p] for p in paths]


def _sign(ctx: CompareContext, images, references, train_images) -> None:
    """Fill in the reference and training paths and the file signatures the cache keys hash."""
    from .io import list_images, list_references

    ctx.ref_paths = [path_key(p) for p in list_references(references)] if references is not None else None
    train_paths = list_images(train_images) if train_images is not None else None
    ctx.image_sig = [_file_sig(p) for p in ctx.paths] + _source_sig(images)
    if ctx.ref_paths is not None:
        ctx.ref_sig = [_file_sig(p) for p in ctx.ref_paths] + _source_sig(references)
    if train_paths is not None:
        ctx.train_sig = [_file_sig(path_key(p)) for p in train_paths] + _source_sig(train_images)


def _scores(method: Method, ctx: CompareContext, opts: dict, use_cache: bool) -> tuple[dict[str, float], dict]:
    """``(scores, row fields)``: from the cache when its key matches, else computed (and cached)."""
    from . import __version__

    csv_path = ctx.out_dir / f"scores_{method_slug(method.name)}.csv" if ctx.out_dir is not None else None
    payload = {"method": method.name, "version": __version__, "options": _canonical(opts), "images": ctx.image_sig,
               "crop": ctx.crop, **method.key(ctx)}
    key = _hash(payload)
    hit = _read_cache(csv_path, key, ctx.paths) if (csv_path is not None and use_cache) else None
    if hit is not None:
        log.info("%s: cached scores from %s", method.name, csv_path)
        return hit[0], {"seconds": hit[1].get("seconds"), "cached": True, "scores_csv": str(csv_path)}
    log.info("%s: scoring %d images", method.name, len(ctx.paths))
    t0 = time.perf_counter()
    scores = dict(zip(ctx.paths, method(ctx, opts).tolist()))
    seconds = round(time.perf_counter() - t0, 3)
    fields: dict[str, Any] = {"seconds": seconds}
    if csv_path is not None:
        _write_cache(csv_path, key, method.name, scores, seconds,
                     {"options": _canonical(opts), "n_images": len(ctx.paths)})
        fields["scores_csv"] = str(csv_path)
    return scores, fields


def _row(method: Method, ctx: CompareContext, pairs: list[Pair], opts: dict, n_boot: int,
         use_cache: bool) -> dict:
    """One table row: the method skipped, failed, or scored and evaluated on the pairs."""
    from .evaluation import pairwise_accuracy
    from .io import ImageReadError

    row: dict[str, Any] = {"method": method.name, "status": "ok", "accuracy": None, "ci_low": None,
                           "ci_high": None, "n_pairs": len(pairs), "seconds": None, "cached": False, "note": ""}
    reason = method.unavailable(ctx)
    if reason is not None:
        log.info("%s: skipped (%s)", method.name, reason)
        return {**row, "status": "skipped", "note": reason, "n_pairs": None}
    try:
        scores, fields = _scores(method, ctx, opts, use_cache)
    except ImageReadError:
        raise
    except (ImportError, FileNotFoundError) as exc:
        log.warning("%s: skipped (%s)", method.name, _skip_reason_for(exc))
        return {**row, "status": "skipped", "note": _skip_reason_for(exc), "n_pairs": None}
    except (ValueError, TypeError, RuntimeError, FloatingPointError) as exc:
        log.warning("%s: failed (%s)", method.name, exc)
        log.debug("%s failure", method.name, exc_info=True)
        return {**row, "status": "failed", "note": str(exc), "n_pairs": None}
    scores_csv = fields.pop("scores_csv", None)
    row.update(fields)
    acc = pairwise_accuracy(scores, pairs, n_boot=n_boot)
    ov = acc["overall"]
    if n_boot:
        row.update(ci_low=ov["ci_low"], ci_high=ov["ci_high"])
    row.update(accuracy=ov["accuracy"], n_pairs=ov["n"])
    for t, sub in acc["by_type"].items():
        row[f"acc_{t}"] = sub["accuracy"]
        row[f"n_{t}"] = sub["n"]
    if scores_csv is not None:
        row["scores_csv"] = scores_csv
    return row


def _write_outputs(out: Path, rows: list[dict], pairs_csv: Path, n_pairs: int, ctx: CompareContext) -> None:
    from .files import write_csv, write_json, write_text

    keys: list[str] = []
    for r in rows:
        keys += [c for c in r if c not in keys]
    write_csv(out / "compare.csv", rows, keys)
    write_text(out / "compare.md", format_table(rows) + "\n")
    write_json(out / "compare.json", {"pairs": str(pairs_csv), "n_pairs": n_pairs, "n_images": len(ctx.paths),
                                      "references": len(ctx.ref_paths) if ctx.ref_paths is not None else 0,
                                      "methods": rows})


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`compare_methods` rows (Table 2 layout, one row per method)."""
    from . import markdown

    types = []
    for r in rows:
        types += [c for c in r if c.startswith("acc_") and c not in types]
    head = ["method", "accuracy", "95% CI", *[t.removeprefix("acc_") for t in types], "pairs", "seconds", "note"]
    body = []

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
            note,
        ]
        body.append(cells)
    return markdown.table(head, body)
