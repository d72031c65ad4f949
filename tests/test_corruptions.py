"""Tests of the ultrasound corruption library (crl_uiqa.corruptions)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from crl_uiqa.corruptions import (
    FAMILIES,
    PAPER_FAMILIES,
    ULTRASOUND_FAMILIES,
    corrupt,
    corrupt_image,
    corrupt_mixed,
    sample_strong_views,
)
from crl_uiqa.corruptions.blur import GAUSSIAN_SIGMA_MAX_FRACTION, motion_kernels
from crl_uiqa.corruptions.noise import speckle_field

torch.set_num_threads(1)

H, W = 64, 80
ALL = (
    "gaussian_blur", "motion_blur", "gaussian_noise", "speckle_noise", "shadow", "attenuation",
    "over_gain", "under_gain", "haze", "low_resolution", "partial_fov",
)
STOCHASTIC = ("motion_blur", "gaussian_noise", "speckle_noise", "shadow", "haze", "partial_fov")


def phantom(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """Ultrasound-like test image in [0.02, 0.8]: speckled tissue, an anechoic cyst, a bright wall."""
    rng = np.random.default_rng(seed)
    tissue = ndimage.gaussian_filter(rng.rayleigh(1.0, (h, w)), 0.8)
    tissue = 0.35 * tissue / tissue.mean()
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - 0.55 * h) / (0.22 * h), (xx - 0.45 * w) / (0.2 * w))
    img = np.where(r < 1.0, 0.05, tissue)
    img = np.where((r > 1.15) & (r < 1.45), 0.75, img)
    return np.clip(img, 0.02, 0.8).astype(np.float32)


def batch(n: int = 3) -> torch.Tensor:
    return torch.stack([torch.from_numpy(phantom(s)) for s in range(n)])[:, None]


def run(family: str, degree: float, x: torch.Tensor | None = None, seed: int = 7) -> torch.Tensor:
    x = batch(1) if x is None else x
    return corrupt(x, family, degree, torch.Generator().manual_seed(seed))


def lap_var(y: torch.Tensor) -> float:
    return float(ndimage.laplace(y[0, 0].double().numpy()).var())


DEGREES = (0.25, 0.5, 1.0)


# --------------------------------------------------------------------------- registry and API


def test_registry_names():
    assert tuple(FAMILIES) == ALL
    assert ULTRASOUND_FAMILIES == ALL
    assert PAPER_FAMILIES == ("gaussian_blur", "motion_blur")
    assert {n for n, c in FAMILIES.items() if c.stochastic} == set(STOCHASTIC)
    assert all(c.name == n and c.summary for n, c in FAMILIES.items())


def test_unknown_family_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown corruption family 'blurr'.*gaussian_blur.*partial_fov"):
        corrupt(batch(1), "blurr", 0.5)
    with pytest.raises(ValueError, match="valid families"):
        corrupt_mixed(batch(2), ["haze", "nope"], torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="valid families"):
        sample_strong_views(batch(2), ["gaussian_blur", "sharpen"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(images=torch.rand(2, 3, 8, 8)), r"\(B, 1, H, W\)"),
        (dict(images=torch.rand(8, 8)), r"\(B, 1, H, W\)"),
        (dict(images=torch.full((1, 1, 8, 8), 1.5)), r"\[0, 1\]"),
        (dict(images=torch.ones(1, 1, 8, 8, dtype=torch.uint8)), "floating"),
        (dict(degree=1.2), r"degree must lie in \[0, 1\]"),
        (dict(degree=torch.tensor([0.1, 0.2, 0.3])), r"shape \(2,\)"),
    ],
)
def test_input_validation(kwargs, match):
    args = dict(images=torch.rand(2, 1, 8, 8), family="haze", degree=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        corrupt(**args)


@pytest.mark.parametrize("family", ALL)
def test_degree_zero_is_identity(family):
    x = batch(3)
    assert torch.equal(corrupt(x, family, 0.0, torch.Generator().manual_seed(1)), x)
    # per-sample: only the zero-degree sample is untouched
    y = corrupt(x, family, torch.tensor([0.0, 1.0, 0.0]), torch.Generator().manual_seed(1))
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2])
    assert not torch.equal(y[1], x[1])


@pytest.mark.parametrize("family", ALL)
def test_output_range_shape_dtype(family):
    x = torch.cat([batch(2), torch.ones(1, 1, H, W), torch.zeros(1, 1, H, W)])
    for d in (0.5, 1.0):
        y = corrupt(x, family, d, torch.Generator().manual_seed(0))
        assert y.shape == x.shape and y.dtype == torch.float32
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("family", ALL)
def test_batched_equals_per_image(family):
    x = batch(3)
    deg = torch.tensor([0.3, 0.7, 1.0])
    g = torch.Generator().manual_seed(11)
    batched = corrupt(x, family, deg, g)
    g = torch.Generator().manual_seed(11)
    single = torch.cat([corrupt(x[i : i + 1], family, deg[i : i + 1], g) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ALL)
def test_reproducible_with_seed(family):
    x = batch(2)
    a = corrupt(x, family, 0.8, torch.Generator().manual_seed(3))
    b = corrupt(x, family, 0.8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    c = corrupt(x, family, 0.8, torch.Generator().manual_seed(4))
    assert torch.equal(a, c) != (family in STOCHASTIC)


# --------------------------------------------------------------------------- family-specific measures


@pytest.mark.parametrize("family", ["gaussian_blur", "motion_blur", "low_resolution"])
def test_blur_lowers_high_frequency_energy(family):
    energies = [lap_var(run(family, d)) for d in (0.0, *DEGREES)]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    assert energies[-1] < 0.5 * energies[0]


def test_gaussian_blur_matches_scipy():
    x = batch(1)
    sigma = 0.6 * GAUSSIAN_SIGMA_MAX_FRACTION * min(H, W)
    radius = math.ceil(3 * GAUSSIAN_SIGMA_MAX_FRACTION * min(H, W))
    ref = ndimage.gaussian_filter(x[0, 0].double().numpy(), sigma, mode="mirror", truncate=radius / sigma)
    np.testing.assert_allclose(run("gaussian_blur", 0.6, x)[0, 0].numpy(), ref, atol=1e-5)


def test_motion_kernel_hand_values():
    # length 4 at angle 0: taps at |par| = 0, 1, 2 weigh clip(2.5 - |par|, 0, 1) = 1, 1, 0.5
    k = motion_kernels(torch.tensor([4.0]), torch.tensor([0.0]), 7)[0]
    expected = torch.zeros(7, 7)
    expected[3, 1:6] = torch.tensor([0.5, 1, 1, 1, 0.5]) / 4
    torch.testing.assert_close(k, expected)
    # at 90 degrees the streak is vertical
    k90 = motion_kernels(torch.tensor([4.0]), torch.tensor([math.pi / 2]), 7)[0]
    torch.testing.assert_close(k90, expected.T, atol=1e-6, rtol=0)
    # length 0 is a unit impulse
    k0 = motion_kernels(torch.tensor([0.0]), torch.tensor([0.0]), 5)[0]
    assert k0[2, 2] == 1 and k0.sum() == 1


def test_motion_blur_direction_follows_angle():
    # a single bright pixel becomes a straight streak; its second moments give the direction
    x = torch.zeros(1, 1, H, W)
    x[0, 0, 32, 40] = 1.0
    y = run("motion_blur", 1.0, x)[0, 0]
    assert abs(float(y.sum()) - 1.0) < 1e-5
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    my, mx = float((y * yy).sum()), float((y * xx).sum())
    cov = np.cov(np.stack([(xx - mx).flatten(), (yy - my).flatten()]), aweights=y.flatten().numpy())
    evals = np.linalg.eigvalsh(cov)
    assert evals[1] > 4 * evals[0]  # elongated: a line, not a blob


@pytest.mark.parametrize("family", ["gaussian_noise", "speckle_noise"])
def test_noise_variance_increases(family):
    x = batch(1)
    var = [float((run(family, d, x) - x).var()) for d in (0.0, *DEGREES)]
    assert all(a < b for a, b in zip(var, var[1:])), var


def test_gaussian_noise_std_hand_value():
    x = torch.full((1, 1, 128, 128), 0.5)
    r = run("gaussian_noise", 0.5, x) - x  # sigma = 0.5 * 0.2 = 0.1, clipping at 0.5 +- 5 sigma is negligible
    assert abs(float(r.std()) - 0.1) < 0.004
    assert abs(float(r.mean())) < 0.003


def test_speckle_field_statistics():
    n = speckle_field(4, 96, 96, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert float(n.min()) >= 0
    assert abs(float(n.mean()) - 1.0) < 0.02
    assert abs(float(n.std()) - math.sqrt(4 / math.pi - 1)) < 0.02  # Rayleigh, normalised to unit mean


def test_speckle_is_multiplicative():
    x = torch.full((1, 1, H, W), 0.4)
    x[..., : H // 2, :] = 0.1
    r = run("speckle_noise", 1.0, x) - x
    top, bottom = float(r[..., : H // 2, :].std()), float(r[..., H // 2 :, :].std())
    assert bottom / top == pytest.approx(4.0, rel=0.2)  # std proportional to the echo
    assert run("speckle_noise", 1.0, torch.zeros(1, 1, H, W)).max() == 0


def test_shadow_darkens_a_cone_below_a_point():
    x = torch.full((1, 1, H, W), 0.5)
    full = run("shadow", 1.0, x)
    region = full < 0.25  # inside the shadow
    assert 0.02 < float(region.float().mean()) < 0.6
    assert float(full.min()) == pytest.approx(0.5 * (1 - 0.9), abs=1e-6)
    rows = region[0, 0].any(dim=1).nonzero()[:, 0]
    assert int(rows.max()) == H - 1 and int(rows.min()) > 0  # from a point down to the bottom
    outside = full == x
    xp = batch(1)
    means = [float(run("shadow", d, xp)[region].mean()) for d in (0.0, *DEGREES)]
    assert all(a > b for a, b in zip(means, means[1:])), means
    for d in DEGREES:
        assert torch.equal(run("shadow", d, xp)[outside], xp[outside])  # same geometry at every degree


def test_attenuation_hand_values_and_ratio():
    x = torch.full((1, 1, H, W), 0.5)
    y = run("attenuation", 1.0, x)
    torch.testing.assert_close(y[0, 0, 0], torch.full((W,), 0.5))
    torch.testing.assert_close(y[0, 0, -1], torch.full((W,), 0.5 * math.exp(-3.0)))
    xp = batch(1)

    def ratio(y):
        return float(y[..., -H // 4 :, :].mean() / y[..., : H // 4, :].mean())

    ratios = [ratio(run("attenuation", d, xp)) for d in (0.0, *DEGREES)]
    assert all(a > b for a, b in zip(ratios, ratios[1:])), ratios


def test_over_gain_hand_value_and_saturation():
    y = run("over_gain", 0.5, torch.full((1, 1, 4, 4), 0.2))
    torch.testing.assert_close(y, torch.full((1, 1, 4, 4), 0.2 * 2.0 + 0.05))
    x = batch(1)
    outs = [run("over_gain", d, x) for d in (0.0, *DEGREES)]
    means = [float(o.mean()) for o in outs]
    saturated = [float((o >= 1).float().mean()) for o in outs]
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert all(a < b for a, b in zip(saturated, saturated[1:])), saturated


def test_under_gain_hand_value_darker_less_contrast():
    y = run("under_gain", 1.0, torch.full((1, 1, 4, 4), 0.5))
    torch.testing.assert_close(y, torch.full((1, 1, 4, 4), 0.25 * 0.5**2))
    x = batch(1)
    outs = [run("under_gain", d, x) for d in (0.0, *DEGREES)]
    means = [float(o.mean()) for o in outs]
    stds = [float(o.std()) for o in outs]
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert all(a > b for a, b in zip(stds, stds[1:])), stds


def test_haze_lifts_the_near_field_and_black_level():
    x = batch(1)
    outs = [run("haze", d, x) for d in (0.0, *DEGREES)]
    top = [float(o[..., : H // 4, :].mean()) for o in outs]
    cyst = torch.from_numpy(phantom(0) == np.float32(0.05))[None, None]
    black = [float(o[cyst].mean()) for o in outs]
    assert all(a < b for a, b in zip(top, top[1:])), top
    assert all(a < b for a, b in zip(black, black[1:])), black
    # more haze near the probe than deep down
    lift = outs[-1] - x
    assert float(lift[..., : H // 4, :].mean()) > float(lift[..., -H // 4 :, :].mean())
    # glare alone on a black image: the deep rows are lifted to ~0.15 * degree
    y = run("haze", 1.0, torch.zeros(1, 1, 200, 40))
    assert float(y[..., -5:, :].mean()) == pytest.approx(0.15, abs=0.01)


def test_partial_fov_black_fraction():
    x = torch.full((6, 1, H, W), 0.5)
    for d, frac in ((0.25, 0.125), (0.5, 0.25), (1.0, 0.5)):
        y = corrupt(x, "partial_fov", d, torch.Generator().manual_seed(2))
        black = (y == 0).float().mean(dim=(1, 2, 3))
        torch.testing.assert_close(black, torch.full((6,), frac))
        assert torch.equal(y[y != 0], x[y != 0])
    xp = batch(1)
    fractions = [float((run("partial_fov", d, xp) == 0).float().mean()) for d in (0.0, *DEGREES)]
    assert all(a < b for a, b in zip(fractions, fractions[1:])), fractions


def test_partial_fov_uses_all_sides():
    y = corrupt(torch.full((24, 1, H, W), 0.5), "partial_fov", 0.5, torch.Generator().manual_seed(0))
    left = (y[:, 0, :, 0] == 0).all(dim=1)
    right = (y[:, 0, :, -1] == 0).all(dim=1)
    bottom = (y[:, 0, -1, :] == 0).all(dim=1)
    assert left.any() and right.any() and bottom.any()
    assert torch.equal(left.int() + right.int() + bottom.int(), torch.ones(24, dtype=torch.int))


# --------------------------------------------------------------------------- mixed batches and strong views


def test_corrupt_mixed_matches_per_family_calls():
    x = batch(4)
    fams = ["over_gain", "attenuation", "over_gain", "under_gain"]
    deg = torch.tensor([0.2, 0.5, 0.9, 0.4])
    y = corrupt_mixed(x, fams, deg)
    for i, f in enumerate(fams):
        torch.testing.assert_close(y[i : i + 1], corrupt(x[i : i + 1], f, deg[i : i + 1]))
    # one family everywhere is the same as corrupt()
    same = corrupt_mixed(x, ["haze"] * 4, deg, torch.Generator().manual_seed(5))
    assert torch.equal(same, corrupt(x, "haze", deg, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="one per image"):
        corrupt_mixed(x, fams[:3], deg)


def test_sample_strong_views():
    x = batch(8)
    views, used, deg = sample_strong_views(x, ULTRASOUND_FAMILIES, torch.Generator().manual_seed(0), (0.3, 0.6))
    assert views.shape == x.shape and len(used) == 8 and deg.shape == (8,)
    assert set(used) <= set(ULTRASOUND_FAMILIES) and len(set(used)) > 2
    assert float(deg.min()) >= 0.3 and float(deg.max()) <= 0.6
    assert not any(torch.equal(views[i], x[i]) for i in range(8))
    again = sample_strong_views(x, ULTRASOUND_FAMILIES, torch.Generator().manual_seed(0), (0.3, 0.6))
    assert torch.equal(again[0], views) and again[1] == used and torch.equal(again[2], deg)
    _, used_paper, _ = sample_strong_views(x, PAPER_FAMILIES, torch.Generator().manual_seed(1))
    assert set(used_paper) <= set(PAPER_FAMILIES)
    with pytest.raises(ValueError, match="degree_range"):
        sample_strong_views(x, PAPER_FAMILIES, degree_range=(0.8, 0.2))
    with pytest.raises(ValueError, match="non-empty"):
        sample_strong_views(x, [])


def test_corrupt_image_numpy_wrapper():
    img = phantom(0)
    out = corrupt_image(img, "gaussian_noise", 0.5, seed=1)
    assert out.shape == img.shape and out.dtype == np.float32
    ref = corrupt(torch.from_numpy(img)[None, None], "gaussian_noise", 0.5, torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(out, ref[0, 0].numpy())  # the wrapper calls corrupt(): same path, same bits
    with pytest.raises(ValueError, match="2-D"):
        corrupt_image(img[None], "haze", 0.5)
