import pytest
import torch

from crl_uiqa.views import StrongViews, parse_strong_views, weak_view


def _batch(b=4, h=32, w=40):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 1, h, w, generator=g)


def test_weak_view_flips_only_is_exact_permutation():
    x = _batch()
    out = weak_view(x, max_rotation=0.0, generator=torch.Generator().manual_seed(0))
    for i in range(x.shape[0]):
        candidates = [x[i], x[i].flip(-1), x[i].flip(-2), x[i].flip(-1).flip(-2)]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_weak_view_is_seeded_and_random():
    x = _batch(8)
    a = weak_view(x, generator=torch.Generator().manual_seed(3))
    b = weak_view(x, generator=torch.Generator().manual_seed(3))
    c = weak_view(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_weak_view_rotation_keeps_centre_content():
    x = torch.zeros(1, 1, 33, 33)
    x[..., 16, 16] = 1.0  # the centre pixel stays put under rotation about the centre
    out = weak_view(x, max_rotation=30.0, hflip_p=0, vflip_p=0, generator=torch.Generator().manual_seed(0))
    assert out[0, 0].argmax().item() == 16 * 33 + 16


def test_parse_strong_views():
    assert parse_strong_views("paper") == ("gaussian_blur", "motion_blur")
    assert "shadow" in parse_strong_views("ultrasound")
    assert parse_strong_views("shadow, haze") == ("shadow", "haze")
    with pytest.raises(ValueError, match="unknown strong-view"):
        parse_strong_views("sharpen")


def test_strong_view_margin_is_scale_times_degree():
    sv = StrongViews(("gaussian_blur",), (0.5, 0.5), margin_scale=0.2, calibration={"gaussian_blur": 2.0})
    x = _batch()
    out, eps = sv(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.allclose(eps, torch.full((4,), 0.2 * 2.0 * 0.5))
    # blur lowers high-frequency energy
    def lap(t):
        return (t[..., 1:, :] - t[..., :-1, :]).pow(2).mean()
    assert lap(out) < lap(x)
