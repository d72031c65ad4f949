"""crl-uiqa: unsupervised ultrasound image quality assessment (CRL-UIQA).

The estimator is importable from the top level (``from crl_uiqa import CRLUIQA``); it is loaded on
first use, so ``import crl_uiqa`` stays cheap. The method core is flat (one module per concept);
application code lives in ``video/`` (scans, region, select, live), ``reporting/`` (HTML, figures,
score reports), ``serving/`` (the web page) and ``demo/``. See docs/architecture.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _aliases

__version__ = "0.1.0"

_aliases.install()

_LAZY = {"CRLUIQA": "crl_uiqa.estimator"}
__all__ = ["CRLUIQA", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .estimator import CRLUIQA


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))  # CRLUIQA too, before it is loaded (tab completion)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crl_uiqa' has no attribute {name!r}")
