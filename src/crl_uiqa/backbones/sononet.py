"""SonoNet (Baumgartner et al., IEEE TMI 2017, arXiv:1612.05601) in PyTorch.

SonoNet is a fully convolutional fetal standard-plane classifier trained on
fetal ultrasound; crl-uiqa uses it as the embedding P(.) of the pseudo-labels
(paper Eq. 1) and as the pretrained trunk of the quality regressor.

Architecture of SonoNet-16 (the published Lasagne model, ported by layout):

* input 1 x 224 x 288 gray; each image standardised by its own mean and
  standard deviation and multiplied by 255 (the network was trained that way;
  done inside :meth:`SonoNet.forward`, so callers pass images in [0, 1]);
* 13 conv 3x3 (pad 1) layers in blocks of 2, 2, 3, 3, 3 with 16, 32, 64, 128,
  128 channels, max-pool 2 after blocks 1-4;
* adaptation: 1x1 conv to 64 and 1x1 conv to 14 classes;
* every conv is followed by batch norm and (except the last) ReLU; global
  average pooling of the 14 class maps gives the logits.

The ``.npz`` holds ``arr_0 ... arr_74`` in layer order, five per layer: conv
weight (no bias), BN beta, BN gamma, BN running mean, BN inverse std (Lasagne,
epsilon 1e-4). The published SonoNet layers were built with
``flip_filters=False`` (cross-correlation, as PyTorch's), so the stored kernels
are used as they are; flipping them drops the example planes from 13/13 to
6/13 correct.

SmallNet (same repository) is the lighter plane classifier without batch norm:
conv 7x7/2 (32, no padding) + max-pool 2, conv 5x5/2 (64, no padding) + max-pool 2,
conv 3x3 (128) twice, 1x1 conv to 64, 1x1 conv to 14, every conv but the last
followed by ReLU, global average pooling. Unlike SonoNet its Lasagne layers
flip their kernels (the default ``flip_filters=True``), so its kernels are
flipped here; that port classifies 12 of the 13 example planes (unflipped: 6).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError, WeightsError
from ..weights import resolve_weights

CLASS_NAMES: tuple[str, ...] = (
    "3VV",
    "4CH",
    "Abdominal",
    "Background",
    "Brain (Cb.)",
    "Brain (Tv.)",
    "Femur",
    "Kidneys",
    "Lips",
    "LVOT",
    "Profile",
    "RVOT",
    "Spine (cor.)",
    "Spine (sag.)",
)

INPUT_SIZE = (224, 288)
LASAGNE_BN_EPS = 1e-4


def standardize(x: torch.Tensor, scale: float = 255.0, eps: float = 1e-6) -> torch.Tensor:
    """Per-image standardisation used to train SonoNet: (x - mean) / std * scale.

    Note the consequence for quality assessment: a global change of gain or
    contrast (a linear intensity map) is invisible to SonoNet.
    """
    flat = x.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1).view(-1, 1, 1, 1)
    return (x - mean) / (std + eps) * scale


def _conv_bn_relu(cin: int, cout: int, k: int, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout, eps=LASAGNE_BN_EPS),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SonoNet(nn.Module):
    """SonoNet-16/32/64 with named embeddings.

    Parameters
    ----------
    features:
        16, 32 or 64: the width of the first block (SonoNet-16 is published here).
    num_classes:
        number of plane classes (14 for the published models).

    Embedding layers (:meth:`embed`): ``block1`` ... ``block5`` (global average
    of each conv block's output, ``block5`` = the pooled last conv block, 128-d
    for SonoNet-16), ``adaptation`` (the pooled 64-d pre-logit layer),
    ``logits`` (14) and ``probs`` (softmax of the logits).
    """

    embedding_layers = ("block1", "block2", "block3", "block4", "block5", "adaptation", "logits", "probs")
    class_names = CLASS_NAMES
    input_size = INPUT_SIZE

    def __init__(self, features: int = 16, num_classes: int = 14):
        super().__init__()
        w = [features, features * 2, features * 4, features * 8, features * 8]
        depth = [2, 2, 3, 3, 3]
        blocks = []
        cin = 1
        for width, n in zip(w, depth):
            layers = []
            for _ in range(n):
                layers.append(_conv_bn_relu(cin, width, 3))
                cin = width
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.adaptation = nn.Sequential(
            _conv_bn_relu(cin, 64, 1), _conv_bn_relu(64, num_classes, 1, relu=False)
        )
        self.out_channels = cin  # channels of the trunk's last feature map
        self.num_classes = num_classes

    # -- trunk ------------------------------------------------------------
    def feature_maps(self, x: torch.Tensor, until: str = "block5", standardized: bool = False) -> torch.Tensor:
        """Conv feature map after block ``until`` (``block1``..``block5``) for images in [0, 1]."""
        if not standardized:
            x = standardize(x)
        last = int(until.removeprefix("block"))
        for i, block in enumerate(self.blocks[:last]):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 14) for gray images (B, 1, H, W) in [0, 1]."""
        return self.class_maps(x).mean(dim=(2, 3))

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The category-specific feature maps (B, 14, h, w) whose global averages are the logits: where in the
        image each class is seen (SonoNet's weakly supervised localisation, Baumgartner et al. 2017)."""
        return self.adaptation(self.feature_maps(x))

    def embedding_map(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The feature map (B, D, h, w) whose global average is ``embed(x, layer)``, for ``block1``..``block5``
        and ``adaptation`` (the anchored quality head learns its correction on it)."""
        if layer.startswith("block") and layer in self.embedding_layers:
            return self.feature_maps(x, until=layer)
        if layer == "adaptation":
            return self.adaptation[0](self.feature_maps(x))
        raise ConfigError(f"SonoNet layer {layer!r} has no feature map; choose from block1..block5, adaptation")

    def embed(self, x: torch.Tensor, layer: str = "block5") -> torch.Tensor:
        """Pooled embedding (B, D) from ``layer`` (see the class docstring)."""
        if layer not in self.embedding_layers:
            raise ConfigError(f"unknown SonoNet layer {layer!r}; choose from {', '.join(self.embedding_layers)}")
        if layer.startswith("block") or layer == "adaptation":
            return self.embedding_map(x, layer).mean(dim=(2, 3))
        logits = self.adaptation(self.feature_maps(x)).mean(dim=(2, 3))
        return logits if layer == "logits" else logits.softmax(dim=1)

    # -- weights ----------------------------------------------------------
    def load_lasagne(self, path: str | os.PathLike) -> SonoNet:
        """Load the published Lasagne ``.npz`` (five arrays per layer, in order)."""
        arrays = _read_lasagne(path)
        layers = [m for m in self.modules() if isinstance(m, nn.Sequential) and isinstance(m[0], nn.Conv2d)]
        if len(arrays) != 5 * len(layers):
            raise WeightsError(f"{path}: expected {5 * len(layers)} arrays for this SonoNet, found {len(arrays)}")
        with torch.no_grad():
            for i, layer in enumerate(layers):
                w, beta, gamma, mean, inv_std = arrays[5 * i : 5 * i + 5]
                conv, bn = layer[0], layer[1]
                _copy(conv.weight, w, path, i)
                _copy(bn.bias, beta, path, i)
                _copy(bn.weight, gamma, path, i)
                _copy(bn.running_mean, mean, path, i)
                var = 1.0 / np.square(inv_std.astype(np.float64)) - LASAGNE_BN_EPS
                _copy(bn.running_var, np.maximum(var, 0.0).astype(np.float32), path, i)
        return self


class SmallNet(nn.Module):
    """SmallNet: the lighter SonoNet-family plane classifier (see the module docstring)."""

    embedding_layers = ("block1", "block2", "block3", "block4", "adaptation", "logits", "probs")
    class_names = CLASS_NAMES
    input_size = INPUT_SIZE

    def __init__(self, num_classes: int = 14):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Conv2d(1, 32, 7, stride=2), nn.Conv2d(32, 64, 5, stride=2),
                                     nn.Conv2d(64, 128, 3, padding=1), nn.Conv2d(128, 128, 3, padding=1)])
        self.adaptation = nn.ModuleList([nn.Conv2d(128, 64, 1), nn.Conv2d(64, num_classes, 1)])
        self.out_channels = 128
        self.num_classes = num_classes

    def feature_maps(self, x: torch.Tensor, until: str = "block4", standardized: bool = False) -> torch.Tensor:
        if not standardized:
            x = standardize(x)
        for i, conv in enumerate(self.blocks[: int(until.removeprefix("block"))]):
            x = F.relu(conv(x))
            if i < 2:
                x = F.max_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_maps(x).mean(dim=(2, 3))

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The class maps (B, 14, h, w) whose global averages are the logits (see :meth:`SonoNet.class_maps`)."""
        return self.adaptation[1](F.relu(self.adaptation[0](self.feature_maps(x))))

    def embedding_map(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The feature map whose global average is ``embed(x, layer)`` (``block1``..``block4``, ``adaptation``)."""
        if layer.startswith("block") and layer in self.embedding_layers:
            return self.feature_maps(x, until=layer)
        if layer == "adaptation":
            return F.relu(self.adaptation[0](self.feature_maps(x)))
        raise ConfigError(f"SmallNet layer {layer!r} has no feature map; choose from block1..block4, adaptation")

    def embed(self, x: torch.Tensor, layer: str = "block4") -> torch.Tensor:
        if layer not in self.embedding_layers:
            raise ConfigError(f"unknown SmallNet layer {layer!r}; choose from {', '.join(self.embedding_layers)}")
        if layer.startswith("block") or layer == "adaptation":
            return self.embedding_map(x, layer).mean(dim=(2, 3))
        logits = self.adaptation[1](F.relu(self.adaptation[0](self.feature_maps(x)))).mean(dim=(2, 3))
        return logits if layer == "logits" else logits.softmax(dim=1)

    def load_lasagne(self, path: str | os.PathLike) -> SmallNet:
        arrays = _read_lasagne(path)
        convs = list(self.blocks) + list(self.adaptation)
        if len(arrays) != 2 * len(convs):
            raise WeightsError(f"{path}: expected {2 * len(convs)} arrays for SmallNet, found {len(arrays)}")
        with torch.no_grad():
            for i, conv in enumerate(convs):
                w, b = arrays[2 * i : 2 * i + 2]
                _copy(conv.weight, w[:, :, ::-1, ::-1], path, i)  # Lasagne flip_filters=True
                _copy(conv.bias, b, path, i)
        return self


def smallnet(weights: str | os.PathLike | None = None, pretrained: bool = True) -> SmallNet:
    """SmallNet with the published weights."""
    model = SmallNet()
    if pretrained:
        model.load_lasagne(resolve_weights("SmallNet.npz", weights))
    return model.eval()


def _read_lasagne(path: str | os.PathLike) -> list[np.ndarray]:
    """The Lasagne arrays ``arr_0 ... arr_N`` in order, from the published ``.npz`` or from the
    safetensors copy shipped in the package (the same arrays under the same names);
    :class:`WeightsError` for anything else."""
    import zipfile

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            data = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - SafetensorError and friends for damaged files
            raise WeightsError(f"{path}: damaged or not a safetensors weight file ({exc})") from None
        return [data[n] for n in _lasagne_names(list(data), path)]
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"{path}: not a .npz weight file (a zip archive of numpy arrays, as the published "
                           "SonoNet weights are)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return [_plain_array(data, n, path) for n in _lasagne_names(list(data.files), path)]
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip and numpy raise many types for damaged archives
        raise WeightsError(f"{path}: damaged .npz weight file ({type(exc).__name__})") from None


def _lasagne_names(names: list[str], path: Path) -> list[str]:
    import re

    if not names or not all(re.fullmatch(r"arr_\d+", n) for n in names):
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise WeightsError(f"{path}: not SonoNet-family weights (arrays arr_0, arr_1, ... expected; "
                           f"found {shown or 'no arrays'})")
    return sorted(names, key=lambda s: int(s[4:]))


def _plain_array(data, name: str, path: Path) -> np.ndarray:
    try:
        arr = data[name]
    except ValueError:  # an object array: it would need pickle, which is never used
        raise WeightsError(f"{path}: array {name} holds Python objects, not numbers: not a weight file") from None
    if arr.dtype.kind not in "fiu":
        raise WeightsError(f"{path}: array {name} has type {arr.dtype}, numbers expected")
    return arr


def _is_lasagne_safetensors(path: str | os.PathLike) -> bool:
    """True for a safetensors file holding the published Lasagne arrays (the packaged weights)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            return "lasagne-arrays" in ((fh.metadata() or {}).get("crl_uiqa") or "")
    except Exception:  # not a readable safetensors file: load_sononet says why
        return False


def _copy(dst: torch.Tensor, src: np.ndarray, path, layer: int) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise WeightsError(f"{path}: layer {layer} has shape {src.shape}, model expects {tuple(dst.shape)}")
    if not np.all(np.isfinite(src)):
        raise WeightsError(f"{path}: layer {layer} holds NaN or inf")
    dst.copy_(torch.from_numpy(np.array(src, dtype=np.float32, order="C", copy=True)))


def sononet16(weights: str | os.PathLike | None = None, pretrained: bool = True) -> SonoNet:
    """SonoNet-16 with the published fetal standard-plane weights.

    ``weights`` may also name a ``.safetensors`` file written by
    :func:`save_sononet` (a SonoNet-16 trained or fine-tuned on your own planes,
    with its class names in the metadata).
    """
    if weights is not None and str(weights).endswith(".safetensors") and not _is_lasagne_safetensors(weights):
        return load_sononet(weights)
    model = SonoNet(16)
    if pretrained:
        model.load_lasagne(resolve_weights("SonoNet16.npz", weights))
    return model.eval()


def save_sononet(model: SonoNet, path: str | os.PathLike) -> Path:
    """Save a SonoNet (any class count) as safetensors with its class names and width."""
    from ..checkpoint import save_tensors

    return save_tensors(path, model.state_dict(), {"kind": "sononet", "features": model.blocks[0][0][0].out_channels,
                                                   "class_names": list(model.class_names)})


def load_sononet(path: str | os.PathLike) -> SonoNet:
    """Load a SonoNet written by :func:`save_sononet` (no pickle)."""
    from ..checkpoint import load_tensors

    tensors, meta = load_tensors(path)
    if meta.get("kind") != "sononet" or not isinstance(meta.get("class_names"), list):
        raise WeightsError(f"{path} is not a SonoNet checkpoint (written by crl_uiqa.backbones.save_sononet)")
    names = tuple(str(n) for n in meta["class_names"])
    try:
        model = SonoNet(int(meta.get("features", 16)), num_classes=len(names))
        model.class_names = names
        model.load_state_dict(tensors)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: does not match its SonoNet description ({str(exc).splitlines()[0]})") from None
    return model.eval()
