"""Checkpoints without pickle, one atomic file each, checked when loaded.

A ``.safetensors`` file holds the tensors and, in its header's metadata, the
JSON description (model and training settings, epoch, optimizer state,
history) and a SHA-256 of tensors + description. One file is one atomic unit:
it is written to a temporary name and renamed into place, so a run killed at
any moment leaves either the previous checkpoint or the new one, never a
tensor file paired with another epoch's description. The ``.json`` beside it
is a readable copy written afterwards; loading uses the embedded description
and refuses a copy whose ``model_config`` disagrees with it (an edited
``image_size`` would otherwise score at the wrong size).

Loading refuses, each with one line naming the file: a missing, truncated or
foreign file, a header that is not crl-uiqa's, a checksum mismatch (flipped
bytes, edited settings) and NaN or inf weights. Files of format 1 (description
in the ``.json`` only, no checksum) still load.

A run directory holds ``model.*`` (the final model) and ``last.*`` (the latest
epoch, optimizer included, for ``--resume``); :func:`check_run_dir` keeps a
new run from silently replacing an interrupted or finished one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as serialize_tensors

from .errors import ModelError, NotFoundError, OutputError
from .files import _json_default, write_bytes, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
META_KEY = "crl_uiqa"  # the JSON description, in the safetensors header's __metadata__
SUM_KEY = "crl_uiqa.sha256"  # SHA-256 of the tensors and the description

#: what a run directory of ``fit``/``train`` holds (removed by ``--overwrite``)
RUN_FILES = ("last.safetensors", "last.json", "model.safetensors", "model.json", "history.csv",
             "training_curves.png", "labels.csv", "skipped.csv", "fit.json")


def content_digest(tensors: dict[str, torch.Tensor], meta_text: str) -> str:
    """SHA-256 of every tensor (name, dtype, shape, bytes; names sorted) and of the description text."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(meta_text.encode("utf-8"))
    return h.hexdigest()


def _meta_text(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True, default=_json_default)


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict, *,
                 sidecar: bool = True) -> Path:
    """Write ``path`` (.safetensors, description and checksum inside) atomically, then its ``.json`` copy."""
    path = Path(path)
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"format_version": FORMAT_VERSION, **meta}
    text = _meta_text(meta)
    # serialized in memory and written by Python: safetensors' own file writer reports a full disk as a
    # SafetensorError, not the OSError (ENOSPC) that write_bytes turns into one line naming the file
    write_bytes(path, serialize_tensors(clean, metadata={META_KEY: text, SUM_KEY: content_digest(clean, text)}))
    if sidecar:
        write_json(path.with_suffix(".json"), json.loads(text))
    return path


def read_json_object(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """A JSON object from ``path``, or :class:`ModelError` naming the file (invalid JSON, not an object)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not a {what} (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:  # json's decoder recurses once per nested [ or {
        raise ModelError(f"{path}: not a {what} (its JSON is nested too deeply)") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: a {what} must hold a JSON object, found {type(obj).__name__}")
    return obj


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu", *,
                 finite: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a tensor file and its description, verified (see the module docstring).

    ``finite=True`` refuses NaN or inf in any floating tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path), device="cpu")
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        from .export import _TORCHSCRIPT_SUFFIXES

        if path.name.lower().endswith((".onnx", *_TORCHSCRIPT_SUFFIXES)):  # not "damaged": the wrong kind of model
            raise ModelError(f"{path}: an exported model (ONNX/TorchScript), not a trained one: give the run "
                             "directory it was exported from (select and live run an export as it is)") from None
        raise ModelError(f"{path}: damaged or not a safetensors file ({exc})") from None
    sidecar = path.with_suffix(".json")
    if META_KEY in header:
        try:
            meta = json.loads(header[META_KEY])
        except (json.JSONDecodeError, RecursionError):
            raise ModelError(f"{path}: its embedded description is not valid JSON (damaged file)") from None
        if not isinstance(meta, dict):
            raise ModelError(f"{path}: its embedded description is not a JSON object (damaged file)")
        if header.get(SUM_KEY) != content_digest(tensors, header[META_KEY]):
            raise ModelError(f"{path}: checksum mismatch: the weights or settings changed after saving "
                             "(damaged or edited file)")
        if sidecar.is_file():
            _check_sidecar(sidecar, meta, path)
    else:  # format 1: the description lives only in the sidecar, without checksum
        if not sidecar.is_file():
            raise ModelError(f"{path}: no crl-uiqa description (neither embedded nor in {sidecar.name})")
        meta = read_json_object(sidecar, "crl-uiqa model description")
        log.warning("%s has no checksum (written by crl-uiqa before format 2); it cannot be verified", path)
    if int(meta.get("format_version", 0) or 0) > FORMAT_VERSION:
        raise ModelError(f"{path} was written by a newer crl-uiqa (format {meta['format_version']})")
    if finite:
        for name, t in tensors.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise ModelError(f"{path}: tensor {name} holds NaN or inf values (a diverged or damaged model)")
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def _check_sidecar(sidecar: Path, meta: dict, path: Path) -> None:
    side = read_json_object(sidecar, "crl-uiqa model description")
    for key in ("model_config",):  # (a copy one epoch behind, left by a kill, is harmless)
        if key in side and key in meta and side[key] != meta[key]:
            fields = ""
            if isinstance(side[key], dict) and isinstance(meta[key], dict):
                fields = ", ".join(sorted(k for k in set(side[key]) | set(meta[key]) if side[key].get(k) != meta[key].get(k)))
            raise ModelError(f"{sidecar}: {key} {('(' + fields + ') ') if fields else ''}differs from the one stored "
                             f"in {path.name}: the JSON was edited after saving; restore it or delete it")


def check_run_dir(run_dir: str | os.PathLike, *, resume: bool, overwrite: bool,
                  files: Iterable[str] = RUN_FILES) -> None:
    """Refuse to start a new run over an interrupted or finished one unless ``overwrite`` (which removes it).

    Also refuses a ``run_dir`` that is a file or cannot be created or written, and, even with ``overwrite``, a file
    named like a run's that no crl-uiqa run wrote (:func:`crl_uiqa.files.check_outputs_free`; a run folder from before
    records were kept is recognised by its ``model.json`` or ``last.json``). ``resume`` takes the files present as
    the run's own.
    """
    from .files import OUTPUTS_RECORD, adopt_outputs, check_output_dir, check_outputs_free

    run_dir = Path(run_dir)
    check_output_dir(run_dir)
    present = [f for f in files if (run_dir / f).exists() or (run_dir / f).is_symlink()]
    if not present:
        return
    if resume:
        adopt_outputs(run_dir, present)
        return
    earlier = not (run_dir / OUTPUTS_RECORD).exists() and any((run_dir / f).is_file() for f in ("model.json", "last.json"))
    check_outputs_free(run_dir, present, also=lambda rel: earlier)
    if not overwrite:
        state = "a finished" if "model.safetensors" in present else "an interrupted"
        raise OutputError(f"{run_dir} already holds {state} run ({', '.join(present)}); continue it with --resume "
                          "or replace it with --overwrite")
    for f in present:
        (run_dir / f).unlink()


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors and JSON-able rest."""
    sd = opt.state_dict()
    tensors, state_meta = {}, {}
    for pid, st in sd["state"].items():
        state_meta[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                state_meta[str(pid)][k] = v
    return tensors, {"param_groups": sd["param_groups"], "state": state_meta}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {int(pid): dict(v) for pid, v in meta["state"].items()}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def inputs_digest(*parts: Any) -> str:
    """SHA-256 of JSON-able inputs (paths, labels...) identifying what a run trains on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=_json_default).encode()).hexdigest()
