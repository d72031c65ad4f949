"""Inference runtimes: one interface over eager PyTorch, TorchScript and ONNX Runtime.

A :class:`Runtime` maps a batch ``(B, 1, H, W)`` float32 in ``[0, 1]`` at the
model's image size (numpy array or torch tensor) to the scores ``(B,)`` as a
float32 numpy array (higher = better quality). Three kinds: ``"torch"`` (eager
PyTorch, any device), ``"torchscript"`` (CPU or CUDA, frozen and optimised for
inference at load) and ``"onnx"`` (ONNX Runtime, CPU execution provider,
intra-op threads = CPU cores). :func:`load_runtime` opens one for a model, a
run directory or a file written by :func:`crl_uiqa.export.export_model`;
``select``, ``live`` and ``export``'s check score through this interface.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, TypeAlias

import numpy as np

from .errors import ConfigError, InputError, ModelError, NotFoundError, optional_import
from .export import (
    FORMATS,
    META_KEY,
    _quiet_torch_export,
    _sha256,
    _weights_file,
    default_export_path,
    export_model,
    format_from_path,
)

if TYPE_CHECKING:
    import torch

    from .model import QualityModel

log = logging.getLogger(__name__)

#: A device name (``"cpu"``, ``"cuda:0"``, ``"auto"``) or a :class:`torch.device`.
Device: TypeAlias = "str | torch.device"
#: What :func:`load_runtime` (and ``select``/``live``) take as a model.
ModelSource: TypeAlias = "Runtime | QualityModel | str | os.PathLike"

__all__ = ["Device", "ModelSource", "RUNTIMES", "Runtime", "TorchRuntime", "TorchScriptRuntime", "OnnxRuntime", "load_runtime", "cpu_cores",
           "check_threads", "MAX_THREADS"]

#: Runtime kinds accepted by :func:`load_runtime`.
RUNTIMES = ("torch", "torchscript", "onnx")


#: most threads ``--threads`` may ask for: ONNX Runtime starts them all when it opens a model (1024 took 14 s on two
#: cores, 4096 over 100 s, and 100000 crashed it: a C int was no bound), and threads beyond the cores only wait
MAX_THREADS = 1024


def check_threads(threads: Any, *, minimum: int = 0) -> int | None:
    """``threads`` (``--threads``) if None or an integer in [``minimum``, :data:`MAX_THREADS`] (None and 0: the CPU
    cores), else :class:`ConfigError`. ``serve`` gives ``minimum=1``: its value also goes to
    ``torch.set_num_threads``, which takes no 0."""
    from . import validate

    if threads is None:
        return None
    return validate.integer(validate.flag("threads"), threads, minimum=minimum, maximum=MAX_THREADS)


def cpu_cores() -> int:
    """CPU cores this process may use (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)



#: rounding a batch may carry beyond [0, 1] (resizing sums weights in float32)
RANGE_SLACK = 1e-4


class Runtime:
    """Scores batches of images with some inference engine (see the module docstring).

    Attributes
    ----------
    kind : str
        ``"torch"``, ``"torchscript"`` or ``"onnx"``.
    image_size : tuple of int
        ``(H, W)`` the batches must have.
    source : str
        Where the model came from (for reports).
    meta : dict
        The model's metadata (configuration, version...).
    """

    kind = "runtime"

    def __init__(self, image_size: Sequence[int], source: str, meta: dict | None = None) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.source = str(source)
        self.meta = dict(meta or {})

    def __call__(self, batch: Any) -> np.ndarray:
        """Scores ``(B,)`` float32 of a batch ``(B, 1, H, W)`` float32 in ``[0, 1]``."""
        x = self._check(batch)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._run(x), dtype=np.float32).reshape(-1)

    def _check(self, batch: Any):
        if not hasattr(batch, "shape"):  # a nested list: as the array it spells
            batch = np.asarray(batch, dtype=np.float32)
        shape = tuple(batch.shape)
        if len(shape) != 4 or shape[1] != 1 or tuple(shape[2:]) != self.image_size:
            raise InputError(
                f"{self.kind} runtime: expected a batch (B, 1, {self.image_size[0]}, {self.image_size[1]}), "
                f"got shape {shape}"
            )
        # every engine casts to float32: a uint8 frame or 0-255 floats would be scored as intensities up to 255,
        # silently wrong (the in-memory image rule of crl_uiqa.io.gray_array, for batches)
        kind = str(batch.dtype)
        if "float" not in kind:
            raise InputError(f"{self.kind} runtime: expected a float batch in [0, 1], got {kind} (divide uint8 "
                             "frames by 255, or use crl_uiqa.io.gray_array)")
        if shape[0]:
            low, high = float(batch.min()), float(batch.max())
            if not (math.isfinite(low) and math.isfinite(high)):
                raise InputError(f"{self.kind} runtime: expected a batch in [0, 1], got values that are not finite")
            if not (-RANGE_SLACK <= low and high <= 1.0 + RANGE_SLACK):
                raise InputError(f"{self.kind} runtime: expected a batch in [0, 1], got values from {low:g} to "
                                 f"{high:g} (scale it to [0, 1])")
        return batch

    def _run(self, batch: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the engine (optional; runtimes also free themselves when collected)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.source!r}, image_size={self.image_size})"


class TorchRuntime(Runtime):
    """Eager PyTorch (channels-last, inference mode; bfloat16 autocast on CUDA as in ``score``)."""

    kind = "torch"

    def __init__(self, model: QualityModel, device: Device = "cpu", source: str = "<in-memory model>",
                 meta: dict | None = None):
        from .devices import prepare_model, resolve_device

        self.device = resolve_device(device)
        self.model = prepare_model(model, self.device)
        super().__init__(model.config.image_size, source, meta or {"model_config": model.config.to_dict()})

    def _run(self, batch):
        import torch

        from .scoring import score_tensor

        x = torch.as_tensor(batch, dtype=torch.float32).to(self.device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return score_tensor(self.model, x).cpu().numpy()


class TorchScriptRuntime(Runtime):
    """A TorchScript file from :func:`export_model`, frozen and optimised for inference at load."""

    kind = "torchscript"

    def __init__(self, path: str | os.PathLike, device: Device = "cpu", *, optimize: bool = True):
        import torch

        from .devices import resolve_device

        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"TorchScript model not found: {path}")
        self.device = resolve_device(device)
        extra = {META_KEY: ""}
        try:
            with _quiet_torch_export():
                module = torch.jit.load(str(path), map_location=self.device, _extra_files=extra)
        except RuntimeError as exc:
            raise ModelError(f"{path}: not a readable TorchScript model ({exc})") from None
        meta = _parse_meta(extra[META_KEY], path)
        module.eval()
        if optimize:
            with _quiet_torch_export():
                module = torch.jit.optimize_for_inference(torch.jit.freeze(module))
        self.module = module
        super().__init__(meta["image_size"], str(path), meta)

    def _run(self, batch):
        import torch

        x = torch.as_tensor(batch, dtype=torch.float32).to(self.device)
        with torch.inference_mode():
            return self.module(x).float().cpu().numpy()


class OnnxRuntime(Runtime):
    """An ONNX file from :func:`export_model` run by ONNX Runtime on the CPU."""

    kind = "onnx"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        ort = _import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"ONNX model not found: {path}")
        opts = ort.SessionOptions()
        self.threads = int(threads) if threads else cpu_cores()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: not a readable ONNX model ({exc})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{path}: expected a model with one input, found {len(inputs)}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        if META_KEY in props:
            meta = _parse_meta(props[META_KEY], path)
        else:  # an ONNX model not written by crl-uiqa: take H, W from the input shape
            if len(shape) != 4 or not all(isinstance(v, int) for v in shape[2:]):
                raise ModelError(f"{path}: cannot tell the input image size from the input shape {shape}")
            meta = {"image_size": _checked_size([shape[2], shape[3]], path)}
        # what the frames are resized to must be what the graph takes (one gray channel): an edited description
        # or a colour model failed inside ONNX Runtime at the first batch
        fixed = [v if isinstance(v, int) else None for v in shape[1:]] if len(shape) == 4 else None
        if fixed is None or fixed[0] not in (None, 1) or any(
                f is not None and f != v for f, v in zip(fixed[1:], meta["image_size"])):
            raise ModelError(f"{path}: its input {shape} does not take (batch, 1, {meta['image_size'][0]}, "
                             f"{meta['image_size'][1]}) images, the size its {META_KEY} description gives")
        super().__init__(meta["image_size"], str(path), meta)

    def _run(self, batch):
        if hasattr(batch, "detach"):
            batch = batch.detach().cpu().numpy()
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self.input_name: x})[0]


def _parse_meta(text: str, path: Path) -> dict:
    try:
        meta = json.loads(text) if text else {}
    except (json.JSONDecodeError, RecursionError):
        meta = {}
    if not isinstance(meta, dict):  # valid JSON, but not crl-uiqa's description (a list, a number)
        meta = {}
    size = meta.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ModelError(f"{path}: not a crl-uiqa export (its {META_KEY} metadata with the image size is missing)")
    _checked_size(size, path)
    return meta


def _checked_size(size: list[int], path: Path) -> list[int]:
    """An export's image size, at most :data:`crl_uiqa.validate.MAX_IMAGE_SIDE` a side as a model's (frames are
    resized to it before the model sees them: an edited 100000 x 100000 asked for 40 GB)."""
    from .validate import MAX_IMAGE_SIDE

    if not all(isinstance(v, int) and 1 <= v <= MAX_IMAGE_SIDE for v in size):
        raise ModelError(f"{path}: its image size {size[0]}x{size[1]} is not between 1 and {MAX_IMAGE_SIDE} pixels a "
                         "side: not a model crl-uiqa exported (damaged or edited)")
    return list(size)


def _import_onnxruntime():
    return optional_import("onnxruntime", "onnx", purpose="the onnx runtime (or use --runtime torch)")


def _is_export_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() != ".safetensors"


def load_runtime(
    source: ModelSource,
    kind: str = "torch",
    *,
    device: Device = "cpu",
    threads: int | None = None,
) -> Runtime:
    """A :class:`Runtime` of the given kind for a model, run directory or exported file.

    Parameters
    ----------
    source : QualityModel, str or os.PathLike
        An in-memory model, a run directory (or its ``model.safetensors``), or
        a file written by :func:`export_model` (``.onnx``, ``.pt``...).
    kind : {"torch", "torchscript", "onnx", "auto"}
        The engine. ``"auto"``: from the file suffix, ``"torch"`` for run
        directories and models. For ``"onnx"``/``"torchscript"`` and a run
        directory, the export at :func:`default_export_path` is used when it
        was made from the current ``model.safetensors`` (same SHA-256);
        otherwise the model is exported to a temporary file first (a few
        seconds; run ``crl-uiqa export`` once to skip this).
    device : str or torch.device
        Device of the torch and torchscript runtimes (ONNX runs on the CPU).
    threads : int, optional
        ONNX Runtime intra-op threads (default, or 0: the CPU cores).

    Raises
    ------
    crl_uiqa.errors.ConfigError
        Unknown kind, a file of another format, ``threads`` not an integer in [0, :data:`MAX_THREADS`].
    crl_uiqa.errors.ModelError
        A file that is not a readable crl-uiqa export.
    crl_uiqa.errors.MissingDependencyError
        onnxruntime not installed.
    crl_uiqa.errors.NotFoundError
        No model at ``source`` (a ``FileNotFoundError``; the others are ``ValueError``).
    """
    from .model import QualityModel

    check_threads(threads)
    if not isinstance(source, (QualityModel, str, os.PathLike)):  # None was a TypeError deep in pathlib
        from .errors import ArgumentTypeError

        raise ArgumentTypeError(f"model must be a run folder or exported file (a path) or a QualityModel, got "
                                f"{type(source).__name__}")
    key = str(kind).strip().lower()
    if key == "auto":
        if isinstance(source, QualityModel):
            key = "torch"
        else:
            p = Path(source)
            key = format_from_path(p) if _is_export_file(p) else "torch"
    if key not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)} (or auto), got {kind!r}")
    if key == "onnx":
        _import_onnxruntime()  # fail early, before any export

    if isinstance(source, QualityModel):
        if key == "torch":
            return TorchRuntime(source, device)
        return _runtime_from_temp_export(source, key, device, threads)

    p = Path(source)
    if not p.exists():
        raise NotFoundError(f"no model at {p}")
    if _is_export_file(p):
        fmt = format_from_path(p)
        if fmt != key:
            raise ConfigError(f"{p} is a {fmt} export; it cannot run with the {key} runtime (use --runtime {fmt})")
        return _open_export(p, key, device, threads)
    weights = _weights_file(p)
    if key == "torch":
        from .model import load_model

        model, meta = load_model(weights, device="cpu")
        return TorchRuntime(model, device, source=str(weights), meta={"model_config": meta.get("model_config")})
    cached = default_export_path(weights, key)
    if cached.is_file():
        rt = _open_export(cached, key, device, threads)
        if rt.meta.get("source_sha256") == _sha256(weights):
            return rt
        log.warning("%s was not exported from the current %s; exporting again to a temporary file", cached, weights)
        rt.close()
    return _runtime_from_temp_export(weights, key, device, threads)


def _open_export(path: Path, kind: str, device: Device, threads: int | None) -> Runtime:
    if kind == "onnx":
        return OnnxRuntime(path, threads=threads)
    return TorchScriptRuntime(path, device)


def _runtime_from_temp_export(source: QualityModel | str | os.PathLike, kind: str, device: Device,
                              threads: int | None) -> Runtime:
    with tempfile.TemporaryDirectory(prefix="crl-uiqa-export-") as tmp:
        path = Path(tmp) / FORMATS[kind]
        log.info("exporting the model to %s for the %s runtime", kind, kind)
        export_model(source, path, kind, check=False)
        return _open_export(path, kind, device, threads)  # both engines hold the model in memory
