"""A scikit-learn-style front to the whole method.

>>> est = CRLUIQA(k=5, epochs=35)                     # doctest: +SKIP
>>> est.fit("frames/", references="best_planes/")     # pseudo-label + co-learning
>>> scores = est.predict(["a.png", "b.png"])          # higher = better
>>> est.save("run/"); est = CRLUIQA.load("run/")

``fit`` = :func:`crl_uiqa.pseudo_labels.label_images` (and, with
``calibrate_margins=True``, :func:`crl_uiqa.calibration.backbone_calibration_table`
on the references) then :func:`crl_uiqa.training.train`; ``predict`` = :func:`crl_uiqa.scoring.score_paths`.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError, InputError, NotFittedError
from .files import holds_output_dir
from .model import ModelConfig
from .training import TrainConfig

_TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))  # CRLUIQA's keyword arguments beyond its own
#: what CRLUIQA.load takes besides device: how the saved model is used, not what it is
_LOAD_PARAMS = frozenset({"batch_size_eval", "num_workers", "progress", "weights"})


def _init_defaults() -> dict:
    """CRLUIQA's own settings and their defaults, from its signature."""
    return {n: p.default for n, p in inspect.signature(CRLUIQA.__init__).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _same(a, b) -> bool:
    try:
        return bool(a is b or a == b)
    except Exception:  # a setting that does not compare to a bool (an array): shown
        return False


@dataclass
class PseudoLabelConfig:
    """Settings of the pseudo-label step (paper Sec. 2.1); defaults chosen on the dev protocol."""

    k: int = 5
    layer: str = "block4"
    backbone: str = "sononet16"
    smoothing: bool = True

    def __post_init__(self) -> None:
        from . import validate as v
        from .backbones import check_backbone_name

        v.integer(v.flag("k"), self.k, minimum=1)
        if not isinstance(self.layer, str) or not self.layer:
            raise ConfigError(f"{v.flag('layer')} must be a layer name, got {self.layer!r}")
        check_backbone_name(self.backbone)
        v.boolean("smoothing", self.smoothing)


def _listing(paths: Sequence[str], key=None) -> list:
    """Paths and sizes: what identifies an input set for ``--resume`` without reading every image. Paths are
    compared by ``key``, the file's real path (:func:`crl_uiqa.tables.path_key`), so a run resumed from another
    folder, or with the images spelled otherwise, is recognised; ``key=str`` gives the listing of fit.json files
    written before 2026-12-02, which compared the path strings as given."""
    import os

    from .tables import path_key

    key = key or path_key
    out = []
    for p in paths:
        try:
            out.append([key(p), os.path.getsize(p)])
        except OSError:
            out.append([key(p), None])
    return out


def _inputs_digests(img_list, ref_list, extra: dict) -> tuple[str, str]:
    """The digest of a fit's inputs (paths by file) and the one older crl-uiqa wrote (paths as given)."""
    from .checkpoint import inputs_digest

    return tuple(inputs_digest({"images": _listing(img_list, key), "references": _listing(ref_list, key), **extra})
                 for key in (None, str))


def _labels_by_file(rows: list[dict], img_list: Sequence[str], base: str | None, labels_csv) -> tuple[list, list]:
    """An interrupted fit's labels, each path given as the current ``--images`` spell it.

    ``labels.csv`` keeps the paths as they were given, relative ones relative to the folder the fit ran in
    (``base``, from fit.json; the current folder for runs written before it was kept there).
    """
    from .tables import path_key

    current = {path_key(p): p for p in img_list}
    paths, q = [], []
    for r in rows:
        k = path_key(r["path"], base)
        if k not in current:  # a run folder moved with its images: try the current folder
            k = path_key(r["path"])
        if k not in current:
            raise ConfigError(f"cannot resume: {labels_csv} lists {r['path']}, which is not among --images; give the "
                              "same images, or start anew with --overwrite (or another --out)")
        paths.append(current[k])
        q.append(float(r["pseudo_label"]))
    return paths, q


class CRLUIQA:
    """Unsupervised ultrasound quality model: ``fit(images, references)`` then ``predict(images)``.

    Settings are checked when the estimator is made (and by :meth:`set_params`), not in :meth:`fit` as in
    scikit-learn: a bad value is a :class:`crl_uiqa.errors.ConfigError` before any work. Files (``weights``, the
    images) are only looked at by :meth:`fit`. ``get_params``/``set_params`` follow scikit-learn's protocol, so
    ``sklearn.base.clone`` gives an unfitted copy with the same settings. The fitted state (``model_``,
    ``labels_``, ``history_`` ...) ends with an underscore; using the estimator before :meth:`fit` or :meth:`load`
    raises :class:`crl_uiqa.errors.NotFittedError`. An estimator pickles (``pickle.dumps``, ``copy.deepcopy``,
    process pools) with its model; to keep a model on disk use :meth:`save` and :meth:`load`, which write and read
    safetensors, never pickles.
    """

    def __init__(self, *, k: int = 5, layer: str = "block4", smoothing: bool = True, backbone: str = "sononet16",
                 weights=None, image_size: tuple[int, int] | None = None, device="auto", batch_size_eval: int = 32,
                 num_workers: int | None = None, progress: bool = True, train_config: TrainConfig | None = None,
                 model_config: ModelConfig | None = None, calibrate_margins: bool = False, paper: bool = False,
                 **train_kwargs):
        from . import validate as v
        from .devices import resolve_device

        unknown = sorted(set(train_kwargs) - _TRAIN_FIELDS)
        if unknown:
            raise ConfigError(f"CRLUIQA has no setting {', '.join(unknown)}; its settings: "
                              f"{', '.join(_init_defaults())} and the TrainConfig fields {', '.join(sorted(_TRAIN_FIELDS))}")
        self._params = {"k": k, "layer": layer, "smoothing": smoothing, "backbone": backbone, "weights": weights,
                        "image_size": image_size, "device": device, "batch_size_eval": batch_size_eval,
                        "num_workers": num_workers, "progress": progress, "train_config": train_config,
                        "model_config": model_config, "calibrate_margins": calibrate_margins, "paper": paper,
                        **train_kwargs}  # as given: get_params returns them, so clone() makes the same estimator
        self.pseudo = PseudoLabelConfig(k, layer, backbone, smoothing)
        resolve_device(device)  # refuse --device tpu (or an absent CUDA) before any work
        v.integer("batch_size_eval", batch_size_eval, minimum=1, maximum=v.MAX_BATCH)
        if num_workers is not None:
            v.integer(v.flag("workers"), num_workers, minimum=0, maximum=v.MAX_WORKERS)
        for name, value in (("progress", progress), ("calibrate_margins", calibrate_margins), ("paper", paper)):
            v.boolean(name, value)
        if image_size is not None:
            from .backbones import min_input_size

            image_size = v.image_size(v.flag("image_size"), image_size, minimum=min_input_size(backbone))
        for name, value, cls in (("train_config", train_config, TrainConfig), ("model_config", model_config,
                                                                                 ModelConfig)):
            if value is not None and not isinstance(value, cls):
                raise ConfigError(f"{name} must be a {cls.__name__} (or None), got {type(value).__name__}")
        self.weights = weights
        self.device = device
        self.batch_size_eval = batch_size_eval
        self.num_workers = num_workers
        self.progress = progress
        if train_config is not None and train_kwargs:
            raise ConfigError(f"give the training settings either as train_config or as keyword arguments, not both "
                              f"(got train_config and {', '.join(sorted(train_kwargs))})")
        if model_config is not None and image_size is not None and tuple(image_size) != model_config.image_size:
            raise ConfigError(f"image_size {tuple(image_size)} contradicts model_config.image_size "
                              f"{model_config.image_size}; give one of them")
        from .training import settings

        t_over, m_over = settings(paper)  # the defaults, or the paper's settings with paper=True
        self.train_config = train_config or TrainConfig(**{**t_over, **train_kwargs})
        if model_config is None:
            model_config = ModelConfig(backbone=backbone, image_size=tuple(image_size or (224, 288)), **m_over)
        if model_config.head == "anchored" and "k" not in model_config.anchor:
            from dataclasses import replace

            model_config = replace(model_config, anchor={**model_config.anchor, "k": k, "layer": layer,
                                                         "smoothing": smoothing})
        self.model_config = model_config
        self.calibrate_margins = calibrate_margins
        self.calibration_ = None  # crl_uiqa.calibration.CalibrationTable when calibrate_margins
        self.model_ = None
        self.labels_ = None
        self.history_: list[dict] = []
        self.failures_: list = []  # images skipped (crl_uiqa.io.ReadFailure) by the last fit
        self.kept_epoch_: int | None = None
        self.warnings_: list[str] = []

    # ------------------------------------------------------------------ fit
    @holds_output_dir("run_dir")
    def fit(self, images, references, *, run_dir=None, resume: bool = False, overwrite: bool = False, crop=None,
            reference_crop=None, val_pairs=None) -> CRLUIQA:
        """Pseudo-label ``images`` against ``references`` and train the quality model.

        ``run_dir`` holding a run is refused unless ``resume`` (same images,
        references and settings, checked by ``run_dir/fit.json``) or
        ``overwrite``. ``run_dir`` is held for the call (:func:`crl_uiqa.files.output_lock`): while another run
        fills it, the call is refused with :class:`~crl_uiqa.errors.OutputError` before anything there changes.
        """
        import os

        from . import validate as v
        from .checkpoint import check_run_dir
        from .files import write_json
        from .io import list_images, list_references
        from .pseudo_labels import label_images
        from .training import check_val_pairs

        crop, reference_crop = v.crop("crop", crop), v.crop("reference_crop", reference_crop)
        run_dir = Path(run_dir) if run_dir is not None else None
        labels_csv = run_dir / "labels.csv" if run_dir is not None else None
        img_list, ref_list = list_images(images), list_references(references)
        if self.pseudo.k > len(ref_list):
            raise ConfigError(f"k={self.pseudo.k} (--k) is larger than the number of references n={len(ref_list)}")
        if len(img_list) < 2:
            raise InputError(f"fit needs at least 2 images, found {len(img_list)}")
        check_val_pairs(val_pairs)  # before the pseudo-labels, not after them
        run_json = run_dir / "fit.json" if run_dir is not None else None
        run_meta: dict = {}
        if run_dir is not None:
            check_run_dir(run_dir, resume=resume, overwrite=overwrite)
            digests = _inputs_digests(img_list, ref_list, {"crop": crop, "reference_crop": reference_crop,
                                                           "pseudo_label_config": asdict(self.pseudo)})
            fit_meta = {"inputs_sha256": digests[0], "n_images": len(img_list), "n_references": len(ref_list),
                        "working_folder": os.getcwd()}  # labels.csv's relative paths are relative to it
            if resume and run_json.exists():
                from .checkpoint import read_json_object

                run_meta = read_json_object(run_json, "fit run description")
                if run_meta.get("inputs_sha256") not in digests:
                    raise ConfigError(f"cannot resume {run_dir}: --images, --references, the crops or the pseudo-label "
                                      "settings differ from those of the interrupted run; give the same ones, or start "
                                      "anew with --overwrite (or another --out)")
            elif resume and any((run_dir / f).exists() for f in ("labels.csv", "last.safetensors")):
                raise ConfigError(f"cannot resume {run_dir}: it has no fit.json to check the inputs against "
                                  "(written by an older crl-uiqa); start anew with --overwrite")
        label_failures: list = []
        if resume and labels_csv is not None and labels_csv.exists():
            from .files import read_csv

            base = run_meta.get("working_folder")
            paths, q = _labels_by_file(read_csv(labels_csv), img_list, base if isinstance(base, str) else None,
                                       labels_csv)
        else:
            self.labels_ = label_images(images, ref_list, k=self.pseudo.k, layer=self.pseudo.layer,
                                        backbone=self.pseudo.backbone, weights=self.weights,
                                        smoothing=self.pseudo.smoothing, device=self.device, crop=crop,
                                        reference_crop=reference_crop, num_workers=self.num_workers,
                                        progress=self.progress)
            if labels_csv is not None:  # fit.json first: a kill in between makes --resume label again
                write_json(run_json, fit_meta)
                self.labels_.to_csv(labels_csv)
            paths, q = self.labels_.paths, self.labels_.labels.label
            label_failures = list(self.labels_.failures)
        if self.calibrate_margins and self.train_config.relativity:
            self._calibrate(ref_list, reference_crop if reference_crop is not None else crop)
        transform = None
        if self.labels_ is not None:  # the anchored head's label map: exactly the pseudo-labels' (Eq. 2-3)
            pl = self.labels_.labels
            transform = (pl.lmbda, float(pl.smoothed.min()), float(pl.smoothed.max()))
        self.fit_labels(paths, q, run_dir=run_dir, resume=resume, overwrite=True, crop=crop, val_pairs=val_pairs,
                        references=ref_list, reference_crop=reference_crop, anchor_transform=transform)
        self.failures_ = label_failures + self.failures_
        return self

    def _calibrate(self, references, crop) -> None:
        """Per-family relativity margins measured on the references (:mod:`crl_uiqa.calibration`)."""
        import logging
        from dataclasses import replace

        from .calibration import backbone_calibration_table
        from .io import list_images
        from .views import parse_strong_views

        self.calibration_ = backbone_calibration_table(
            list_images(references), self.pseudo.backbone, self.weights, self.pseudo.layer, None,
            parse_strong_views(self.train_config.strong_views), k=self.pseudo.k, seed=self.train_config.seed,
            device=self.device, crop=crop, num_workers=self.num_workers)
        weights = self.calibration_.weights()
        self.train_config = replace(self.train_config, calibration=weights)
        logging.getLogger(__name__).info("calibrated margin weights: %s",
                                         ", ".join(f"{f}={w:.3f}" for f, w in weights.items()))

    @holds_output_dir("run_dir")
    def fit_labels(self, paths: Sequence[str], labels: Sequence[float], *, run_dir=None, resume: bool = False,
                   overwrite: bool = False, crop=None, val_pairs=None, references=None, reference_crop=None,
                   anchor_transform=None) -> CRLUIQA:
        """Train on given (pseudo-)labels, skipping the labelling step.

        The anchored head (the default) needs the ``references`` the labels were computed against.
        """
        from .io import list_images
        from .training import train

        res = train(paths, labels, config=self.train_config, model_config=self.model_config, weights=self.weights,
                    run_dir=run_dir, resume=resume, overwrite=overwrite, device=self.device, crop=crop, num_workers=self.num_workers,
                    val_pairs=val_pairs, progress=self.progress,
                    extra_meta={"pseudo_label_config": asdict(self.pseudo)},
                    references=list_images(references) if references is not None else None,
                    reference_crop=reference_crop if reference_crop is not None else crop,
                    anchor_transform=anchor_transform)
        self.model_ = res.model
        self.history_ = res.history
        self.failures_ = list(res.failures)
        self.kept_epoch_ = res.kept_epoch
        self.warnings_ = res.warnings
        return self

    # ---------------------------------------------------------- parameters
    def get_params(self, deep: bool = True) -> dict:
        """The settings as given to the constructor (scikit-learn's protocol; ``deep`` has nothing to expand)."""
        return dict(self._params)

    def set_params(self, **params) -> CRLUIQA:
        """Change settings for the next :meth:`fit`, checked as the constructor checks them; a fitted model is kept.

        Settings given together (``train_config`` and training keywords, ``image_size`` and ``model_config``)
        must agree, as in the constructor.
        """
        new = type(self)(**{**self._params, **params})
        for name in ("_params", "pseudo", "weights", "device", "batch_size_eval", "num_workers", "progress",
                     "train_config", "model_config", "calibrate_margins"):
            setattr(self, name, getattr(new, name))
        return self

    def __repr__(self) -> str:
        defaults = _init_defaults()
        shown = [f"{k}={v!r}" for k, v in self._params.items() if k not in defaults or not _same(v, defaults[k])]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __sklearn_is_fitted__(self) -> bool:
        """For ``sklearn.utils.validation.check_is_fitted``: the fitted attributes exist (as None) before fit too."""
        return self.model_ is not None

    # -------------------------------------------------------------- predict
    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise NotFittedError("this CRLUIQA is not fitted yet: call fit() or CRLUIQA.load(run_dir)")

    def predict(self, images, *, crop=None, strict: bool = True) -> np.ndarray:
        """Quality scores of ``images``, higher = better: files (any source :func:`crl_uiqa.io.list_images`
        takes) or images in memory (a numpy array or a stack of them, ``(N, H, W[, C])`` or channel-first
        ``(N, C, H, W)``, PIL images, tensors: :func:`crl_uiqa.scoring.score_arrays`, which scores an array as its
        file; :func:`crl_uiqa.scoring.as_image_list` says what is one image).

        An unreadable file raises (``strict=True``) or gets NaN at its place
        (``strict=False``); use :meth:`score_files` to get the failures listed.
        A file named directly (in a list or as the source) that does not exist
        raises :class:`crl_uiqa.errors.NotFoundError` either way, as the command
        line refuses it before any work; one listed in a manifest or ``.txt``
        list is an unreadable file. An image in memory that cannot be converted
        always raises.
        """
        from . import validate as v
        from .scoring import is_in_memory, score_arrays

        crop, strict = v.crop("crop", crop), v.boolean("strict", strict)
        if is_in_memory(images):
            self._check_fitted()
            return score_arrays(self.model_, images, batch_size=self.batch_size_eval, device=self.device, crop=crop)
        res = self.score_files(images, crop=crop, strict=strict)
        if strict:
            return res.scores
        from .io import list_images

        by_path = res.as_dict()
        return np.array([by_path.get(p, np.nan) for p in list_images(images)], dtype=np.float64)

    def score_files(self, images, *, crop=None, strict: bool = False):
        """:class:`crl_uiqa.scoring.Scores` of image files (unreadable ones skipped and listed)."""
        from . import validate as v
        from .io import list_images
        from .scoring import score_paths

        self._check_fitted()
        crop, strict = v.crop("crop", crop), v.boolean("strict", strict)
        return score_paths(self.model_, list_images(images), batch_size=self.batch_size_eval, device=self.device,
                           crop=crop, strict=strict, num_workers=self.num_workers, progress=self.progress)

    def evaluate(self, pairs, *, root=None) -> dict:
        """Pairwise accuracy on ``pairs`` (a pairs CSV path or (better, worse[, type]) tuples)."""
        from .evaluation import pairwise_accuracy
        from .tables import csv_folder, pair_keys, read_pairs

        if isinstance(pairs, (str, Path)):
            root = root if root is not None else csv_folder(pairs)  # the rule of crl_uiqa.tables
            pairs = read_pairs(pairs)
        pr = pair_keys(pairs, root)
        if not pr:  # pairwise_accuracy says so, instead of list_images' "no images to read"
            return pairwise_accuracy({}, pr)
        paths = sorted({x for p in pr for x in p[:2]})
        sc = self.score_files(paths, strict=True)
        return pairwise_accuracy(sc.as_dict(), pr)

    # ------------------------------------------------------------ save/load
    def save(self, run_dir) -> Path:
        from .model import save_model

        self._check_fitted()
        return save_model(self.model_, run_dir, history=self.history_,
                          extra={"pseudo_label_config": asdict(self.pseudo)}, train_config=self.train_config)

    @classmethod
    def load(cls, run_dir, *, device="auto", **kwargs) -> CRLUIQA:
        """The estimator saved in ``run_dir`` (by :meth:`save`, ``fit`` or ``crl-uiqa fit``), ready to predict.

        ``kwargs`` are the settings of use (``batch_size_eval``, ``num_workers``, ``progress``, ``weights``); the
        model's own settings (k, layer, sizes, training) are the saved ones.
        """
        from .devices import resolve_device
        from .model import load_model

        fixed = sorted(set(kwargs) - _LOAD_PARAMS)
        if fixed:
            raise ConfigError(f"CRLUIQA.load takes {', '.join(sorted(_LOAD_PARAMS))} besides device; "
                              f"{', '.join(fixed)} {'is' if len(fixed) == 1 else 'are'} the saved model's")
        model, meta = load_model(run_dir, device=resolve_device(device))
        pl = meta.get("pseudo_label_config", {})
        est = cls(k=pl.get("k", 5), layer=pl.get("layer", "block4"), smoothing=pl.get("smoothing", True),
                  backbone=model.config.backbone, image_size=model.config.image_size, device=device,
                  train_config=TrainConfig.from_dict(meta.get("train_config", {})), model_config=model.config,
                  **kwargs)
        est.model_ = model
        est.history_ = meta.get("history", [])
        return est

