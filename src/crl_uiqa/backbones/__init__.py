"""Pluggable embedding networks P(.) and quality-model trunks.

A backbone is a ``torch.nn.Module`` that takes gray images ``(B, 1, H, W)`` in
[0, 1] and offers:

* ``embed(x, layer) -> (B, D)``: a pooled embedding from a named layer
  (``embedding_layers`` lists them);
* ``feature_maps(x) -> (B, C, h, w)``: the conv trunk used by the quality
  model, with ``out_channels = C``;
* ``input_size``: the (H, W) it was trained at.

Backbones are looked up by name in a small registry. Besides the built-in
``sononet16`` and ``smallnet``, any importable builder can serve: ``python:package.module:function``
names a function ``function(weights=None) -> nn.Module`` following the protocol
above (e.g. a wrapper around a timm/torchvision model with your own weights).
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .sononet import CLASS_NAMES, SmallNet, SonoNet, smallnet, sononet16

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}
_MIN_SIZE: dict[str, int] = {}
_BLOCKS: dict[str, int] = {}


def register_backbone(name: str, builder: Builder | None = None, *, min_input_size: int = 1,
                      blocks: int | None = None):
    """Register ``builder(weights=None, pretrained=True) -> nn.Module`` under ``name``.

    ``min_input_size`` is the smallest image side the network accepts and
    ``blocks`` the number of trunk blocks ``train_from`` may name (settings
    beyond them are refused before any work). Usable as a decorator:
    ``@register_backbone("mynet")``.
    """

    def _add(fn: Builder) -> Builder:
        _REGISTRY[name.lower()] = fn
        _MIN_SIZE[name.lower()] = int(min_input_size)
        if blocks is not None:
            _BLOCKS[name.lower()] = int(blocks)
        return fn

    return _add(builder) if builder is not None else _add


def available_backbones() -> list[str]:
    """Names accepted by :func:`get_backbone` (plus ``python:module:function``)."""
    return sorted(_REGISTRY)


_PLUGINS_ALLOWED = False


def allow_plugin_backbones(allowed: bool = True) -> None:
    """Let model files that name a ``python:module:function`` backbone load (command line: ``--allow-plugin-backbones``)."""
    global _PLUGINS_ALLOWED
    _PLUGINS_ALLOWED = bool(allowed)


def plugins_allowed() -> bool:
    """Whether loading a model may import the plug-in backbone it names (off unless asked for)."""
    return _PLUGINS_ALLOWED


def is_plugin(name: str) -> bool:
    """Whether ``name`` is a ``python:module:function`` plug-in (code named by a string)."""
    return str(name).lower().startswith("python:")


def check_backbone_name(name: str) -> str:
    """``name`` if it is a registered backbone or a ``python:module:function`` plug-in; else ConfigError."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backbone must be a name, got {name!r}")
    if is_plugin(name):
        if len(name.split(":")) != 3 or not all(name.split(":")[1:]):
            raise ConfigError(f"plug-in backbone must be python:package.module:function, got {name!r}")
        return name
    if name.lower() not in _REGISTRY:
        raise ConfigError(f"unknown backbone {name!r}; choose from {', '.join(available_backbones())} "
                          "or give python:package.module:function")
    return name


def trunk_blocks(name: str) -> int | None:
    """Number of trunk blocks of backbone ``name`` (None when unknown, e.g. plug-ins)."""
    return _BLOCKS.get(str(name).lower())


def min_input_size(name: str) -> int:
    """Smallest image side backbone ``name`` accepts (1 when unknown, e.g. plug-ins)."""
    return _MIN_SIZE.get(str(name).lower(), 1)


def get_backbone(
    name: str = "sononet16",
    weights: str | os.PathLike | None = None,
    *,
    pretrained: bool = True,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Build backbone ``name`` in eval mode, with pretrained weights by default."""
    key = name.lower()
    if key.startswith("python:"):
        # the plug-in is code the user named: whatever goes wrong in it is reported as their error (one line,
        # exit 1), not as a bug of crl-uiqa; -v prints its traceback
        try:
            _, mod, fn = name.split(":", 2)
            builder = getattr(importlib.import_module(mod), fn)
        except (ValueError, ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import backbone builder {name!r}: {exc}") from exc
        except Exception as exc:  # an error while importing the plug-in's module
            raise ConfigError(f"backbone plugin {name} failed on import: {type(exc).__name__}: {exc}") from exc
        try:
            model = builder(weights=weights)
        except Exception as exc:
            raise ConfigError(f"backbone plugin {name} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ConfigError(f"backbone plugin {name} returned {type(model).__name__}, not a torch.nn.Module "
                              "(see crl_uiqa.backbones docstring)")
    elif key in _REGISTRY:
        model = _REGISTRY[key](weights=weights, pretrained=pretrained)
    else:
        raise ConfigError(
            f"unknown backbone {name!r}; choose from {', '.join(available_backbones())} "
            "or give python:package.module:function"
        )
    for attr in ("embed", "feature_maps", "input_size"):
        if not hasattr(model, attr):
            raise ConfigError(f"backbone {name!r} lacks {attr!r} (see crl_uiqa.backbones docstring)")
    model.eval()
    if device is not None:
        model.to(device)
    return model


# four 2x2 max-pools (SonoNet) / two stride-2 convs and pools without padding (SmallNet)
register_backbone("sononet16", sononet16, min_input_size=16, blocks=5)
register_backbone("smallnet", smallnet, min_input_size=33, blocks=4)

__all__ = [
    "CLASS_NAMES",
    "SmallNet",
    "SonoNet",
    "smallnet",
    "allow_plugin_backbones",
    "available_backbones",
    "plugins_allowed",
    "check_backbone_name",
    "is_plugin",
    "min_input_size",
    "trunk_blocks",
    "get_backbone",
    "register_backbone",
    "sononet16",
]
