"""The models a server offers: run folders (or exported files), loaded once at start.

``--model`` names a run folder of ``fit``/``train`` (holding
``model.safetensors``), an exported file (``.onnx``, ``.pt``), or a folder
whose sub-folders are runs; each becomes an entry of the page's models menu,
named after its folder (or file). Every model is loaded at start, so a wrong
path fails before the server listens.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, NotFoundError

log = logging.getLogger(__name__)

__all__ = ["ServedModel", "ModelRegistry", "discover_models", "PlaneChecker"]

_EXPORT_SUFFIXES = (".onnx", ".pt", ".ts", ".torchscript")


@dataclass
class ServedModel:
    """One entry of the models menu."""

    name: str
    source: Path
    runtime: Any  # crl_uiqa.runtime.Runtime

    def info(self) -> dict:
        meta = getattr(self.runtime, "meta", {}) or {}
        cfg = meta.get("model_config") or {}
        return {
            "name": self.name,
            "runtime": self.runtime.kind,
            "image_size": list(self.runtime.image_size),
            "backbone": cfg.get("backbone"),
        }


def _is_run(path: Path) -> bool:
    return (path / "model.safetensors").is_file()


def discover_models(paths: Sequence[str | os.PathLike]) -> list[tuple[str, Path]]:
    """``(name, path)`` of every model under ``paths`` (runs, exported files, folders of runs).

    Raises
    ------
    FileNotFoundError
        A path does not exist, or a folder holds no run.
    """
    found: list[tuple[str, Path]] = []
    used: set[str] = set()

    def add(path: Path) -> None:
        name = path.stem if path.is_file() else path.name
        base, k = name or "model", 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        found.append((name, path))

    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise NotFoundError(f"model not found: {p}")
        if p.is_file():
            add(p.parent if p.name == "model.safetensors" else p)
        elif _is_run(p):
            add(p)
        else:
            subs = sorted(q for q in p.iterdir() if q.is_dir() and _is_run(q))
            subs += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in _EXPORT_SUFFIXES)
            if not subs:
                raise NotFoundError(
                    f"{p}: neither a run folder (no model.safetensors) nor a folder of runs or exported models"
                )
            for q in subs:
                add(q)
    if not found:
        raise NotFoundError("no model given: pass --model RUN (a run folder of `crl-uiqa fit`)")
    return found


class ModelRegistry:
    """Loaded models by name; the first is the default."""

    def __init__(self, models: Sequence[ServedModel]) -> None:
        if not models:
            raise ConfigError("a server needs at least one model")
        self._models = {m.name: m for m in models}
        self.default = models[0].name

    @classmethod
    def load(cls, paths: Sequence[Any], *, runtime: str = "auto", device: str = "cpu",
             threads: int | None = None) -> ModelRegistry:
        """Load every model under ``paths`` (see :func:`discover_models`).

        ``paths`` may also hold :class:`crl_uiqa.runtime.Runtime` objects or
        ``(name, runtime)`` pairs (for embedding the app in Python).
        """
        from ..runtime import Runtime, load_runtime

        models: list[ServedModel] = []
        files: list[Any] = []
        for p in paths:
            if isinstance(p, Runtime):
                models.append(ServedModel(f"model-{len(models) + 1}", Path(p.source), p))
            elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], Runtime):
                models.append(ServedModel(str(p[0]), Path(p[1].source), p[1]))
            else:
                files.append(p)
        if files:
            for name, path in discover_models(files):
                rt = load_runtime(path, runtime, device=device, threads=threads)
                log.info("model %s: %s runtime at %dx%d from %s", name, rt.kind, *rt.image_size, path)
                models.append(ServedModel(name, path, rt))
        return cls(models)

    def get(self, name: str | None) -> ServedModel:
        """The model called ``name`` (the default for an empty name)."""
        key = name or self.default
        try:
            return self._models[key]
        except KeyError:
            raise KeyError(f"unknown model {key!r}; available: {', '.join(self._models)}") from None

    def __iter__(self):
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def info(self) -> list[dict]:
        return [dict(m.info(), default=m.name == self.default) for m in self]


class PlaneChecker:
    """The SonoNet-16 plane classifier of the plane check, when its weights are on this machine.

    Never downloads: a server must not reach out on its own. ``available``
    is ``False`` (with ``reason``) when no weights were found.
    """

    def __init__(self, weights: str | os.PathLike | None = None, *, model: Any = None) -> None:
        from ..backbones import CLASS_NAMES

        self.model = model
        self.reason = ""
        self.class_names: tuple[str, ...] = tuple(CLASS_NAMES)
        if model is None:
            try:
                from ..backbones import get_backbone
                from ..weights import resolve_weights

                path = resolve_weights("SonoNet16.npz", weights, download=False)
                self.model = get_backbone("sononet16", path)
            except FileNotFoundError as exc:
                if weights is not None:
                    raise
                self.reason = f"no SonoNet-16 weights on this machine (start with --plane-weights PATH): {exc}"
                log.info("plane check off: %s", self.reason)
        if self.model is not None:
            self.class_names = tuple(getattr(self.model, "class_names", ()) or self.class_names)

    @classmethod
    def off(cls, reason: str = "switched off") -> PlaneChecker:
        """A plane check that is not available (looks for no weights)."""
        self = cls.__new__(cls)
        from ..backbones import CLASS_NAMES

        self.model, self.reason, self.class_names = None, reason, tuple(CLASS_NAMES)
        return self

    @property
    def available(self) -> bool:
        return self.model is not None

    def check(self, plane: str) -> str:
        """The canonical class name of ``plane`` (``ConfigError`` when unknown or the check is off)."""
        if not self.available:
            raise ConfigError(f"the plane check is not available: {self.reason}")
        from ..classify import plane_index

        return self.class_names[plane_index(plane, self.class_names)]
