"""SER-FIQ: the quality formula by hand, and the SonoNet stochastic head."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crl_uiqa.baselines import run_baseline
from crl_uiqa.baselines.serfiq import dropout_masks, serfiq_quality, serfiq_score, stochastic_embeddings


# ----------------------------------------------------------------------------- the formula
def test_quality_hand_computed_three_passes():
    # after L2 normalisation: (1,0), (0,1), (1,0) -> distances sqrt2, 0, sqrt2
    e = np.array([[2.0, 0.0], [0.0, 3.0], [5.0, 0.0]])
    mean_d = (math.sqrt(2) + 0.0 + math.sqrt(2)) / 3
    assert serfiq_quality(e) == pytest.approx(2 / (1 + math.exp(mean_d)), abs=1e-12)
    assert serfiq_quality(e) == pytest.approx(0.5606666, abs=1e-6)  # 2 / (1 + e^0.942809)


def test_quality_hand_computed_four_passes():
    # unit vectors at 0, 90, 180, 270 degrees: 4 pairs at sqrt2 and 2 pairs at 2
    e = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    mean_d = (4 * math.sqrt(2) + 2 * 2.0) / 6
    assert serfiq_quality(e) == pytest.approx(2 / (1 + math.exp(mean_d)), abs=1e-12)


def test_identical_embeddings_give_one_and_scale_is_ignored():
    e = np.tile([[0.3, -1.2, 4.0]], (5, 1)) * np.array([[1.0], [2.0], [0.5], [7.0], [3.0]])
    assert serfiq_quality(e) == pytest.approx(1.0, abs=1e-12)


def test_more_spread_means_lower_quality(rng):
    base = rng.normal(size=16)
    tight = base + 0.01 * rng.normal(size=(10, 16))
    loose = base + 0.5 * rng.normal(size=(10, 16))
    assert serfiq_quality(tight) > serfiq_quality(loose)
    # the worst case (antipodal pairs only) approaches 2 / (1 + e^2)
    assert serfiq_quality(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(2 / (1 + math.e ** 2))


def test_batched_equals_single(rng):
    e = rng.normal(size=(3, 6, 4))
    q = serfiq_quality(e)
    assert q.shape == (3,)
    np.testing.assert_allclose(q, [serfiq_quality(e[i]) for i in range(3)], rtol=0, atol=1e-14)
    assert serfiq_quality(torch.from_numpy(e)) == pytest.approx(q)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(4), "shape"),
        (np.zeros((2, 3, 4, 5)), "shape"),
        (np.ones((1, 4)), "at least 2"),
        (np.array([[1.0, np.nan], [1.0, 0.0]]), "NaN"),
        (np.array([["a", "b"], ["c", "d"]]), "real numbers"),
    ],
)
def test_quality_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        serfiq_quality(bad)


def test_dropout_masks_rate_and_scaling():
    g = torch.Generator().manual_seed(0)
    m = dropout_masks(50, (8, 4, 4), 0.5, g)
    assert m.shape == (50, 8, 4, 4)
    assert set(torch.unique(m).tolist()) == {0.0, 2.0}
    assert m.mean().item() == pytest.approx(1.0, abs=0.05)  # unbiased: E[mask] = 1


# ----------------------------------------------------------------------------- with SonoNet
SMALL = (64, 80)  # SonoNet input for quick tests (block5 is 4x5)


@pytest.fixture(scope="module")
def net(sononet16_path):
    from crl_uiqa.backbones import get_backbone

    torch.set_num_threads(1)
    return get_backbone("sononet16", sononet16_path)


@pytest.fixture(scope="module")
def images():
    r = np.random.default_rng(3)
    y, x = np.mgrid[0:70, 0:90]
    clean = (0.5 + 0.4 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.float32)
    noisy = np.clip(clean + r.normal(0, 0.25, clean.shape), 0, 1).astype(np.float32)
    return [clean, noisy, r.random((50, 60)).astype(np.float32)]


def test_head_without_dropout_is_the_network_embedding(net, images):
    from crl_uiqa.io import to_tensor

    x = torch.stack([to_tensor(im, SMALL) for im in images])
    with torch.inference_mode():
        f = net.feature_maps(x)
        ones1 = torch.ones((3, *f.shape[1:]))
        ones2 = torch.ones((3, 64, *f.shape[2:]))
        e = stochastic_embeddings(net, f, ones1, ones2, "adaptation")
        ref = net.embed(x, "adaptation")
        b5 = stochastic_embeddings(net, f, ones1, None, "block5")
    assert e.shape == (3, 3, 64)
    for t in range(3):
        torch.testing.assert_close(e[:, t], ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b5[:, t], f.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)


def test_scores_repeat_for_a_seed_and_do_not_depend_on_the_batch(net, images):
    kw = dict(weights=net, device="cpu", passes=6, size=SMALL)
    a = serfiq_score(images, seed=1, batch_size=3, **kw)
    b = serfiq_score(images[::-1], seed=1, batch_size=1, **kw)[::-1]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    c = serfiq_score(images, seed=2, batch_size=3, **kw)
    assert not np.allclose(a, c)
    assert a.shape == (3,) and np.all((a > 2 / (1 + math.e ** 2)) & (a <= 1))
    # block5 embedding variant works too
    d = serfiq_score(images, seed=1, embedding="block5", **kw)
    assert d.shape == (3,) and np.all(d <= 1)


def test_no_dropout_gives_quality_one(net, images):
    q = run_baseline("serfiq", images, weights=net, device="cpu", passes=3, dropout=0.0, size=SMALL)
    np.testing.assert_allclose(q, 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"passes": 1}, r"passes \(SER-FIQ compares stochastic passes\) must be >= 2, got 1"),
        ({"passes": 2.5}, r"passes \(SER-FIQ compares stochastic passes\) must be an integer, got 2.5"),
        ({"dropout": 1.0}, "dropout"),
        ({"embedding": "logits"}, "embedding must be one of"),
        ({"size": (8, 8)}, "at least 16x16"),
        ({"seed": "x"}, "seed must be an integer"),
        ({"passes": 10**20}, "passes must be <= 11096 at size 224x288"),  # was a TypeError from torch.rand
        # and a RuntimeError from torch (terabytes of dropout masks); the bound follows the maps' size
        ({"passes": 2**31 - 1}, r"passes must be <= 11096 at size 224x288 \(the dropout masks, made up front, "
                                r"would take 3.87e\+05 GiB; at most 2 GiB\), got 2147483647"),
        ({"passes": 2**21, "size": (64, 64)}, "passes must be <= 174762 at size 64x64"),
    ],
)
def test_bad_options(net, images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        serfiq_score(images, weights=net, **kwargs)


def test_bad_images_are_named():
    ok = np.zeros((20, 20), np.float32)
    with pytest.raises(ValueError, match=r"images\[1\]: expected a grayscale"):
        serfiq_score([ok, np.zeros((20, 20, 3))])
    with pytest.raises(ValueError, match=r"images\[0\]: values must lie in \[0, 1\]"):
        serfiq_score([ok + 2])
    with pytest.raises(ValueError, match="empty"):
        serfiq_score([])
    with pytest.raises(ValueError, match="does not use reference"):
        run_baseline("serfiq", [ok], references=[ok])
