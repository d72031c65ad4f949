"""Calibrated relativity margins (crl_uiqa.calibration)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crl_uiqa.calibration import (
    FLOOR,
    calibrate_for_backbone,
    calibrate_margins,
    calibration_table,
    margin_weights,
)

torch.set_num_threads(1)

_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def stats_embed(x: torch.Tensor) -> torch.Tensor:
    """[mean, std, laplacian energy] of each image: a fixed, deterministic P(.)."""
    lap = F.conv2d(x, _LAPLACE).pow(2).mean(dim=(1, 2, 3))
    return torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)), lap], dim=1)


def near_field_embed(x: torch.Tensor) -> torch.Tensor:
    """Statistics of the first row only (the near field): blind to depth attenuation,
    which multiplies row 0 by exp(0) = 1 exactly."""
    row = x[:, 0, 0, :]
    return torch.stack([row.mean(dim=1), row.std(dim=1), (row[:, 1:] - row[:, :-1]).abs().mean(dim=1)], dim=1)


def references(n: int = 10, h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random 'anatomy' plus fine texture, in [0.05, 0.65]."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(n, 1, h // 4, w // 4, generator=g), size=(h, w), mode="bilinear",
                           align_corners=False)
    fine = torch.rand(n, 1, h, w, generator=g)
    return (0.05 + 0.45 * coarse + 0.15 * fine).clamp(0, 1)


def test_weights_average_one():
    fams = ("gaussian_blur", "motion_blur", "gaussian_noise", "speckle_noise", "attenuation", "under_gain", "haze")
    w = calibrate_margins(references(), stats_embed, fams, k=3)
    assert list(w) == list(fams)
    assert np.mean(list(w.values())) == pytest.approx(1.0, abs=1e-12)
    assert all(v >= FLOOR - 1e-12 for v in w.values())


def test_hand_computed_one_dimensional_example():
    # constant images, embedding = mean intensity, k = 1, over_gain: v -> min(1, v (1 + 2d) + 0.1 d)
    v = [0.1, 0.3, 0.4, 0.8]
    x = torch.tensor(v).view(4, 1, 1, 1).expand(4, 1, 6, 8).clone()
    embed = lambda t: t.mean(dim=(2, 3))  # noqa: E731
    t = calibration_table(x, embed, ["over_gain"], degrees=(0.5, 1.0), k=1)
    # clean leave-one-out nearest distances: 0.2, 0.1, 0.1, 0.4 -> 0.2
    assert t.baseline == pytest.approx(0.2, abs=1e-6)
    # d=0.5: 0.25, 0.65, 0.85, 1.0 -> nearest other clean: 0.05, 0.15, 0.05, 0.6 -> 0.2125 (+0.0125)
    # d=1:   0.4, 1.0, 1.0, 1.0   -> 0.0, 0.2, 0.2, 0.6 -> 0.25 (+0.05)
    assert t.delta["over_gain"] == pytest.approx((0.0125, 0.05), abs=1e-6)
    # slope through the origin: (0.5 * 0.0125 + 1 * 0.05) / (0.25 + 1) = 0.045
    assert t.slopes["over_gain"] == pytest.approx(0.045, abs=1e-6)
    rows = t.rows()
    assert rows[1] == {"family": "over_gain", "degree": 1.0, "delta_distance": pytest.approx(0.05, abs=1e-6),
                       "relative_increase": pytest.approx(0.25, abs=1e-5)}


def test_family_that_moves_embedding_more_gets_larger_weight():
    x = references()
    t = calibration_table(x, stats_embed, ["gaussian_noise", "attenuation"], k=3)
    # heavy noise multiplies the laplacian energy; attenuation dims the image smoothly
    assert t.slopes["gaussian_noise"] > t.slopes["attenuation"] > 0
    # the distance grows with the degree for noise
    assert all(a < b for a, b in zip(t.delta["gaussian_noise"], t.delta["gaussian_noise"][1:]))
    w = t.weights()
    s_n, s_a = t.slopes["gaussian_noise"], t.slopes["attenuation"]
    assert w["gaussian_noise"] == pytest.approx(2 * s_n / (s_n + s_a))
    assert w["attenuation"] == pytest.approx(2 * s_a / (s_n + s_a))
    assert w["gaussian_noise"] > w["attenuation"]


def test_blind_family_gets_floor_and_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="crl_uiqa.calibration"):
        t = calibration_table(references(), near_field_embed, ["gaussian_noise", "attenuation"], k=3)
        w = t.weights()
    assert t.delta["attenuation"] == (0.0, 0.0, 0.0, 0.0)  # row 0 is untouched: exactly blind
    assert t.slopes["attenuation"] == 0.0
    assert w == {"gaussian_noise": pytest.approx(2 - FLOOR), "attenuation": FLOOR}
    assert any("attenuation" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crl_uiqa.calibration"):
        assert "| attenuation | 0 | 0 | 0 | 0 | 0 | 0.100 |" in t.to_markdown()  # reporting does not warn again
    assert not caplog.records


def test_margin_weights_water_filling_hand_computed():
    # c * 0.001 would be far below the floor: it is raised to 0.1 with the blind family
    w = margin_weights({"a": 1.0, "b": 1.0, "c": 0.001, "d": -1.0})
    assert w == {"a": pytest.approx(1.9), "b": pytest.approx(1.9), "c": FLOOR, "d": FLOOR}
    assert margin_weights({"a": 2.0, "b": 6.0}) == {"a": pytest.approx(0.5), "b": pytest.approx(1.5)}
    assert margin_weights({"a": 3.0}) == {"a": pytest.approx(1.0)}
    assert margin_weights({"a": 1.0, "b": float("nan")}, floor=0.2) == {"a": pytest.approx(1.8), "b": 0.2}


def test_subset_weights_renormalise_and_slopes_do_not_depend_on_other_families():
    x = references()
    full = calibration_table(x, stats_embed, ["gaussian_noise", "gaussian_blur", "haze"], k=3)
    alone = calibration_table(x, stats_embed, ["haze"], k=3)
    assert alone.slopes["haze"] == full.slopes["haze"]  # seeded per family, not per position
    sub = full.weights(["gaussian_noise", "haze"])
    assert np.mean(list(sub.values())) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in this calibration table"):
        full.weights(["shadow"])


def test_deterministic_for_a_seed():
    x = references()
    fams = ["gaussian_noise", "shadow", "motion_blur"]
    a = calibration_table(x, stats_embed, fams, k=3, seed=7)
    b = calibration_table(x, stats_embed, fams, k=3, seed=7)
    c = calibration_table(x, stats_embed, fams, k=3, seed=8)
    assert a.delta == b.delta and a.weights() == b.weights()
    assert a.delta["gaussian_noise"] != c.delta["gaussian_noise"]


def test_bad_inputs():
    x = references(n=4)
    with pytest.raises(ValueError, match="empty"):
        calibrate_margins(torch.zeros(0, 1, 8, 8), stats_embed, ["gaussian_noise"], k=1)
    with pytest.raises(ValueError, match="unknown corruption family 'sharpen'"):
        calibrate_margins(x, stats_embed, ["gaussian_noise", "sharpen"], k=1)
    with pytest.raises(ValueError, match="k=4 must be smaller than the number of references"):
        calibrate_margins(x, stats_embed, ["gaussian_noise"], k=4)
    with pytest.raises(ValueError, match="k must be >= 1"):
        calibrate_margins(x, stats_embed, ["gaussian_noise"], k=0)
    with pytest.raises(ValueError, match="non-empty sequence"):
        calibrate_margins(x, stats_embed, [], k=1)
    with pytest.raises(ValueError, match="degrees"):
        calibrate_margins(x, stats_embed, ["gaussian_noise"], k=1, degrees=(0.0, 0.5))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        calibrate_margins(x[:, 0], stats_embed, ["gaussian_noise"], k=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibrate_margins(x * 3, stats_embed, ["gaussian_noise"], k=1)
    with pytest.raises(ValueError, match="embed_fn must return"):
        calibrate_margins(x, lambda t: t.mean(dim=(1, 2, 3)), ["gaussian_noise"], k=1)
    with pytest.raises(ValueError, match="floor"):
        margin_weights({"a": 1.0}, floor=1.0)
    from crl_uiqa.errors import ConfigError

    with pytest.raises(ConfigError, match="floor must be a number"):  # float("x") was a bare ValueError
        margin_weights({"a": 1.0}, floor="x")
    with pytest.raises(ValueError, match="cannot be calibrated"):
        margin_weights({"a": 0.0, "b": -1.0})


def test_calibrate_for_backbone_on_hc18(hc18_dir, sononet16_path):
    paths = sorted(str(p) for p in (hc18_dir / "images").glob("*HC.png"))[:6]
    w = calibrate_for_backbone(paths, weights=sononet16_path, size=(64, 80), families=("gaussian_noise", "haze"),
                               degrees=(0.5, 1.0), k=2, device="cpu", num_workers=0)
    assert list(w) == ["gaussian_noise", "haze"]
    assert np.mean(list(w.values())) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no reference images"):
        calibrate_for_backbone([], weights=sononet16_path)


def test_fit_has_calibrate_margins_flag_and_train_does_not(capsys):
    from crl_uiqa.cli import main

    for cmd, expected in (("fit", True), ("train", False)):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert ("--calibrate-margins" in capsys.readouterr().out) is expected
