"""Tests of the quality pseudo-labels (paper Sec. 2.1, Eq. 1-3) against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import cdist

from crl_uiqa.pseudo_labels import (
    compute_pseudo_labels,
    label_images,
    minmax,
    pseudo_labels_from_distances,
    topk_mean_distance,
    yeo_johnson,
)

torch.set_num_threads(1)

# images x_1..x_3 and references g_1..g_3 in a 2-D embedding space
IMAGES = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
REFS = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
S18, S20, S85, S89 = math.sqrt(18), math.sqrt(20), math.sqrt(85), math.sqrt(89)
# D_{x_i} by hand, sorted ascending:
#   (0,0): |0,0|=0, |0,-1|=1, |-1,0|=1
#   (3,4): |3,3|=sqrt18, |2,4|=sqrt20, |3,4|=5
#   (6,8): |6,7|=sqrt85, |5,8|=sqrt89, |6,8|=10
HAND_TOPK = {
    1: [0.0, S18, S85],
    2: [0.5, (S18 + S20) / 2, (S85 + S89) / 2],
    3: [2 / 3, (S18 + S20 + 5) / 3, (S85 + S89 + 10) / 3],
}


# --------------------------------------------------------------------------- Eq. 1
@pytest.mark.parametrize("k", [1, 2, 3])
def test_eq1_topk_mean_distance_by_hand(k):
    d = topk_mean_distance(IMAGES, REFS, k)
    assert d.dtype == np.float64 and d.shape == (3,)
    np.testing.assert_allclose(d, HAND_TOPK[k], rtol=1e-12, atol=1e-15)
    # float32 input: same values to float32 precision
    d32 = topk_mean_distance(IMAGES.astype(np.float32), REFS.astype(np.float32), k)
    np.testing.assert_allclose(d32, HAND_TOPK[k], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_eq1_sign_score_is_minus_mean(k):
    pl = compute_pseudo_labels(IMAGES, REFS, k=k, smoothing=False)
    np.testing.assert_allclose(pl.score, -np.asarray(HAND_TOPK[k]), rtol=1e-12, atol=1e-15)
    assert pl.k == k and pl.lmbda is None
    # without smoothing, q = (s - min s) / (max s - min s)
    d = np.asarray(HAND_TOPK[k])
    np.testing.assert_allclose(pl.label, (d.max() - d) / (d.max() - d.min()), rtol=1e-12)


def test_eq1_k1_labels_by_hand():
    pl = compute_pseudo_labels(IMAGES, REFS, k=1, smoothing=False)
    np.testing.assert_allclose(pl.label, [1.0, 1.0 - S18 / S85, 0.0], rtol=1e-12, atol=1e-15)


def test_eq1_matches_scipy_cdist_and_chunking(rng):
    x = rng.normal(size=(53, 16))
    r = rng.normal(size=(7, 16))
    want = np.sort(cdist(x, r), axis=1)[:, :4].mean(axis=1)
    big = topk_mean_distance(x, r, 4)
    small = topk_mean_distance(x, r, 4, chunk_size=2)
    np.testing.assert_allclose(big, want, rtol=1e-12)
    # chunking and the torch path group the arithmetic differently: equal up to rounding
    np.testing.assert_allclose(small, big, rtol=1e-12)
    t = topk_mean_distance(torch.from_numpy(x), torch.from_numpy(r), 4, chunk_size=5)
    np.testing.assert_allclose(t, big, rtol=1e-12)


# --------------------------------------------------------------------------- Eq. 2
def _yeo_johnson_by_formula(y: np.ndarray, lam: float) -> np.ndarray:
    """Yeo & Johnson (2000), Eq. 2.1, written out case by case."""
    out = np.empty_like(y, dtype=np.float64)
    for i, v in enumerate(y):
        if v >= 0 and lam != 0:
            out[i] = ((v + 1) ** lam - 1) / lam
        elif v >= 0:
            out[i] = math.log(v + 1)
        elif lam != 2:
            out[i] = -((-v + 1) ** (2 - lam) - 1) / (2 - lam)
        else:
            out[i] = -math.log(-v + 1)
    return out


def test_eq2_fixed_lambda_by_hand():
    out, lam = yeo_johnson(np.array([3.0, -3.0, 0.0]), lmbda=0.5)
    assert lam == 0.5
    # y=3: ((3+1)^0.5 - 1) / 0.5 = 2;  y=-3: -((3+1)^1.5 - 1) / 1.5 = -14/3;  y=0: 0
    np.testing.assert_allclose(out, [2.0, -14.0 / 3.0, 0.0], rtol=1e-12, atol=1e-15)
    # the logarithmic branches: lambda=0 for y >= 0, lambda=2 for y < 0
    e1 = math.e - 1
    np.testing.assert_allclose(yeo_johnson(np.array([e1]), 0.0)[0], [1.0], rtol=1e-12)
    np.testing.assert_allclose(yeo_johnson(np.array([-e1]), 2.0)[0], [-1.0], rtol=1e-12)
    # lambda = 1 is the identity
    y = np.array([-2.5, -0.1, 0.0, 0.7, 4.0])
    np.testing.assert_allclose(yeo_johnson(y, 1.0)[0], y, rtol=1e-12, atol=1e-15)


def test_eq2_formula_on_skewed_scores(rng):
    y = -rng.lognormal(0.0, 0.8, size=40)  # like s_i = -distance: negative, long-tailed
    for lam in (-0.7, 0.3, 1.8, 2.5):
        np.testing.assert_allclose(yeo_johnson(y, lam)[0], _yeo_johnson_by_formula(y, lam), rtol=1e-10)


def test_eq2_mle_lambda_matches_scipy_and_maximises_likelihood(rng):
    y = -rng.lognormal(1.0, 0.6, size=200)
    out, lam = yeo_johnson(y)
    assert lam == pytest.approx(stats.yeojohnson_normmax(y), rel=1e-6)
    np.testing.assert_allclose(out, _yeo_johnson_by_formula(y, lam), rtol=1e-9)
    llf = stats.yeojohnson_llf
    assert llf(lam, y) >= llf(lam - 0.05, y) and llf(lam, y) >= llf(lam + 0.05, y)
    # the transform reduces the skew of a long-tailed sample
    assert abs(stats.skew(out)) < abs(stats.skew(y))


# --------------------------------------------------------------------------- Eq. 3
def test_eq3_minmax_by_hand():
    np.testing.assert_allclose(minmax(np.array([2.0, -1.0, 5.0, 3.0])), [0.5, 0.0, 1.0, 4.0 / 6.0], rtol=1e-12)
    np.testing.assert_allclose(minmax(np.array([1.0, 2.0]), lo=0.0, hi=4.0), [0.25, 0.5])
    with pytest.raises(ValueError, match="equal"):
        minmax(np.array([1.0, 1.0]))


def test_eq1_to_eq3_by_hand_without_smoothing():
    pl = pseudo_labels_from_distances(np.array([1.0, 2.0, 4.0]), k=3, smoothing=False)
    np.testing.assert_allclose(pl.score, [-1.0, -2.0, -4.0])
    np.testing.assert_allclose(pl.label, [1.0, 2.0 / 3.0, 0.0], rtol=1e-12)


def test_eq1_to_eq3_with_smoothing(rng):
    d = rng.lognormal(0.0, 0.7, size=30)
    pl = pseudo_labels_from_distances(d, k=5)
    lam = stats.yeojohnson_normmax(-d)
    assert pl.lmbda == pytest.approx(lam, rel=1e-6)
    s_hat = _yeo_johnson_by_formula(-d, pl.lmbda)
    np.testing.assert_allclose(pl.smoothed, s_hat, rtol=1e-9)
    np.testing.assert_allclose(pl.label, (s_hat - s_hat.min()) / (s_hat.max() - s_hat.min()), rtol=1e-9, atol=1e-12)
    # best (smallest distance) = 1, worst = 0, order preserved (the transform is monotone)
    assert pl.label[np.argmin(d)] == 1.0 and pl.label[np.argmax(d)] == 0.0
    np.testing.assert_array_equal(np.argsort(pl.label, kind="stable"), np.argsort(-d, kind="stable"))


# --------------------------------------------------------------------------- edge cases
def test_k_larger_than_n():
    with pytest.raises(ValueError, match=r"k=4 .*n=3"):
        topk_mean_distance(IMAGES, REFS, 4)


@pytest.mark.parametrize("k", [0, -1, 1.5])
def test_k_not_positive_integer(k):
    with pytest.raises(ValueError, match=r"k \(--k\) must be (an integer|>= 1)"):
        topk_mean_distance(IMAGES, REFS, k)


def test_fewer_than_two_images():
    with pytest.raises(ValueError, match="at least 2 images"):
        compute_pseudo_labels(IMAGES[:1], REFS, k=1)
    with pytest.raises(ValueError, match="at least 2 images"):
        pseudo_labels_from_distances(np.array([1.0]), k=1)


def test_all_equal_distances():
    # all images at the same place: every distance equal, the labels would carry nothing
    with pytest.raises(ValueError, match="equal"):
        compute_pseudo_labels(np.ones((4, 2)), REFS, k=2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings(bad):
    x = IMAGES.copy()
    x[1, 0] = bad
    with pytest.raises(ValueError, match="image embeddings contain NaN or inf"):
        topk_mean_distance(x, REFS, 1)
    r = REFS.copy()
    r[0, 1] = bad
    with pytest.raises(ValueError, match="reference embeddings contain NaN or inf"):
        topk_mean_distance(IMAGES, r, 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        pseudo_labels_from_distances(np.array([1.0, bad, 2.0]), k=1)


def test_finite_check_is_not_fooled_by_an_overflowing_sum():
    from crl_uiqa.pseudo_labels import _check_embeddings

    big = np.full((4, 2), 2e38, dtype=np.float32)  # finite, but the float32 sum overflows to inf
    assert _check_embeddings(big, "x").shape == (4, 2)
    big[2, 1] = np.nan
    with pytest.raises(ValueError, match="x contain NaN or inf"):
        _check_embeddings(big, "x")


def test_shape_errors():
    with pytest.raises(ValueError, match="embedding sizes differ: images 2, references 3"):
        topk_mean_distance(IMAGES, np.ones((3, 3)), 1)
    with pytest.raises(ValueError, match="2-D"):
        topk_mean_distance(IMAGES[0], REFS, 1)
    with pytest.raises(ValueError, match="empty"):
        topk_mean_distance(np.zeros((0, 2)), REFS, 1)


# --------------------------------------------------------------------------- end to end
def test_label_images_on_hc18(hc18_dir, sononet16_path, tmp_path, caplog):
    images = sorted((hc18_dir / "images").glob("*_HC.png"))[:6]
    refs = images[:3]  # the references are among the images
    with caplog.at_level("WARNING", logger="crl_uiqa.pseudo_labels"):
        res = label_images([str(p) for p in images], [str(p) for p in refs], k=1, weights=sononet16_path,
                           device="cpu", num_workers=0, batch_size=6, progress=False)
    # ...which the user is told: they are their own nearest references
    assert "3 of the 6 images are also references" in caplog.text
    assert res.paths == [str(p) for p in images] and not res.failures
    d = res.labels.distance
    # with k=1 a reference's nearest reference is itself (batching may change the last float bits)
    np.testing.assert_allclose(d[:3], 0.0, atol=1e-2)
    assert d[3:].min() > 10 * d[:3].max() + 1e-3
    q = res.labels.label
    assert q.min() == 0.0 and q.max() == 1.0
    assert q[:3].min() > q[3:].max()
    assert res.labels.lmbda is not None
    out = res.to_csv(tmp_path / "pl.csv")
    header = out.read_text().splitlines()[0]
    assert header == "path,distance,score,smoothed,pseudo_label"
    with pytest.raises(ValueError, match="k=4"):
        label_images([str(p) for p in images], [str(p) for p in refs], k=4, weights=sononet16_path,
                     device="cpu", num_workers=0, progress=False)
    with pytest.raises(ValueError, match="at least 2 images"):
        label_images([str(images[0])], [str(p) for p in refs], k=1, weights=sononet16_path, device="cpu",
                     num_workers=0, progress=False)


def test_functional_inputs_of_any_array_kind_or_clear_errors():
    """Lists, float32/float64 arrays and tensors (also ones that require grad) give the same labels; a bad setting
    is a ConfigError and a bad input an InputError (both CRLUIQAError and ValueError), never torch's own error."""
    from crl_uiqa.errors import ConfigError, InputError

    expected = compute_pseudo_labels(IMAGES, REFS, k=2).label
    for x, r in ((IMAGES.tolist(), REFS.tolist()), (IMAGES.astype(np.float32), REFS.astype(np.float32)),
                 (torch.tensor(IMAGES, requires_grad=True), torch.tensor(REFS))):
        np.testing.assert_allclose(compute_pseudo_labels(x, r, k=2).label, expected, atol=1e-6)
    for kwargs in (dict(k=True), dict(k=2, smoothing="no"), dict(k=2, chunk_size=0), dict(k=2, device="tpu")):
        with pytest.raises(ConfigError):
            compute_pseudo_labels(IMAGES, REFS, **kwargs)
    with pytest.raises(ConfigError, match=r"k=4 \(--k\) is larger"):
        compute_pseudo_labels(IMAGES, REFS, k=4)
    for x in (IMAGES[0], np.zeros((0, IMAGES.shape[1])), [["a", "b"]], np.full_like(IMAGES, np.nan)):
        with pytest.raises(InputError):
            compute_pseudo_labels(x, REFS, k=1)


def test_float64_on_either_side_computes_in_float64():
    """Image embeddings in float32 against float64 references were computed in float32 (the images' type alone
    decided); now either side in float64 promotes, as numpy does."""
    rng = np.random.default_rng(5)
    x32, r64 = rng.random((6, 16)).astype(np.float32), rng.random((4, 16))
    exact = topk_mean_distance(x32.astype(np.float64), r64, 2)
    np.testing.assert_allclose(topk_mean_distance(x32, r64, 2), exact, rtol=1e-13, atol=0)
    np.testing.assert_allclose(topk_mean_distance(r64[:2].astype(np.float32).repeat(3, 0), x32.astype(np.float64), 2),
                               topk_mean_distance(r64[:2].astype(np.float32).astype(np.float64).repeat(3, 0),
                                                  x32.astype(np.float64), 2), rtol=1e-13, atol=0)
