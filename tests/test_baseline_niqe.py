"""NIQE baseline: agreement with the authors' MATLAB code, MATLAB conventions, the reference-fitted variant, errors.

``MATLAB`` values: the LIVE NIQE release (``computequality(im, 96, 96, 0, 0,
mu_prisparam, cov_prisparam)`` with its ``modelparameters.mat``) run under GNU
Octave 7.3.0 + octave-image 2.14.0 on the 8-bit grayscale versions of
scikit-image's data images (``_helpers.matlab_test_image``), as recorded in
``benchmarks/data/matlab_reference_scores.csv`` (how: that file's header and
BENCHMARKS.md). These images are numerically stable (no large flat non-zero
areas), so the tolerance is 1e-3 relative.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from _helpers import camera_crop, fake_ultrasound
from _helpers import matlab_test_image as distorted
from crl_uiqa.baselines import _nss
from crl_uiqa.baselines.niqe import (
    NIQEModel,
    fit_niqe_model,
    live_niqe_model,
    niqe_features,
    niqe_ref_score,
    niqe_score,
)

#: benchmarks/data/matlab_reference_scores.csv (NIQE, lower = better)
MATLAB = {"camera": 3.096202208, "astronaut": 3.0666375, "camera_blur": 6.843892515, "camera_noise": 9.266221244}


# ----------------------------------------------------------------------------- against MATLAB
def test_scores_match_the_matlab_release():
    names = list(MATLAB)
    got = -niqe_score([distorted(n) for n in names])
    np.testing.assert_allclose(got, [MATLAB[n] for n in names], rtol=1e-3)


def test_hc18_frame_matches_the_matlab_release(hc18_dir):
    """An ultrasound frame: ~20 % exact zeros outside the sector (the zeros-handling case)."""
    img = np.asarray(Image.open(hc18_dir / "images" / "000_HC.png").convert("L"), dtype=np.float32) / 255.0
    assert -niqe_score([img])[0] == pytest.approx(8.460977751, rel=1e-3)


def test_pristine_image_scores_best_among_its_distortions():
    names = ["astronaut", "astronaut_blur", "astronaut_noise"]
    s = niqe_score([distorted(n) for n in names])
    assert s[0] > s[1] and s[0] > s[2]


def test_live_model_is_the_released_one():
    m = live_niqe_model()
    assert m.mean.shape == (36,) and m.cov.shape == (36, 36) and m.patch_size == 96
    np.testing.assert_allclose(m.cov, m.cov.T)
    # first entries of mu_prisparam in the release's modelparameters.mat (BasicSR's copy)
    np.testing.assert_allclose(m.mean[:3], [2.60131368, 0.90570272, 0.81204778], rtol=1e-8)


# ----------------------------------------------------------------------------- MATLAB conventions
def test_window_is_fspecial_summed_in_matlab_order():
    w = _nss.gaussian_window()
    assert w.shape == (7, 7)
    total = 0.0
    for v in w.ravel(order="F"):
        total += v
    assert total == 1 - 2**-52  # MATLAB's (and Octave's) sum(w(:)); numpy's pairwise sums give 1 + 2**-52
    np.testing.assert_allclose(w, w.T, rtol=0, atol=0)


def test_imresize_half_matches_octave():
    """``imresize(a, 0.5)`` of GNU Octave's image package (MATLAB-compatible) on a 5x7 integer matrix."""
    a = np.mod(np.arange(1, 36) * 37, 101).reshape(7, 5).T.astype(np.float64)  # MATLAB reshape(.., 5, 7)
    want = np.array([
        [42.68634033203125, 40.54644775390625, 54.29571533203125, 51.0250244140625],
        [47.80657958984375, 58.9512939453125, 52.7890625, 38.4530029296875],
        [69.12744140625, 38.7662353515625, 62.8226318359375, 88.3095703125],
    ])
    np.testing.assert_allclose(_nss.imresize_half(a), want, rtol=1e-14)


def test_aggd_zeros_count_on_neither_side_and_empty_sides_are_nan():
    x = np.array([-2.0, 0.0, 0.0, 1.0, 3.0])
    f = _nss.aggd_fit(x)
    assert f.left_std == pytest.approx(2.0) and f.right_std == pytest.approx(np.sqrt(5.0))
    g = _nss.aggd_fit(np.array([0.0, 1.0, 2.0]))
    assert np.isnan(g.left_std) and g.alpha == pytest.approx(0.2)  # MATLAB: min over NaNs -> first grid value


def test_grid_fit_is_matlabs_min_over_the_grid():
    from scipy.special import gamma

    rng = np.random.default_rng(0)
    targets = np.concatenate([rng.uniform(0.05, 0.75, 200), [np.nan]])
    grid = _nss._GRID
    assert len(grid) == 9801 and grid[0] == 0.2 and grid[-1] == 10.0
    table = gamma(2 / grid) ** 2 / (gamma(1 / grid) * gamma(3 / grid))
    want = grid[[0 if np.isnan(t) else np.argmin((table - t) ** 2) for t in targets]]
    # values picked from the same grid (not computed): exact; a different pick is a different answer
    np.testing.assert_array_equal(_nss._nearest_on_grid(_nss._aggd_table(), targets, squared=True), want)


def test_products_wrap_around_each_patch():
    """computefeature.m takes circshift neighbours inside the patch: changing another patch changes nothing."""
    img = camera_crop()
    f = niqe_features(img)
    img2 = img.copy()
    img2[:, 96 * 2 :] = np.flip(img2[:, 96 * 2 :], axis=0)
    # first-scale features of patch 0 depend only on its own MSCN, which sees 3 pixels beyond it
    np.testing.assert_allclose(niqe_features(img2)[0, :18], f[0, :18], rtol=1e-12)


def test_matlab_pinv_drops_tiny_singular_values_like_matlab():
    a = np.diag([1.0, 1e-17, 2.0])
    np.testing.assert_allclose(_nss.matlab_pinv(a), np.diag([1.0, 0.0, 0.5]))


# ----------------------------------------------------------------------------- reference-fitted model
def test_self_fitted_model_scores_zero():
    """Fitted on one image with every patch, the model mean is that image's mean: NIQE = 0."""
    img = fake_ultrasound()
    model = fit_niqe_model([img], sharpness=0.0)
    assert model.n_patches == 6
    np.testing.assert_allclose(model.mean, np.nanmean(niqe_features(img), axis=0))
    assert niqe_score([img], model)[0] == pytest.approx(0.0, abs=1e-6)


def test_sharpness_keeps_only_textured_patches():
    """Left half black, right half noise: the 0.75 threshold keeps exactly the 4 noise patches.

    As estimatemodelparam.m's ``sharpness > sh_th * max(sharpness)``, even 0
    drops the two black patches that do not touch the noise (zero sharpness).
    """
    img = np.zeros((192, 384), np.float32)
    img[:, 192:] = np.random.default_rng(0).random((192, 192))
    assert fit_niqe_model([img], sharpness=0.0).n_patches == 6
    assert fit_niqe_model([img], sharpness=0.75).n_patches == 4


def test_all_zero_patches_have_nan_features_and_are_left_out():
    img = np.zeros((192, 384), np.float32)
    img[:, 192:] = np.random.default_rng(0).random((192, 192))
    f = niqe_features(img)
    assert np.isnan(f[0]).any() and not np.isnan(f[3]).any()  # black patch / noise patch
    model = fit_niqe_model([img], sharpness=0.0)
    assert np.all(np.isfinite(model.mean)) and np.all(np.isfinite(model.cov))


def test_reference_variant_ranks_degraded_images_lower():
    refs = [fake_ultrasound()]
    refs.append(np.fliplr(refs[0]).copy())
    clean = fake_ultrasound()
    blurred = scipy.ndimage.gaussian_filter(clean, 2.0)
    s = niqe_ref_score([clean, blurred], refs, sharpness=0.0)
    assert s[0] > s[1]
    np.testing.assert_allclose(s, niqe_score([clean, blurred], fit_niqe_model(refs, sharpness=0.0)))


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
    with pytest.raises(ValueError, match=match):
        niqe_score(images)


def test_image_without_two_defined_patches_raises():
    img = np.zeros((192, 192), np.float32)
    img[:96, :96] = _noise((96, 96))  # three of four patches all zero: undefined features
    with pytest.raises(ValueError, match=r"images\[0\]: NIQE needs at least two patches with defined features"):
        niqe_score([img])


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


@pytest.mark.parametrize("kw, match", [
    (dict(sharpness="nan"), "sharpness must be a number"), (dict(sharpness=[1, 2]), "sharpness must be a number"),
    (dict(sharpness=float("nan")), "sharpness must be a finite number"), (dict(sharpness=1.5), "sharpness must be <= 1"),
    (dict(patch_size="x"), "patch_size must be an integer"), (dict(patch_size=float("nan")), "patch_size must be an integer"),
    (dict(patch_size=4), "patch_size must be >= 8"), (dict(patch_size=9), "patch_size must be an even integer"),
])
def test_settings_of_the_wrong_type_are_config_errors(kw, match):
    """``--option sharpness=nan`` (a string) was a TypeError and ``patch_size=nan`` a bare int() ValueError."""
    from crl_uiqa.errors import ConfigError

    img = fake_ultrasound()
    with pytest.raises(ConfigError, match=match):
        fit_niqe_model([img], **kw)


def test_a_model_that_is_not_a_niqe_model_is_an_argument_type_error():
    from crl_uiqa.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError, match="model must be a NIQEModel"):  # was an AttributeError
        niqe_score([fake_ultrasound()], model="nope")
