"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A run directory holds ``model.safetensors`` + ``model.json`` (the final
model) and ``last.safetensors`` + ``last.json`` (the latest epoch, optimizer
state included, for ``--resume``). Both files of a pair are written
atomically; the JSON is written last, so a JSON always describes a complete
tensor file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .files import atomic_path, write_json

FORMAT_VERSION = 1


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``path`` (.safetensors) and ``path.with_suffix('.json')`` atomically."""
    path = Path(path)
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp))
    write_json(path.with_suffix(".json"), {"format_version": FORMAT_VERSION, **meta})
    return path


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a tensor file and its JSON sidecar (clear errors when either is missing)."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"checkpoint incomplete or missing: need {path} and {meta_path}")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer crl-uiqa (format {meta['format_version']})")
    return load_file(str(path), device=str(device)), meta


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
