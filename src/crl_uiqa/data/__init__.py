"""Data for crl-uiqa: a seeded simulator of fetal ultrasound sweeps with ground truth.

No patient data ships with the package; :mod:`crl_uiqa.data.simulate` renders
B-mode frames of fetal standard planes (abdomen, four-chamber heart, head) from a
3-D anatomy (:mod:`crl_uiqa.data.anatomy`) with a physical B-mode model
(:mod:`crl_uiqa.data.bmode`) and writes datasets laid out for CRL-UIQA.

The main entry points are re-exported here (imported on first use, so that
``import crl_uiqa.data`` stays cheap)::

    from crl_uiqa.data import simulate_frame, simulate_sweep, simulate_dataset
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PLANES": "simulate",
    "PARAMETERS": "simulate",
    "DEFAULT_RANGES": "simulate",
    "REFERENCE_RANGES": "simulate",
    "QUALITY_TOLERANCES": "simulate",
    "SimulatedDataset": "simulate",
    "PolarFrame": "simulate",
    "quality_factors": "simulate",
    "true_quality": "simulate",
    "simulate_polar": "simulate",
    "simulate_frame": "simulate",
    "sweep_parameters": "simulate",
    "simulate_sweep": "simulate",
    "simulate_dataset": "simulate",
    "make_pairs": "simulate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
