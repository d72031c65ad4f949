"""``crl-uiqa demo``: the whole method on built-in simulated data, offline, in a few minutes.

An application of the method core, in a room of its own as ``video/``, ``reporting/`` and ``serving/``:
:mod:`~crl_uiqa.demo.pipeline` simulates the sweeps, chooses P(.), makes the pseudo-labels, trains, scores
and picks the best frame of each held-out sweep; :mod:`~crl_uiqa.demo.report` writes the HTML report and
prints the summary. The names below are the demo's Python API (``crl_uiqa.demo.run_demo`` as before).
"""
from __future__ import annotations

from .pipeline import (
    CLASSIFIER_PLANES,
    DEMO_ANCHORED,
    DEMO_OUTPUTS,
    DEMO_PLANE,
    DEMO_PLANE_MATCH,
    DEMO_PLANE_THRESHOLD,
    DEMO_SMOOTH,
    ENCODERS,
    FRAME_COLUMNS,
    HEADS,
    SONONET_SIZE,
    DemoResult,
    DemoSettings,
    best_frame,
    demo_head,
    demo_training,
    pick_scores,
    quick,
    run_demo,
)

__all__ = ["CLASSIFIER_PLANES", "DEMO_ANCHORED", "DEMO_OUTPUTS", "DEMO_PLANE", "DEMO_PLANE_MATCH",
           "DEMO_PLANE_THRESHOLD", "DEMO_SMOOTH", "ENCODERS", "FRAME_COLUMNS", "HEADS", "SONONET_SIZE", "DemoResult",
           "DemoSettings", "best_frame", "demo_head", "demo_training", "pick_scores", "quick", "run_demo"]
