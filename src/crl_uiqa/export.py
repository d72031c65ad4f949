"""Export a trained quality model to ONNX or TorchScript, and run it through one interface.

Export (:func:`export_model`)
    * **ONNX** with :func:`torch.onnx.export`. Since PyTorch 2.9 the default
      exporter is the ``torch.export``-based one (``dynamo=True``), which needs
      the ``onnxscript`` package; it is used when ``onnxscript`` is importable,
      else the legacy TorchScript-based exporter (``dynamo=False``, deprecated
      upstream but still shipped) is used. ``torch.export`` cannot trace a
      data-dependent branch (the anchored head's ``if float(smooth) > 0``), so
      with ``exporter="auto"`` such a model falls back to the legacy exporter:
      the failed attempt's output is suppressed, one INFO line says why, the
      details are logged at DEBUG (``crl-uiqa -v``). ``opset`` and ``atol``
      are checked first (:func:`check_export_settings`; the opsets the
      installed torch writes: :func:`opset_range`). The graph has one input ``images``
      ``(batch, 1, H, W)`` and one output ``scores`` ``(batch,)``; the batch
      axis is dynamic, ``H x W`` is the model's training size
      (``ModelConfig.image_size``).
    * **TorchScript** with :func:`torch.jit.trace` (the model has no
      data-dependent control flow, so tracing is exact for every batch size;
      :func:`torch.jit.script` does not compile the backbone). TorchScript is
      deprecated upstream in favour of ``torch.export`` but still works in the
      PyTorch versions crl-uiqa supports.

    The exported file carries its own metadata (image size, model
    configuration, crl-uiqa version, SHA-256 of the source weights): ONNX in
    the model's ``metadata_props``, TorchScript as the extra file
    ``crl_uiqa.json``. After writing, the export is checked: its scores must
    match the PyTorch model's on random inputs (and optional real images) to
    within ``atol`` (default 1e-4), else the file is not kept.

The runtimes that run an export (and the PyTorch model itself) live in
:mod:`crl_uiqa.runtime`; their names are still importable from here.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import ConfigError, ImageError, MissingDependencyError, ModelError, NotFoundError, optional_import

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "ExportResult",
    "ExportCheckError",
    "export_model",
    "check_export_settings",
    "check_opset",
    "opset_range",
    "compare_scores",
    "default_export_path",
    "format_from_path",
]

#: Names that moved to :mod:`crl_uiqa.runtime` and are still importable from here.
_RUNTIME_NAMES = frozenset({"RUNTIMES", "Runtime", "TorchRuntime", "TorchScriptRuntime", "OnnxRuntime",
                            "load_runtime", "cpu_cores"})


def __getattr__(name: str):
    if name in _RUNTIME_NAMES:
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: Export formats and the file name :func:`default_export_path` gives them in a run directory.
FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
#: Name of the metadata entry (ONNX metadata_props key / TorchScript extra file).
META_KEY = "crl_uiqa.json"
INPUT_NAME = "images"
OUTPUT_NAME = "scores"
#: Default largest allowed |exported - PyTorch| score difference.
DEFAULT_ATOL = 1e-4

_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")


class ExportCheckError(ModelError):
    """The exported model's scores differ from the PyTorch model's by more than the tolerance.

    A :class:`~crl_uiqa.errors.ModelError` (so a ``ValueError`` too, as before): the command line reports it
    in one line with exit status 1."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The exported file.
    format : str
        ``"onnx"`` or ``"torchscript"``.
    image_size : tuple of int
        ``(H, W)`` the exported model takes.
    max_abs_diff : float or None
        Largest ``|exported - PyTorch|`` score over the check inputs
        (``None`` when the check was skipped).
    n_checked : int
        Number of images compared.
    exporter : str
        ``"dynamo"`` / ``"legacy"`` (ONNX) or ``"trace"`` (TorchScript).
    seconds : float
        Wall time of export and check.
    """

    path: Path
    format: str
    image_size: tuple[int, int]
    max_abs_diff: float | None
    n_checked: int
    exporter: str
    seconds: float


def format_from_path(path: str | os.PathLike) -> str:
    """``"onnx"`` for ``*.onnx``, ``"torchscript"`` for ``*.pt/.pth/.ts/.torchscript/.jit``.

    Raises
    ------
    crl_uiqa.errors.ConfigError
        For any other suffix.
    """
    name = str(path).lower()
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(_TORCHSCRIPT_SUFFIXES):
        return "torchscript"
    raise ConfigError(
        f"cannot tell the export format from {path}: use a .onnx file for ONNX or "
        f"{'/'.join(_TORCHSCRIPT_SUFFIXES)} for TorchScript (or give the format)"
    )


def default_export_path(run_dir: str | os.PathLike, fmt: str) -> Path:
    """Where an export of the model in ``run_dir`` goes by default (and where runtimes look first)."""
    fmt = _check_format(fmt)
    p = Path(run_dir)
    if p.suffix == ".safetensors":
        p = p.parent
    return p / FORMATS[fmt]


def _check_format(fmt: str) -> str:
    key = str(fmt).strip().lower()
    if key not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return key


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _weights_file(source: str | os.PathLike) -> Path:
    p = Path(source)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise NotFoundError(f"no trained model at {source} (expected a run directory holding model.safetensors)")
    return p


def _load_torch_model(source: Any):
    """``(QualityModel on CPU in eval mode, metadata dict)`` from a model, run directory or ``.safetensors``."""
    from .model import QualityModel, load_model

    if isinstance(source, QualityModel):
        return source, {"source": "<in-memory model>", "source_sha256": None}
    weights = _weights_file(source)
    model, _ = load_model(weights, device="cpu")
    return model, {"source": str(weights), "source_sha256": _sha256(weights)}


def _metadata(model, extra: dict) -> dict:
    from . import __version__

    return {
        "crl_uiqa_version": __version__,
        "image_size": list(model.config.image_size),
        "model_config": model.config.to_dict(),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        **extra,
    }


# ----------------------------------------------------------------------------- export


def export_model(
    source: Any,
    out: str | os.PathLike,
    fmt: str | None = None,
    *,
    check: bool = True,
    atol: float = DEFAULT_ATOL,
    check_images: Sequence[np.ndarray] | None = None,
    n_random: int = 4,
    seed: int = 0,
    exporter: str = "auto",
    opset: int | None = None,
) -> ExportResult:
    """Export a quality model to ONNX or TorchScript and check it against PyTorch.

    Parameters
    ----------
    source : QualityModel, str or os.PathLike
        The model, a run directory of ``train``/``fit`` or its ``model.safetensors``.
    out : str or os.PathLike
        Output file (written atomically; not kept when the check fails).
    fmt : {"onnx", "torchscript"}, optional
        Format; by default from the suffix of ``out`` (see :func:`format_from_path`).
    check : bool
        Compare the exported model's scores with PyTorch's (see :func:`compare_scores`).
    atol : float
        Largest allowed absolute score difference.
    check_images : sequence of numpy.ndarray, optional
        Real gray images ``(H, W)`` in ``[0, 1]`` (any size: resized to the
        model's) scored in the check besides ``n_random`` uniform-noise images.
    n_random : int
        Random images in the check; they are run as a batch of ``n_random``
        and one by one, which also exercises the dynamic batch axis.
    seed : int
        Seed of the random images.
    exporter : {"auto", "dynamo", "legacy"}
        ONNX exporter: ``torch.export``-based (``dynamo``, needs onnxscript),
        TorchScript-based (``legacy``), or ``dynamo`` when onnxscript is
        installed else ``legacy`` (``auto``). Ignored for TorchScript.
    opset : int, optional
        ONNX opset (the exporter's default when omitted).

    Returns
    -------
    ExportResult

    Raises
    ------
    ExportCheckError
        The scores differ by more than ``atol`` (nothing is written); a
        :class:`crl_uiqa.errors.ModelError`.
    crl_uiqa.errors.ConfigError
        Unknown format/exporter, a bad ``atol``, ``opset`` or ``n_random``.
    crl_uiqa.errors.MissingDependencyError
        Missing onnx/onnxscript packages.
    """
    import torch

    from .files import atomic_path

    t0 = time.perf_counter()
    out = Path(out)
    fmt = _check_format(fmt) if fmt is not None else format_from_path(out)
    check_export_settings(fmt, atol=atol, exporter=exporter, opset=opset)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < (1 if check else 0):
        raise ConfigError(f"n_random must be an integer >= {1 if check else 0}{' when checking' if check else ''}, "
                          f"got {n_random!r}")
    _warn_on_suffix(out, fmt)
    model, info = _load_torch_model(source)
    model = model.eval()
    meta = _metadata(model, info)
    h, w = (int(v) for v in model.config.image_size)
    example = torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(seed))
    # Export from a float32 CPU copy: the graph must not depend on where training left the weights.
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    model = model.to("cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
    try:
        with atomic_path(out) as tmp:
            if fmt == "onnx":
                used = _export_onnx(model, example, tmp, meta, exporter=exporter, opset=opset)
            else:
                used = _export_torchscript(model, example, tmp, meta)
            diff, n = (None, 0)
            if check:
                from .runtime import _open_export

                runtime = _open_export(Path(tmp), fmt, "cpu", None)  # the format written, whatever the suffix
                diff, n = compare_scores(model, runtime, n_random=n_random, images=check_images, seed=seed + 1)
                if not diff <= atol:  # also catches NaN
                    raise ExportCheckError(
                        f"{out}: the exported {fmt} model's scores differ from PyTorch's by up to {diff:.3g} "
                        f"(> atol {atol:g}) on {n} images; the file was not written"
                    )
    finally:
        model.to(device)
    secs = time.perf_counter() - t0
    log.info("exported %s (%s, %s) in %.1f s; max |diff| %s", out, fmt, used, secs, diff)
    return ExportResult(out, fmt, (h, w), diff, n, used, secs)


def check_export_settings(fmt: str, *, atol=DEFAULT_ATOL, exporter: str = "auto", opset=None) -> None:
    """Refuse bad export settings before any work (:class:`ConfigError`): the format, ``atol`` (a finite
    number > 0) and, for ONNX, the exporter and an ``opset`` the installed torch's exporter writes."""
    fmt = _check_format(fmt)
    _check_atol(atol)
    if fmt == "onnx":
        check_opset(opset, _check_exporter(exporter))


def _check_atol(atol) -> float:
    try:
        value = float(atol)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(atol, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"atol (--atol) must be a finite number > 0, got {atol!r}")
    return value


def _check_exporter(exporter) -> str:
    choice = str(exporter).strip().lower()
    if choice not in ("auto", "dynamo", "legacy"):
        raise ConfigError(f"exporter must be auto, dynamo or legacy (--exporter), got {exporter!r}")
    return choice


def opset_range(exporter: str = "auto") -> tuple[int, int | None]:
    """``(lowest, highest)`` ONNX opset the installed torch's ``exporter`` writes (highest None when unknown).

    From ``torch.onnx._constants`` (private, so read defensively): the legacy
    exporter stops at ``ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET``, the dynamo one
    at ``ONNX_MAX_OPSET``; ``auto`` may fall back to the legacy exporter, so
    it takes the legacy range.
    """
    try:
        from torch.onnx import _constants as c
    except ImportError:  # pragma: no cover - torch without the constants
        c = None
    lo = getattr(c, "ONNX_MIN_OPSET", 7)
    hi = getattr(c, "ONNX_MAX_OPSET", None)
    if exporter != "dynamo":
        hi = getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", hi)
    return int(lo), (int(hi) if hi is not None else None)


def check_opset(opset, exporter: str = "auto") -> int | None:
    """``opset`` (None: the exporter's default) if the installed ``exporter`` can write it, else ConfigError."""
    if opset is None:
        return None
    lo, hi = opset_range(exporter)
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or opset < lo or (hi is not None and opset > hi):
        span = f"{lo} to {hi}" if hi is not None else f">= {lo}"
        more = ""
        if exporter != "dynamo":
            dyn_hi = opset_range("dynamo")[1]
            if dyn_hi is not None and hi is not None and dyn_hi > hi:
                more = f" (--exporter dynamo writes up to {dyn_hi})"
        raise ConfigError(f"opset (--opset) must be an integer from {span} for the {exporter} ONNX exporter of "
                          f"the installed torch, got {opset!r}{more}")
    return int(opset)


def _warn_on_suffix(out: Path, fmt: str) -> None:
    try:
        implied = format_from_path(out)
    except ValueError:
        return
    if implied != fmt:
        log.warning("%s: writing the %s format although the suffix means %s; a runtime that picks the format "
                    "from the suffix will not open it", out, fmt, implied)


@contextlib.contextmanager
def _quiet_torch_export():
    """Silence deprecation warnings of torch.jit and the ONNX exporter's registry chatter."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(deprecated|legacy TorchScript-based ONNX).*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit / legacy exporter
            warnings.filterwarnings("ignore", category=torch_jit_warning_category())
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def torch_jit_warning_category():
    """The warning class torch.jit uses for its tracer warnings (``TracerWarning``)."""
    import torch

    return getattr(torch.jit, "TracerWarning", UserWarning)


@contextlib.contextmanager
def _silenced():
    """Silence an export attempt that may fail and be retried: torch's loggers (torch.export prints the whole FX
    graph as a warning when it gives up) and anything printed to stdout/stderr. Not under debug logging (-v)."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    prefixes = ("torch", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
               if n.split(".")[0] in prefixes]
    loggers += [logging.getLogger(n) for n in prefixes]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _exception_summary(exc: BaseException) -> str:
    """One short line for a (long, multi-line) exporter exception: the line after "Exception summary" when
    torch.onnx gives one, else the first line; ANSI colours dropped."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    summary = next((lines[i + 1] for i, ln in enumerate(lines[:-1]) if "Exception summary" in ln), None)
    line = summary or (lines[0] if lines else "")
    line = re.sub(r"^<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], line)
    if len(line) > 200:
        line = line[:197] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _export_onnx(model, example, path: Path, meta: dict, *, exporter: str, opset: int | None) -> str:
    import torch

    onnx = optional_import("onnx", "onnx", purpose="ONNX export")

    choice = _check_exporter(exporter)
    opset = check_opset(opset, choice)
    has_onnxscript = importlib.util.find_spec("onnxscript") is not None
    if choice == "auto":
        choice = "dynamo" if has_onnxscript else "legacy"
    if choice == "dynamo" and not has_onnxscript:
        raise MissingDependencyError("the dynamo ONNX exporter needs onnxscript: pip install onnxscript (or use exporter='legacy')")
    kwargs: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if opset is not None:
        kwargs["opset_version"] = int(opset)
    with _quiet_torch_export(), torch.no_grad():
        if choice == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            auto = str(exporter).strip().lower() == "auto"
            try:
                # a failed attempt is expected with auto (torch.export cannot trace data-dependent branches such
                # as the anchored head's): torch's chatter (the whole FX graph) is kept quiet, the details go to
                # the debug log (-v)
                with _silenced():
                    torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                                      verbose=False, dynamic_shapes=({0: batch},), **kwargs)
            except Exception as exc:
                log.debug("dynamo ONNX exporter failure", exc_info=True)
                if not auto:
                    raise ConfigError(f"the dynamo ONNX exporter failed ({_exception_summary(exc)}); "
                                     "try --exporter legacy, or -v for the details") from exc
                log.info("the dynamo ONNX exporter cannot export this model (%s); using the legacy exporter",
                         _exception_summary(exc))
                choice = "legacy"
        if choice == "legacy":
            torch.onnx.export(model, (example,), str(path), dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, **kwargs)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {META_KEY: json.dumps(meta)})
    onnx.save(proto, str(path))
    return choice


def _export_torchscript(model, example, path: Path, meta: dict) -> str:
    import torch

    with _quiet_torch_export(), torch.no_grad():
        traced = torch.jit.trace(model, (example,), check_trace=False)
        # saved in memory, then written by Python: torch's own file writer aborts the whole process (a C++
        # exception in a destructor) when the disk fills, leaving its temporary file behind
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={META_KEY: json.dumps(meta)})
    path.write_bytes(buf.getvalue())
    return "trace"


def _as_batch(images: Sequence[np.ndarray], size: tuple[int, int]):
    import torch

    from .io import to_tensor

    out = []
    for i, im in enumerate(images):
        arr = np.asarray(im, dtype=np.float32)
        if arr.ndim != 2:
            raise ImageError(f"check image {i}: expected a gray (H, W) image, got shape {arr.shape}")
        out.append(to_tensor(arr, size))
    return torch.stack(out)


def compare_scores(
    model,
    runtime: Runtime,
    *,
    n_random: int = 4,
    images: Sequence[np.ndarray] | None = None,
    seed: int = 0,
) -> tuple[float, int]:
    """Largest ``|runtime - PyTorch|`` score over random and real images.

    The ``n_random`` uniform-noise images are scored as one batch and one at
    a time (the dynamic batch axis); ``images`` (gray ``(H, W)`` arrays, any
    size) are resized to the model's image size and scored as one batch.

    Returns
    -------
    (float, int)
        The maximum absolute difference and the number of images compared.
    """
    import torch

    h, w = (int(v) for v in model.config.image_size)
    batches = []
    if n_random:
        x = torch.rand(int(n_random), 1, h, w, generator=torch.Generator().manual_seed(seed))
        batches.append(x)
        batches.extend(x[i : i + 1] for i in range(min(2, x.shape[0])))
    if images is not None and len(images):
        batches.append(_as_batch(images, (h, w)))
    if not batches:
        raise ConfigError("compare_scores needs random or real images")
    model = model.eval()
    worst, n = 0.0, 0
    for x in batches:
        with torch.inference_mode():
            ref = model(x).float().numpy()
        got = np.asarray(runtime(x), dtype=np.float32)
        if got.shape != ref.shape:
            raise ExportCheckError(f"the exported model returned shape {got.shape} for a batch of {x.shape[0]}")
        d = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
        worst = d if (np.isnan(d) or np.isnan(worst)) else max(worst, d)
        n += x.shape[0]
    return worst, n
