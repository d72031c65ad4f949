"""MSSIM baseline: agreement with scikit-image, hand-computed SSIM values, aggregation, resizing, MS-SSIM, errors.

MS-SSIM reference values: ``pytorch_msssim.ms_ssim(x, y, data_range=1.0)``
(PyPI pytorch-msssim 1.0.0, MIT; float64 tensors, its default weights,
11-tap sigma 1.5 window and 2x2 average pooling) on the images of
:func:`_ms_images`, computed once (the package is not a dependency).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
from skimage import data
from skimage.metrics import structural_similarity

from crl_uiqa.baselines.mssim import MS_SSIM_WEIGHTS, _halve, ms_ssim_matrix, mssim_score, ssim_matrix

torch.set_num_threads(1)


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. (2004) MSSIM as scikit-image computes it, in float64."""
    return structural_similarity(
        a.astype(np.float64), b.astype(np.float64), data_range=1.0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )


def _images():
    rng = np.random.default_rng(0)
    cam = data.camera() / 255.0
    imgs = [np.clip(cam[20 * i : 20 * i + 64, 30 * i : 30 * i + 80] + rng.normal(0, 0.03 * i, (64, 80)), 0, 1)
            for i in range(4)]
    refs = [cam[100 + 10 * i : 164 + 10 * i, 50:130] for i in range(3)] + [np.full((64, 80), 0.5)]
    return [a.astype(np.float32) for a in imgs], [r.astype(np.float32) for r in refs]


def test_matrix_matches_scikit_image():
    imgs, refs = _images()
    got = ssim_matrix(imgs, refs, size=None, pairs_per_batch=5)  # several batches, one partial
    want = np.array([[_skimage_ssim(a, b) for b in refs] for a in imgs])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_hand_computed_values():
    """SSIM(x, x) = 1; constant images a, b: (2ab + C1) / (a^2 + b^2 + C1) since all variances are 0."""
    x = np.random.default_rng(1).random((32, 40)).astype(np.float32)
    a, b = np.full((32, 40), 0.2, np.float32), np.full((32, 40), 0.6, np.float32)
    s = ssim_matrix([x, a], [x, b], size=None)
    assert s[0, 0] == pytest.approx(1.0, abs=1e-6)
    c1 = 0.01**2
    assert s[1, 1] == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), abs=1e-6)


def test_reductions_over_references():
    imgs, refs = _images()
    sims = np.array([[_skimage_ssim(a, b) for b in refs] for a in imgs])
    np.testing.assert_allclose(mssim_score(imgs, refs, size=None), sims.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(mssim_score(imgs, refs, reduction="max", size=None), sims.max(axis=1), atol=1e-5)
    # the image itself among the references: max is 1
    assert mssim_score(imgs[:1], refs + imgs[:1], reduction="max", size=None)[0] == pytest.approx(1.0, abs=1e-6)


def test_resizing_to_common_size():
    imgs, refs = _images()
    # images already at `size` are not resized: same values as without resizing
    np.testing.assert_allclose(ssim_matrix(imgs, refs, size=(64, 80)), ssim_matrix(imgs, refs, size=None))
    # a 2x larger copy of a reference is resized back onto it (bilinear, anti-aliased): near 1
    big = np.kron(refs[0], np.ones((2, 2), np.float32))
    s = mssim_score([big, imgs[3]], [refs[0]], size=(64, 80))
    assert s[0] > 0.97 and s[0] > s[1]
    # mixed sizes without `size` are refused
    with pytest.raises(ValueError, match="different shapes"):
        ssim_matrix([big, imgs[0]], refs, size=None)
    with pytest.raises(ValueError, match="references are"):
        ssim_matrix(imgs, [big], size=None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(images=[], references="ok"), "images: the list of images is empty"),
        (dict(references=[]), "references: the list of images is empty"),
        (dict(reduction="median"), "unknown reduction 'median'"),
        (dict(method="msssim"), "unknown method 'msssim'"),
        (dict(method="ms-ssim", size=None), "MS-SSIM needs images of at least 161 pixels"),
        (dict(size=(8, 80)), "size must be larger than 10x10"),
        (dict(size="big"), r"size must be \(height, width\)"),
        (dict(images=[np.zeros((64, 80, 3), np.float32)], references="ok"), r"images\[0\]: expected a grayscale"),
        (dict(images=[np.full((64, 80), np.nan, np.float32)], references="ok"), "NaN"),
    ],
)
def test_bad_input_raises(kwargs, match):
    imgs, refs = _images()
    args = dict(images=imgs, references=refs)
    args.update(kwargs)
    if isinstance(args["references"], str):
        args["references"] = refs
    with pytest.raises(ValueError, match=match):
        mssim_score(**args)


def test_a_batch_of_pairs_is_bounded_as_every_batch():
    from crl_uiqa.errors import ConfigError

    imgs, refs = _images()
    with pytest.raises(ConfigError, match=r"^pairs_per_batch must be <= 4096, got 100000000$"):  # stacked at once
        ssim_matrix(imgs, refs, pairs_per_batch=10**8)


# ----------------------------------------------------------------------------- MS-SSIM
def _ms_images():
    rng = np.random.default_rng(0)
    cam = data.camera() / 255.0
    base = cam[100:292, 100:356]
    imgs = [base, np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1), scipy.ndimage.gaussian_filter(base, 2.0)]
    refs = [base, cam[102:294, 103:359], data.moon()[:192, :256] / 255.0]
    return [a.astype(np.float32) for a in imgs], [r.astype(np.float32) for r in refs]


#: pytorch_msssim 1.0.0 ms_ssim on _ms_images() (see the module docstring)
PYTORCH_MSSSIM = np.array([
    [1.0, 0.7397751648, 0.2268070927],
    [0.9190861548, 0.6665225237, 0.1950495044],
    [0.9458660526, 0.7906755128, 0.2551063519],
])


def test_ms_ssim_matches_pytorch_msssim():
    imgs, refs = _ms_images()
    np.testing.assert_allclose(ms_ssim_matrix(imgs, refs, size=None), PYTORCH_MSSSIM, rtol=0, atol=2e-5)
    got = mssim_score(imgs, refs, size=None, method="ms-ssim")
    np.testing.assert_allclose(got, PYTORCH_MSSSIM.mean(axis=1), atol=2e-5)


def test_ms_ssim_is_not_single_scale_ssim():
    """Blur hurts fine scales most: MS-SSIM of the blurred copy is above its single-scale SSIM."""
    imgs, refs = _ms_images()
    ms = ms_ssim_matrix(imgs[2:], refs[:1], size=None)[0, 0]
    single = ssim_matrix(imgs[2:], refs[:1], size=None)[0, 0]
    assert ms > single + 0.05
    assert sum(MS_SSIM_WEIGHTS) == pytest.approx(1.0, abs=1e-3)


def test_halving_is_matlab_average_and_decimate_with_symmetric_border():
    t = torch.arange(15, dtype=torch.float32).reshape(1, 3, 5)
    want = torch.tensor([[[3.0, 5.0, 6.5], [10.5, 12.5, 14.0]]])  # last row/column averaged with itself
    torch.testing.assert_close(_halve(t), want)


@pytest.mark.parametrize("size, match", [((10**9, 10**9), "at most 8192"), ((float("inf"), 64), r"\(height, width\)")])
def test_a_size_too_large_to_allocate_is_a_config_error(size, match):
    """size=[1e9,1e9] was a RuntimeError from torch.empty, size=[Infinity,64] an OverflowError from int()."""
    from crl_uiqa.errors import ConfigError

    img = np.zeros((32, 32), np.float32)
    with pytest.raises(ConfigError, match=match):
        mssim_score([img], [img], size=size)
