"""Standard-plane classification with SonoNet (class probabilities per image)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError, ModelError


@dataclass
class Classification:
    paths: list[str]
    probs: np.ndarray  # (N, C)
    class_names: tuple[str, ...]
    failures: list

    @property
    def planes(self) -> list[str]:
        return [self.class_names[i] for i in self.probs.argmax(axis=1)]

    def rows(self) -> list[dict]:
        out = []
        for p, pr in zip(self.paths, self.probs):
            i = int(pr.argmax())
            row = {"path": p, "plane": self.class_names[i], "probability": float(pr[i])}
            row.update({c: float(v) for c, v in zip(self.class_names, pr)})
            out.append(row)
        return out

    def to_csv(self, path):
        from .files import write_csv

        return write_csv(path, self.rows(), ["path", "plane", "probability", *self.class_names])


def plane_index(name: str, class_names=None) -> int:
    """Index of a plane by name, case- and punctuation-insensitive (``4ch``, ``brain-tv``...)."""
    from .backbones import CLASS_NAMES

    names = class_names or CLASS_NAMES

    def norm(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum())

    aliases = {"abdomen": "abdominal", "braincb": "braincb", "braintv": "braintv", "spinecor": "spinecor",
               "spinecoronal": "spinecor", "spinesag": "spinesag", "spinesagittal": "spinesag"}
    key = aliases.get(norm(name), norm(name))
    for i, c in enumerate(names):
        if norm(c) == key:
            return i
    raise ConfigError(f"unknown plane {name!r}; choose from {', '.join(names)}")


def classify_images(images, *, backbone="sononet16", weights=None, batch_size=32, device="auto", crop=None,
                    strict=False, num_workers=None, progress=True) -> Classification:
    """Class probabilities of image files with a plane classifier backbone."""
    from .backbones import get_backbone
    from .embed import compute_embeddings
    from .io import list_images

    model = get_backbone(backbone, weights) if isinstance(backbone, str) else backbone
    if "probs" not in getattr(model, "embedding_layers", ()):
        raise ModelError("this backbone is not a plane classifier (it has no 'probs' output)")
    emb = compute_embeddings(list_images(images), model, layer="probs", batch_size=batch_size, device=device,
                             crop=crop, strict=strict, num_workers=num_workers,
                             progress="classifying" if progress else False)
    return Classification(emb.paths, emb.vectors, tuple(getattr(model, "class_names", ())), emb.failures)


@torch.inference_mode()
def plane_probabilities(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax class probabilities of a batch (B, 1, H, W) in [0, 1]."""
    return model.embed(x, "probs")
