"""Eq. 4-7 against hand-computed values."""
import pytest
import torch

from crl_uiqa.losses import LossWeights, consistency_loss, distillation_loss, relativity_loss, total_loss

p = torch.tensor([0.2, 0.5, 0.9])
q = torch.tensor([0.0, 1.0, 1.0])


def test_distillation_eq4():
    # ((0-0.2)^2 + (1-0.5)^2 + (1-0.9)^2) / 3 = (0.04 + 0.25 + 0.01) / 3 = 0.1
    assert distillation_loss(p, q).item() == pytest.approx(0.1)


def test_consistency_eq5():
    p_weak = torch.tensor([0.4, 0.5, 0.6])
    # (0.2^2 + 0 + 0.3^2) / 3 = 0.13 / 3
    assert consistency_loss(p_weak, p).item() == pytest.approx(0.13 / 3)


def test_relativity_eq6_hinge():
    p_strong = torch.tensor([0.1, 0.6, 0.85])
    eps = torch.tensor([0.05, 0.1, 0.2])
    # max(0.1-0.2+0.05,0)=0 ; max(0.6-0.5+0.1,0)=0.2 ; max(0.85-0.9+0.2,0)=0.15  -> mean 0.35/3
    assert relativity_loss(p_strong, p, eps).item() == pytest.approx(0.35 / 3)


def test_relativity_zero_when_source_wins_by_margin():
    assert relativity_loss(torch.tensor([0.0]), torch.tensor([1.0]), 0.5).item() == 0.0


def test_total_eq7_paper_weights():
    p_weak = torch.tensor([0.4, 0.5, 0.6])
    p_strong = torch.tensor([0.1, 0.6, 0.85])
    eps = torch.tensor([0.05, 0.1, 0.2])
    loss, parts = total_loss(p, q, p_weak, p_strong, eps)
    expected = 0.05 * 0.1 + 0.1 * (0.13 / 3) + 0.1 * (0.35 / 3)
    assert loss.item() == pytest.approx(expected)
    assert parts["l_d"] == pytest.approx(0.1) and parts["loss"] == pytest.approx(expected)


def test_total_drops_absent_terms_and_custom_weights():
    loss, parts = total_loss(p, q, weights=LossWeights(alpha=1.0))
    assert loss.item() == pytest.approx(0.1)
    assert set(parts) == {"l_d", "loss"}


def test_losses_have_gradients():
    pp = p.clone().requires_grad_(True)
    loss, _ = total_loss(pp, q, pp * 0.9, pp - 0.05, 0.1)
    loss.backward()
    assert pp.grad is not None and torch.isfinite(pp.grad).all()
