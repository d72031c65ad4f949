"""Embeddings P(x) of image files with a backbone (paper Eq. 1's P(.))."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .devices import prepare_model, resolve_device  # noqa: F401 - kept importable from here
from .errors import ConfigError, InputError, ModelError
from .io import Crop, ReadFailure, iter_batches

log = logging.getLogger(__name__)


def paths_file(path: str | os.PathLike) -> Path:
    """The list of image paths beside a ``.npy`` of embeddings (``X.npy`` -> ``X.paths.txt``)."""
    return Path(path).with_suffix(".paths.txt")


@dataclass
class Embeddings:
    """Embeddings of the readable images, in input order, and the files that failed."""

    paths: list[str]
    vectors: np.ndarray  # (N, D) float32
    layer: str
    failures: list[ReadFailure] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> Path:
        """Save as ``.npy`` (vectors only, paths in a sibling ``.paths.txt``) or ``.safetensors``."""
        import io

        from .files import atomic_path, text_bytes, write_bytes

        path = Path(path)
        check_one_line_paths(self.paths)
        # serialized in memory, then written by Python: the libraries' own file writers report a full disk as
        # SafetensorError or "N requested and M written", not the OSError (ENOSPC) that files.py names in one line
        if path.suffix == ".safetensors":
            from safetensors.numpy import save

            write_bytes(path, save({"embeddings": self.vectors},
                                   metadata={"layer": self.layer, "paths": "\n".join(self.paths)}))
        elif path.suffix == ".npy":
            buf = io.BytesIO()
            np.save(buf, self.vectors)
            # the vectors and their paths are one output: both are written before either replaces its previous
            # version, so a failure (a full disk at the second file) never pairs new vectors with old paths
            side = paths_file(path)
            listing = text_bytes(side, "\n".join(self.paths) + "\n")
            with atomic_path(path) as tmp:
                tmp.write_bytes(buf.getvalue())
                with atomic_path(side) as side_tmp:  # inside: a failure here is named by the file it is about
                    side_tmp.write_bytes(listing)
        else:
            check_embeddings_path(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embeddings:
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                vec = fh.get_tensor("embeddings")
            paths = meta.get("paths", "").split("\n") if meta.get("paths") else []
            layer = meta.get("layer", "")
        else:
            vec = np.load(path, allow_pickle=False)
            side = paths_file(path)
            # "\n" alone ends a line, as save wrote it (splitlines would also split names at \r, \x85, \u2028...)
            text = side.read_bytes().decode("utf-8").removesuffix("\n") if side.exists() else ""  # no newline translation
            paths = text.split("\n") if text else []
            layer = ""
        if paths and len(paths) != len(vec):
            raise InputError(f"{path}: {len(paths)} paths for {len(vec)} embeddings; the two do not belong together")
        return cls(paths, vec, layer)


def check_one_line_paths(paths: Sequence[str]) -> None:
    """Refuse a path with a line break: the ``.paths.txt`` beside an embedding (one path per line) cannot hold it, and
    every later line would name the wrong vector."""
    for p in paths:
        if "\n" in p:
            from .errors import InputError

            raise InputError(f"{p!r}: a file name with a line break cannot be listed one path per line beside the "
                             "embeddings; rename it")


def check_embeddings_path(path: str | os.PathLike) -> None:
    """Refuse an embeddings output that is neither ``.npy`` nor ``.safetensors`` (``embed`` checks it before any
    work: :meth:`Embeddings.save` refused it only after every image was embedded)."""
    if Path(path).suffix not in (".npy", ".safetensors"):
        raise ConfigError(f"embedding output must end in .npy or .safetensors, got {path}")


def check_layer(model: torch.nn.Module, layer: str, name: str | None = None) -> None:
    """Refuse, before any image is read, a ``layer`` the backbone does not list in its ``embedding_layers`` (``embed
    --layer`` was refused by the first forward pass, after decoding a batch)."""
    layers = getattr(model, "embedding_layers", None)
    if layers is not None and layer not in layers:
        raise ConfigError(f"layer (--layer) {layer!r} is not a layer of {name or type(model).__name__}; choose from "
                          f"{', '.join(layers)}")


@torch.inference_mode()
def compute_embeddings(
    paths: Sequence[str],
    backbone: torch.nn.Module,
    *,
    layer: str = "block4",
    size: tuple[int, int] | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = "auto",
    crop: Crop | None = None,
    strict: bool = False,
    num_workers: int | None = None,
    progress: bool | str = True,
) -> Embeddings:
    """Embed image files with ``backbone.embed(x, layer)``.

    Images are resized to ``size`` (default: the backbone's ``input_size``).
    NaN or inf in an embedding is an error (it would poison every distance).
    """
    check_layer(backbone, layer)
    dev = resolve_device(device)
    model = prepare_model(backbone, dev)
    size = tuple(size or getattr(backbone, "input_size", (224, 288)))
    failures: list[ReadFailure] = []
    chunks, kept = [], []
    desc = progress if isinstance(progress, str) else f"embedding ({layer})"
    for batch in iter_batches(paths, size=size, batch_size=batch_size, crop=crop, strict=strict,
                              num_workers=num_workers, failures=failures, progress=desc if progress else False):
        x = batch.images.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
        chunks.append(model.embed(x, layer).float().cpu())
        kept.extend(batch.indices)
    if not chunks:
        raise InputError(f"none of the {len(paths)} images could be read (first failure: {failures[0].path}: {failures[0].reason})")
    vectors = torch.cat(chunks).numpy()
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        first = paths[kept[int(np.flatnonzero(bad)[0])]]
        raise ModelError(f"{int(bad.sum())} embedding(s) contain NaN or inf (first: {first})")
    return Embeddings([paths[i] for i in kept], vectors, layer, failures)
