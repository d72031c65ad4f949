"""The CRL-UIQA losses, exactly as the paper's Eq. 4-7.

``p`` are predictions on the source view, ``q`` the pseudo-labels, ``p_weak``
predictions on the weakly augmented view and ``p_strong`` on the strongly
augmented view, ``eps`` the per-sample margin epsilon_i.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PAPER_WEIGHTS = {"alpha": 0.05, "theta": 0.1, "beta": 0.1}


def distillation_loss(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Eq. 4: L_d = mean((q - p)^2), regression onto the pseudo-labels."""
    return torch.mean((q - p) ** 2)


def consistency_loss(p_weak: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Eq. 5: L_c = mean((p_hat - p)^2) between weak and source views."""
    return torch.mean((p_weak - p) ** 2)


def relativity_loss(p_strong: torch.Tensor, p: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """Eq. 6: L_r = mean(max(p(x') - p(x) + eps, 0)); the source must beat its corruption by eps."""
    return torch.mean(torch.clamp(p_strong - p + eps, min=0.0))


@dataclass(frozen=True)
class LossWeights:
    """Trade-off weights of Eq. 7 (paper: alpha 0.05, theta 0.1, beta 0.1)."""

    alpha: float = PAPER_WEIGHTS["alpha"]
    theta: float = PAPER_WEIGHTS["theta"]
    beta: float = PAPER_WEIGHTS["beta"]


def total_loss(
    p: torch.Tensor,
    q: torch.Tensor,
    p_weak: torch.Tensor | None = None,
    p_strong: torch.Tensor | None = None,
    eps: torch.Tensor | float = 0.0,
    weights: LossWeights = LossWeights(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 7: L = alpha*L_d + theta*L_c + beta*L_r; a view left out (None) drops its term.

    Returns the loss tensor and the float value of each term for logging.
    """
    l_d = distillation_loss(p, q)
    loss = weights.alpha * l_d
    parts = {"l_d": float(l_d.detach())}
    if p_weak is not None:
        l_c = consistency_loss(p_weak, p)
        loss = loss + weights.theta * l_c
        parts["l_c"] = float(l_c.detach())
    if p_strong is not None:
        l_r = relativity_loss(p_strong, p, eps)
        loss = loss + weights.beta * l_r
        parts["l_r"] = float(l_r.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts
