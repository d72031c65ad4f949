"""SDD-FIQA: Wasserstein distances by hand, scaling, sampling, and SDD-FIQA* training."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from crl_uiqa.baselines import run_baseline
from crl_uiqa.baselines.sddfiqa import (
    sddfiqa_files,
    sddfiqa_from_embeddings,
    sddfiqa_score,
    sddfiqa_star,
    wasserstein_quality,
)


# ----------------------------------------------------------------------------- the distance
def test_wasserstein_hand_cases():
    assert wasserstein_quality([1, 1], [0, 0]) == pytest.approx(1.0)
    # sorted [0, 1] against [0.5, 0.5]: mean |difference| = 0.5
    assert wasserstein_quality([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    # one positive against two negatives: (|0.8 - 0| + |0.8 - 0.6|) / 2
    assert wasserstein_quality([0.8], [0.0, 0.6]) == pytest.approx(0.5)
    # unsigned (as the reference code) unless asked
    assert wasserstein_quality([0, 0], [1, 1]) == pytest.approx(1.0)
    assert wasserstein_quality([0, 0], [1, 1], signed=True) == pytest.approx(-1.0)
    assert wasserstein_quality([1, 1], [0, 0], signed=True) == pytest.approx(1.0)


def test_wasserstein_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        wasserstein_quality([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        wasserstein_quality([np.nan], [1.0])


# ----------------------------------------------------------------------------- the scores
# unit vectors; classes A = {x0, x1}, B = {x2, x3}
X = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.28, 0.96]])
LABELS = ["A", "A", "B", "B"]


def test_scores_hand_computed():
    # cosines: x0.x1 = 0.8, x0.x2 = 0, x0.x3 = 0.28, x1.x2 = 0.6, x1.x3 = 0.8, x2.x3 = 0.96
    # WD: x0 {0.8} vs {0, 0.28} = 0.66; x1 {0.8} vs {0.6, 0.8} = 0.1;
    #     x2 {0.96} vs {0, 0.6} = 0.66; x3 {0.96} vs {0.28, 0.8} = 0.42
    # min-max over the set: 1, 0, 1, (0.42 - 0.1) / 0.56 = 4/7
    q = sddfiqa_from_embeddings(X * [[3.0], [1.0], [2.0], [0.5]], LABELS)  # cosine ignores the norm
    np.testing.assert_allclose(q, [1.0, 0.0, 1.0, 4 / 7], atol=1e-12)
    # every pair used: repetitions change nothing, labels of any type work
    np.testing.assert_allclose(sddfiqa_from_embeddings(X, [7, 7, 9, 9], repetitions=1, seed=5), q, atol=1e-12)


def test_minmax_scaling_and_singletons(rng, caplog):
    e = rng.normal(size=(30, 8))
    labels = ["a"] * 14 + ["b"] * 15 + ["c"]
    with caplog.at_level(logging.WARNING):
        q = sddfiqa_from_embeddings(e, labels, n_pairs=5, repetitions=3)
    ok = np.arange(30) < 29
    assert q[ok].min() == pytest.approx(0.0) and q[ok].max() == pytest.approx(1.0)
    assert q[29] == 0.0  # alone in its class: lowest score
    assert "alone in their class" in caplog.text


def test_sampling_repeats_for_a_seed(rng):
    e = rng.normal(size=(60, 6))
    labels = np.repeat(["x", "y", "z"], 20)
    a = sddfiqa_from_embeddings(e, labels, n_pairs=4, repetitions=3, seed=11)
    b = sddfiqa_from_embeddings(e, labels, n_pairs=4, repetitions=3, seed=11, chunk_size=7)
    c = sddfiqa_from_embeddings(e, labels, n_pairs=4, repetitions=3, seed=12)
    # the same draws whatever the chunk size; the sums are grouped differently per chunk, so the
    # floats may differ in the last bits (2.8e-16 seen under another BLAS): compare with a tolerance
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert not np.allclose(a, c)


def test_more_repetitions_reduce_the_sampling_noise(rng):
    e = rng.normal(size=(80, 6))
    labels = np.repeat([0, 1], 40)
    full = sddfiqa_from_embeddings(e, labels, n_pairs=1000)  # all pairs: the exact value

    def err(reps):
        return np.mean([np.abs(sddfiqa_from_embeddings(e, labels, n_pairs=8, repetitions=reps, seed=s) - full).mean()
                        for s in range(3)])

    assert err(12) < err(1)


@pytest.mark.parametrize(
    "emb, labels, kwargs, match",
    [
        (X, ["A"] * 4, {}, "at least two classes"),
        (X, ["A", "B", "C", "D"], {}, "single image"),
        (X, ["A", "B"], {}, "2 labels for 4 images"),
        (X, ["A", "", "B", "B"], {}, r"labels\[1\] is empty"),
        (X, "AABB", {}, "not a string"),
        (X[:1], ["A"], {}, "shape"),
        (np.array([[np.nan, 1.0], [1.0, 0.0]]), ["A", "B"], {}, "NaN"),
        (X, LABELS, {"n_pairs": 0}, "n_pairs must be >= 1, got 0"),
        (X, LABELS, {"repetitions": 1.5}, "repetitions must be an integer, got 1.5"),
    ],
)
def test_bad_input(emb, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sddfiqa_from_embeddings(emb, labels, **kwargs)


def test_registry_checks_before_running_the_network():
    imgs = [np.zeros((20, 20), np.float32)] * 3
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        run_baseline("sddfiqa", imgs, labels=["a", "b"])
    with pytest.raises(ValueError, match="at least 2 images"):
        sddfiqa_score(imgs[:1])
    with pytest.raises(ValueError, match=r"images\[2\]: values must lie"):
        sddfiqa_score(imgs[:2] + [imgs[0] - 1])


# ----------------------------------------------------------------------------- with SonoNet
@pytest.fixture(scope="module")
def net(sononet16_path):
    import torch

    from crl_uiqa.backbones import get_backbone

    torch.set_num_threads(1)
    return get_backbone("sononet16", sononet16_path)


def _images(n, seed=0):
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:48, 0:60]
    return [np.clip(0.5 + 0.4 * np.sin(x / (3 + i)) * np.cos(y / 5) + r.normal(0, 0.05 * i, x.shape), 0, 1)
            .astype(np.float32) for i in range(n)]


def test_sddfiqa_score_with_labels(net):
    imgs = _images(6)
    q = run_baseline("sddfiqa", imgs, weights=net, device="cpu", labels=list("aabbcc"), size=(64, 80))
    assert q.shape == (6,) and q.min() == pytest.approx(0.0) and q.max() == pytest.approx(1.0)
    # same embeddings by hand: pooled block5 at the same size
    import torch

    from crl_uiqa.io import to_tensor

    with torch.inference_mode():
        e = net.embed(torch.stack([to_tensor(im, (64, 80)) for im in imgs]), "block5").double().numpy()
    np.testing.assert_allclose(q, sddfiqa_from_embeddings(e, list("aabbcc")), atol=1e-6)


def test_sddfiqa_star_trains_on_sdd_labels(net, sononet16_path, tmp_path):
    from crl_uiqa.io import write_gray_png
    from crl_uiqa.model import ModelConfig
    from crl_uiqa.training import TrainConfig

    rows = ["path,label"]
    for i, im in enumerate(_images(6, seed=1)):
        write_gray_png(tmp_path / f"im{i}.png", im)
        rows.append(f"im{i}.png,{'ab'[i % 2]}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    paths, scores, used = sddfiqa_files(tmp_path / "train.csv", weights=sononet16_path, device="cpu", num_workers=0,
                                        progress=False)
    assert used == list("ababab") and scores.min() == 0.0 and scores.max() == 1.0
    res = sddfiqa_star(tmp_path / "train.csv", weights=sononet16_path, device="cpu", num_workers=0, progress=False,
                       train_config=TrainConfig(epochs=1, batch_size=4, val_fraction=0.0),
                       model_config=ModelConfig(image_size=(32, 40), train_from="head"), run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").is_file()
    from crl_uiqa.files import read_csv

    written = read_csv(tmp_path / "run" / "sddfiqa_labels.csv")
    np.testing.assert_allclose([float(r["label"]) for r in written], scores)
    assert [r["class"] for r in written] == used
    assert sorted(res.train_paths) == sorted(paths)
    with pytest.raises(ValueError, match="at least two classes"):
        sddfiqa_files(tmp_path / "train.csv", labels=["a"] * 6, weights=sononet16_path, device="cpu", num_workers=0,
                      progress=False)


def test_sddfiqa_star_with_the_default_anchored_settings_trains_the_papers_head(sononet16_path, tmp_path):
    """The anchored head would ignore the SDD-FIQA labels (it needs references and learns their distance score):
    SDD-FIQA* given the project's defaults trains the paper's head with the paper's settings, keeping the size."""
    from crl_uiqa.io import write_gray_png
    from crl_uiqa.model import ModelConfig
    from crl_uiqa.training import TrainConfig, settings

    rows = ["path,label"]
    for i, im in enumerate(_images(6, seed=2)):
        write_gray_png(tmp_path / f"im{i}.png", im)
        rows.append(f"im{i}.png,{'ab'[i % 2]}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    t_over, m_over = settings()
    assert m_over["head"] == "anchored"
    tc = TrainConfig(**{**t_over, "epochs": 1, "batch_size": 4, "val_fraction": 0.0})
    res = sddfiqa_star(tmp_path / "train.csv", weights=sononet16_path, device="cpu", num_workers=0, progress=False,
                       train_config=tc, model_config=ModelConfig(image_size=(32, 40), **m_over))
    assert res.model.config.head == "paper" and tuple(res.model.config.image_size) == (32, 40)
    assert [r["epoch"] for r in res.history][-1] == settings(paper=True)[0]["epochs"]


def test_labels_that_are_not_a_sequence_are_an_input_error():
    """``--option labels=5`` was a TypeError ("'int' object is not iterable"), reported as a crl-uiqa bug."""
    from crl_uiqa.errors import InputError

    e = np.random.default_rng(0).normal(size=(6, 4))
    with pytest.raises(InputError, match="labels must be a sequence with one label per image, got 5"):
        sddfiqa_from_embeddings(e, 5)
