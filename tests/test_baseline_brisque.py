"""BRISQUE baseline: agreement with the reference package, model parsing, shared NSS helpers, errors.

Reference scores were produced once with the PyPI package ``brisque`` 0.2.0
(numpy 2.4.6, scipy 1.17.1, opencv-python-headless 5.0.0.93 installed only for
that run) after a one-line temporary patch of ``BRISQUE.scale_features``: the
package calls ``float()`` on 1-element 1-D arrays (brisque.py line 246), which
numpy >= 2.4 rejects; the patch flattened the features first. The package's
own pipeline was fed the gray image directly, i.e.::

    f = concat(obj.calculate_brisque_features(gray, 7, 7/6),
               obj.calculate_brisque_features(cv2.resize(gray, None, fx=.5, fy=.5,
                                                         interpolation=cv2.INTER_CUBIC), 7, 7/6))
    obj.calculate_image_quality_score(f)

(``BRISQUE.score`` additionally passes the image through ``rgb2gray``, whose
rounding changes scores by <= 1e-4 on images with flat areas.)
"""
from __future__ import annotations

import importlib.util
import io
import pickle

import numpy as np
import pytest
from PIL import Image

from _helpers import camera_crop, fake_ultrasound, moon_odd, noisy_gradient
from crl_uiqa.baselines import _nss, brisque
from crl_uiqa.baselines.brisque import brisque_features, brisque_score, load_brisque_model

needs_brisque = pytest.mark.skipif(
    importlib.util.find_spec("brisque") is None, reason="optional package 'brisque' (the LIVE model) not installed"
)


#: BRISQUE (lower = better) from the reference package, see the module docstring.
REFERENCE = {
    noisy_gradient: 60.17964072891337,
    camera_crop: 10.210427506389095,
    moon_odd: 16.302167394088173,
    fake_ultrasound: 49.96989785586706,
}


# ----------------------------------------------------------------------------- agreement
@needs_brisque
def test_scores_match_reference_package():
    makers = list(REFERENCE)
    scores = brisque_score([make() for make in makers])
    want = -np.array([REFERENCE[m] for m in makers])
    np.testing.assert_allclose(scores, want, rtol=0, atol=1e-6)


@needs_brisque
def test_hc18_image_matches_reference_package(hc18_dir):
    img = np.asarray(Image.open(hc18_dir / "images" / "000_HC.png").convert("L"), dtype=np.float32) / 255.0
    assert brisque_score([img])[0] == pytest.approx(-78.45338856186274, abs=1e-6)


@needs_brisque
def test_model_file_is_parsed():
    m = load_brisque_model()
    # header of brisque/models/svm.txt and first entries of normalize.pickle
    assert m.support_vectors.shape == (770, 36)
    assert m.gamma == 0.05 and m.rho == -155.845
    assert m.dual_coef[:3].tolist() == [-1024.0, -1024.0, 1024.0]
    assert m.feature_min[:2].tolist() == [0.336999, 0.019667]
    assert m.feature_max[:2].tolist() == [9.999411, 0.807472]


@needs_brisque
def test_svr_prediction_by_hand():
    """The SVR output for one feature vector equals the explicit kernel sum."""
    m = load_brisque_model()
    f = brisque_features(camera_crop())
    x = -1 + 2 * (f - m.feature_min) / (m.feature_max - m.feature_min)
    by_hand = sum(c * np.exp(-m.gamma * np.sum((x - sv) ** 2)) for c, sv in zip(m.dual_coef, m.support_vectors))
    assert m.predict(f)[0] == pytest.approx(by_hand - m.rho, abs=1e-9)


def test_features_layout_on_hand_checkable_image():
    """36 features; MSCN variance feature equals the MSCN second moment, shape parameters positive."""
    img = noisy_gradient()
    f = brisque_features(img)
    assert f.shape == (36,)
    coeffs, _ = _nss.mscn(img.astype(np.float64), c=1 / 255, window=_nss.gaussian_window(7, 7 / 6, ndim=2))
    neg, pos = coeffs[coeffs < 0], coeffs[coeffs >= 0]
    assert f[1] == pytest.approx((np.mean(neg**2) + np.mean(pos**2)) / 2, rel=1e-12)
    # pair products: [alpha, mean, sigma_l^2, sigma_r^2] with sigma^2 from the horizontal products
    h = coeffs[:, :-1] * coeffs[:, 1:]
    assert f[4] == pytest.approx(np.mean(h[h < 0] ** 2), rel=1e-12)
    assert f[5] == pytest.approx(np.mean(h[h >= 0] ** 2), rel=1e-12)
    assert np.all(f[[0, 2, 6, 10, 14, 18, 20, 24, 28, 32]] > 0)


def test_half_cubic_on_a_ramp_by_hand():
    """Keys cubic reproduces linear functions: pixel d of the half image is the ramp at 2d + 0.5."""
    ramp = np.tile(np.arange(20, dtype=np.float64), (12, 1))
    half = brisque._half_cubic(ramp)
    assert half.shape == (6, 10)
    np.testing.assert_allclose(half[:, 1:-1], np.tile(2 * np.arange(1, 9) + 0.5, (6, 1)), atol=1e-12)
    # border: taps clamped -> -3/32*0 + 19/32*0 + 19/32*1 - 3/32*2 = 13/32
    assert half[0, 0] == pytest.approx(13 / 32)
    assert brisque._half_cubic(np.zeros((7, 9))).shape == (4, 4)  # round half to even: 3.5 -> 4, 4.5 -> 4


# ----------------------------------------------------------------------------- shared NSS helpers
def test_aggd_fit_exact_solves_the_moment_equation():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(size=200_000), rng.laplace(size=200_000)])
    fit = _nss.aggd_fit(x, method="exact")
    # Gaussian -> alpha 2, Laplacian -> alpha 1 (sample noise ~1%)
    np.testing.assert_allclose(fit.alpha, [2.0, 1.0], rtol=0.03)
    np.testing.assert_allclose(fit.sigma_left, [1.0, np.sqrt(2)], rtol=0.02)
    # the moment equation holds to machine precision
    g = fit.sigma_left / fit.sigma_right
    r = np.mean(np.abs(x), axis=1) ** 2 / np.mean(x**2, axis=1)
    target = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    np.testing.assert_allclose(_nss._rho(fit.alpha), target, rtol=1e-10)
    # symmetric samples: zero mean; gamma function identity for beta
    assert abs(fit.mean[0]) < 0.01
    from scipy.special import gamma

    a = fit.alpha[1]
    assert fit.beta_left[1] == pytest.approx(fit.sigma_left[1] * np.sqrt(gamma(1 / a) / gamma(3 / a)))


def test_aggd_fit_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown AGGD fitting method"):
        _nss.aggd_fit(np.ones(4), method="bisect")


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "images, match",
    [
        ([], "empty"),
        ([np.zeros((32, 32, 3), np.float32)], r"images\[0\]: expected a grayscale"),
        ([np.full((32, 32), np.nan, np.float32)], "NaN"),
        ([np.full((32, 32), 0.5, np.float32)], "constant image"),
        ([np.random.default_rng(0).random((8, 40)).astype(np.float32)], "at least 16x16"),
        ([np.full((32, 32), 255.0, np.float32)], r"values must lie in \[0, 1\]"),
    ],
)
def test_bad_input_raises(images, match):
    with pytest.raises(ValueError, match=match):
        brisque_score(images)


def test_missing_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "brisque" else real(name, *a))
    load_brisque_model.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install crl-uiqa\[baselines\]"):
            brisque_score([noisy_gradient()])
    finally:
        load_brisque_model.cache_clear()


def test_normalisation_pickle_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        brisque._PlainDataUnpickler(io.BytesIO(pickle.dumps({"min_": Evil()}))).load()
    assert brisque._PlainDataUnpickler(io.BytesIO(pickle.dumps({"min_": [0.5]}))).load() == {"min_": [0.5]}
