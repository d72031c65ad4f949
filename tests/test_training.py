"""Co-learning end to end on a few images: learning, checkpoints, resume, scoring, fit/score/evaluate CLI."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from crl_uiqa.cli import main
from crl_uiqa.errors import ConfigError
from crl_uiqa.io import write_gray_png
from crl_uiqa.model import ModelConfig, build_model
from crl_uiqa.scoring import score_paths
from crl_uiqa.training import TrainConfig, load_model, save_model, split_train_val, train

SIZE = (48, 64)


def _images(tmp_path, n=12, seed=0):
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    yy, xx = np.mgrid[0:60, 0:80]
    for i in range(n):
        q = i / (n - 1)
        img = 0.5 + 0.3 * np.sin(xx / 4.0) * np.cos(yy / 5.0)
        img = img * q + (1 - q) * rng.uniform(0, 1, img.shape)
        p = tmp_path / f"img{i:02d}.png"
        write_gray_png(p, img)
        paths.append(str(p))
        labels.append(q)
    return paths, labels


def _cfg(**kw):
    base = dict(epochs=2, batch_size=4, lr=1e-2, val_fraction=0.25, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_split_is_disjoint_and_seeded():
    tr, va = split_train_val(20, 0.25, seed=1)
    assert len(va) == 5 and not set(tr) & set(va) and len(tr) + len(va) == 20
    assert np.array_equal(split_train_val(20, 0.25, seed=1)[1], va)


def test_train_checkpoint_and_exact_resume(tmp_path, sononet16_path):
    paths, labels = _images(tmp_path)
    mc = ModelConfig(image_size=SIZE)
    full = train(paths, labels, config=_cfg(epochs=2), model_config=mc, weights=sononet16_path,
                 run_dir=tmp_path / "full", num_workers=0, progress=False)
    # epoch 0 is the model before training, then one row per epoch
    assert [r["epoch"] for r in full.history] == [0, 1, 2]
    assert {"l_d", "l_c", "l_r", "val_srcc"} <= set(full.history[1]) and "val_srcc" in full.history[0]
    for f in ("model.safetensors", "model.json", "last.safetensors", "last.json", "history.csv"):
        assert (tmp_path / "full" / f).exists()
    # interrupted after epoch 1, then resumed: the same model as the uninterrupted run
    with pytest.raises(_Stop):
        train(paths, labels, config=_cfg(epochs=2), model_config=mc, weights=sononet16_path,
              run_dir=tmp_path / "part", num_workers=0, progress=False, on_epoch=_stop_after_first)
    resumed = train(paths, labels, config=_cfg(epochs=2), model_config=mc, weights=sononet16_path,
                    run_dir=tmp_path / "part", resume=True, num_workers=0, progress=False)
    assert len(resumed.history) == 3
    a, _ = load_model(tmp_path / "full")
    b, _ = load_model(tmp_path / "part")
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        # bit-identity is the point of resume, and one machine runs both along the same path
        assert torch.equal(va, vb), k
    s1 = score_paths(a, paths[:4], num_workers=0, progress=False)
    assert s1.paths == paths[:4] and np.isfinite(s1.scores).all()


class _Stop(Exception):
    pass


def _stop_after_first(row):
    if row["epoch"] == 1:
        raise _Stop


def test_interrupt_leaves_resumable_checkpoint(tmp_path, sononet16_path):
    paths, labels = _images(tmp_path)
    with pytest.raises(_Stop):
        train(paths, labels, config=_cfg(epochs=3), model_config=ModelConfig(image_size=SIZE),
              weights=sononet16_path, run_dir=tmp_path / "r", num_workers=0, progress=False, on_epoch=_stop_after_first)
    # epoch 1 is checkpointed before the interruption; no final model is claimed
    meta = json.loads((tmp_path / "r" / "last.json").read_text())
    assert meta["epoch"] == 0 and [r["epoch"] for r in meta["history"]] == [0, 1]
    assert not (tmp_path / "r" / "model.safetensors").exists()
    assert not list((tmp_path / "r").glob("*.tmp*"))  # no half-written files


def test_resume_refuses_changed_settings(tmp_path, sononet16_path):
    paths, labels = _images(tmp_path)
    train(paths, labels, config=_cfg(epochs=1), model_config=ModelConfig(image_size=SIZE), weights=sononet16_path,
          run_dir=tmp_path / "r", num_workers=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(paths, labels, config=_cfg(epochs=2, lr=0.5), model_config=ModelConfig(image_size=SIZE),
              weights=sononet16_path, run_dir=tmp_path / "r", resume=True, num_workers=0, progress=False)


def test_resume_refuses_other_epochs(tmp_path, sononet16_path):
    # the linear lr schedule spans the run's epochs: a resume with other epochs made a model no run makes
    paths, labels = _images(tmp_path)
    kw = dict(model_config=ModelConfig(image_size=SIZE), weights=sononet16_path, run_dir=tmp_path / "r",
              num_workers=0, progress=False)
    train(paths, labels, config=_cfg(epochs=1), **kw)
    for epochs in (2, 3):
        with pytest.raises(ValueError, match=r"settings differ from the checkpoint \(epochs\)"):
            train(paths, labels, config=_cfg(epochs=epochs), resume=True, **kw)
    assert json.loads((tmp_path / "r" / "model.json").read_text())["train_config"]["epochs"] == 1


def test_bad_labels_are_clear_errors(tmp_path):
    paths, labels = _images(tmp_path, n=4)
    with pytest.raises(ValueError, match="NaN"):
        train(paths, [0.1, float("nan"), 0.3, 0.4], config=_cfg(), progress=False)
    with pytest.raises(ValueError, match="equal"):
        train(paths, [0.5] * 4, config=_cfg(), progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        train(paths[:1], [0.5], config=_cfg(), progress=False)
    from crl_uiqa.errors import InputError  # a CRLUIQAError, as every input problem (they were plain ValueError)

    with pytest.raises(InputError, match="4 paths but 2 labels"):
        train(paths, [0.1, 0.2], config=_cfg(), progress=False)
    with pytest.raises(InputError, match="NaN"):
        train(paths, [0.1, float("nan"), 0.3, 0.4], config=_cfg(), progress=False)


def test_checkpoint_is_not_pickle(tmp_path):
    m = build_model(ModelConfig(image_size=SIZE), pretrained=False)
    save_model(m, tmp_path)
    raw = (tmp_path / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header_len])  # a safetensors JSON header, no pickle opcodes
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["model_config"]["image_size"] == list(SIZE)
    m2, _ = load_model(tmp_path)
    x = torch.rand(2, 1, *SIZE)
    assert torch.allclose(m.eval()(x), m2(x))


def test_regression_learns_labels(tmp_path, sononet16_path):
    """Pseudo-label-only regression on an easy set moves predictions toward the labels."""
    paths, labels = _images(tmp_path, n=16)
    res = train(paths, labels, config=_cfg(epochs=6, consistency=False, relativity=False, val_fraction=0.0),
                model_config=ModelConfig(image_size=SIZE), weights=sononet16_path, num_workers=0, progress=False)
    assert res.history[-1]["l_d"] < res.history[1]["l_d"]


def test_cli_fit_score_evaluate(tmp_path, sononet16_path, capsys):
    paths, _ = _images(tmp_path / "imgs" if (tmp_path / "imgs").mkdir() is None else tmp_path, n=10)
    refs = tmp_path / "refs"
    refs.mkdir()
    for p in paths[-3:]:
        Path(refs / Path(p).name).write_bytes(Path(p).read_bytes())
    run = tmp_path / "run"
    rc = main(["fit", "--images", str(tmp_path / "imgs"), "--references", str(refs), "--out", str(run), "--k", "2",
               "--epochs", "1", "--min-steps", "0", "--batch-size", "4", "--image-size", str(SIZE[0]), str(SIZE[1]), "--weights",
               str(sononet16_path), "--workers", "0", "--quiet"])
    assert rc == 0 and (run / "labels.csv").exists() and (run / "model.safetensors").exists()
    scores = tmp_path / "scores.csv"
    assert main(["score", "--model", str(run), "--images", str(tmp_path / "imgs"), "--out", str(scores),
                 "--workers", "0", "--quiet"]) == 0
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("better,worse,type\n" + "".join(f"{paths[i + 5]},{paths[i]},noise\n" for i in range(5)))
    capsys.readouterr()
    assert main(["evaluate", "--scores", str(scores), "--pairs", str(pairs), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["overall"]["n"] == 5 and 0.0 <= out["overall"]["accuracy"] <= 1.0


# ---------------------------------------------------------------- anchored head, kept epoch, warnings
class _MeanBackbone(torch.nn.Module):
    """Toy trunk: the feature map is the image itself, so the pooled embedding is the image mean."""

    out_channels = 1
    input_size = SIZE
    blocks = []

    def feature_maps(self, x, until="block5"):
        return x

    def embed(self, x, layer="block4"):
        return x.mean(dim=(2, 3))


def _anchored_toy(lmbda):
    from crl_uiqa.model import QualityModel

    m = QualityModel(_MeanBackbone(), ModelConfig(image_size=SIZE, head="anchored", proj_channels=4,
                                                  anchor={"layer": "block4", "k": 2, "n_references": 3, "dim": 1,
                                                          "smoothing": lmbda is not None}))
    m.anchor.set(torch.tensor([[0.0], [1.0], [0.2]]), lmbda, -1.0, 0.0)
    return m.eval()


@torch.no_grad()
def test_anchored_head_starts_at_the_teacher_hand_checked():
    from scipy import stats

    x = torch.full((1, 1, *SIZE), 0.5)
    # embedding 0.5; distances to the references 0.5, 0.5, 0.3; k = 2 -> mean 0.4 -> s = -0.4
    m = _anchored_toy(None)
    assert float(m(x)) == pytest.approx(0.6, abs=1e-6)  # (s - lo) / (hi - lo) = (-0.4 + 1) / 1
    # Yeo-Johnson with lambda 0.5, negative branch: -((1 - s)^1.5 - 1) / 1.5 = -(1.4^1.5 - 1) / 1.5 = -0.437668
    m = _anchored_toy(0.5)
    assert float(m(x)) == pytest.approx(1 - 0.437668, abs=1e-5)
    assert float(m(x)) == pytest.approx(1 + float(stats.yeojohnson(np.array([-0.4]), lmbda=0.5)[0]), abs=1e-6)
    # the model equals its teacher term exactly at initialisation: the correction starts at zero
    xs = torch.rand(3, 1, *SIZE)
    assert torch.allclose(m(xs), m.teacher_score(xs), atol=1e-7)
    q0, correction = m.anchored_terms(xs)  # one trunk pass gives both terms
    assert torch.allclose(q0, m.teacher_score(xs), atol=1e-7)
    assert torch.allclose(correction, torch.zeros(3), atol=1e-7)


@torch.no_grad()
def test_anchored_head_on_sononets_adaptation_layer_starts_at_the_teacher():
    """The demo's layer: SonoNet's pooled pre-logit map (1x1 conv + BN + ReLU after block5). The teacher term is
    recomputed here by hand from ``embed(x, "adaptation")``: Euclidean distances to the references, mean of the k
    nearest, scipy's Yeo-Johnson, min-max."""
    from scipy import stats

    from crl_uiqa.backbones.sononet import SonoNet
    from crl_uiqa.model import QualityModel

    torch.manual_seed(0)
    net = SonoNet(16).eval()
    for m in net.modules():  # non-trivial BN statistics, so the map's BN + ReLU matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(4, 1, 64, 80)
    refs = torch.rand(3, 1, 64, 80)
    e, r = net.embed(x, "adaptation").double().numpy(), net.embed(refs, "adaptation").double().numpy()
    assert e.shape == (4, 64)
    # the map's average is the pre-logit embedding: the first 1x1 conv block applied to block5's map
    assert np.allclose(net.embedding_map(x, "adaptation").mean(dim=(2, 3)).numpy(),
                       net.adaptation[0](net.feature_maps(x, until="block5")).mean(dim=(2, 3)).numpy(), atol=1e-6)
    d = np.sqrt(((e[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    s = -np.sort(d, axis=1)[:, :2].mean(axis=1)  # k = 2
    lmbda, lo, hi = 0.7, float(stats.yeojohnson(s, lmbda=0.7).min()) - 0.1, float(stats.yeojohnson(s, lmbda=0.7).max())
    expected = (stats.yeojohnson(s, lmbda=lmbda) - lo) / (hi - lo)
    m = QualityModel(net, ModelConfig(image_size=(64, 80), head="anchored", train_from="head", proj_channels=4,
                                      anchor={"layer": "adaptation", "k": 2, "n_references": 3, "dim": 64}))
    m.anchor.set(torch.from_numpy(r).float(), lmbda, lo, hi)
    m.eval()
    assert np.allclose(m(x).numpy(), expected, atol=1e-4)
    q0, correction = m.anchored_terms(x)
    assert torch.allclose(q0, m(x), atol=1e-6) and torch.allclose(correction, torch.zeros(4), atol=1e-7)
    # the trunk (with the adaptation block) is frozen; only the correction learns
    assert not any(p.requires_grad for p in m.backbone.parameters())
    # logits/probs have no feature map to correct: refused when the model is built
    with pytest.raises(ValueError, match="feature-map layer"):
        QualityModel(SonoNet(16), ModelConfig(image_size=(64, 80), head="anchored",
                                              anchor={"layer": "probs", "k": 2, "n_references": 3, "dim": 14}))


def test_anchored_head_needs_references(tmp_path):
    paths, labels = _images(tmp_path, n=4)
    with pytest.raises(ValueError, match="reference"):
        train(paths, labels, config=_cfg(), model_config=ModelConfig(image_size=SIZE, head="anchored"), progress=False)


def test_lr0_anchored_run_keeps_the_teacher_and_warns(tmp_path, sononet16_path, caplog, capsys):
    """A run that cannot learn (lr ~ 0) keeps epoch 0, the teacher itself, and says so; --strict fails."""
    from crl_uiqa.pseudo_labels import label_images

    paths, _ = _images(tmp_path, n=12)
    refs = paths[-3:]
    pl = label_images(paths, refs, k=2, weights=sononet16_path, size=SIZE, num_workers=0, progress=False)
    mc = ModelConfig(image_size=SIZE, head="anchored", train_from="head", anchor={"k": 2})
    res = train(pl.paths, pl.labels.label, config=_cfg(epochs=2, lr=1e-12, select="best"), model_config=mc,
                weights=sononet16_path, references=refs, run_dir=tmp_path / "run", num_workers=0, progress=False)
    assert res.kept_epoch == 0
    assert any("did not learn" in w and "learning rate 1e-12" in w and "teacher" in w for w in res.warnings)
    assert "did not learn" in caplog.text
    # the kept model scores every image with its pseudo-label (up to the 8-bit training cache)
    s = score_paths(res.model, pl.paths, num_workers=0, progress=False)
    assert np.allclose(s.scores, pl.labels.label, atol=2e-3)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["kept_epoch"] == 0 and meta["warnings"] == res.warnings
    # the same through the CLI: a warning on stderr, and status 3 with --strict
    labels_csv = tmp_path / "labels.csv"
    pl.to_csv(labels_csv)
    args = ["train", "--labels", str(labels_csv), "--references", *refs, "--k", "2", "--lr", "1e-12",
            "--epochs", "2", "--min-steps", "0", "--min-train-images", "0", "--batch-size", "4",
            "--image-size", str(SIZE[0]), str(SIZE[1]), "--weights", str(sononet16_path), "--workers", "0", "--quiet"]
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "cli1")]) == 0
    out = capsys.readouterr()
    assert "did not learn" in out.err and "kept epoch 0" in out.out
    assert main(args + ["--out", str(tmp_path / "cli2"), "--strict"]) == 3


def test_labels_the_anchored_head_would_ignore_are_refused(tmp_path, sononet16_path, capsys, caplog):
    """The anchored head learns from its references' distance score: at the backbone's own size, labels that do
    not follow it (inverted, another score) are refused before training instead of being silently ignored; the
    pseudo-labels of the same references pass, and the paper's head learns any labels. At another size the score
    is refitted there by design: a disagreement is a warning."""
    from crl_uiqa.pseudo_labels import label_images

    paths, _ = _images(tmp_path, n=12)
    refs = paths[-3:]
    native = (224, 288)  # SonoNet-16's own input size, where pseudo-labels are computed
    pl = label_images(paths, refs, k=2, weights=sononet16_path, num_workers=0, progress=False)
    mc = ModelConfig(image_size=native, head="anchored", train_from="head", anchor={"k": 2})
    kw = dict(config=_cfg(epochs=1, lr=0.5), weights=sononet16_path, num_workers=0, progress=False)
    inverted = 1.0 - pl.labels.label
    with pytest.raises(ConfigError, match=r"do not follow the anchored head's own score.*Spearman -1\.00 over 12"):
        train(pl.paths, inverted, model_config=mc, references=refs, run_dir=tmp_path / "inv", **kw)
    assert not (tmp_path / "inv" / "model.safetensors").exists()
    rescaled = train(pl.paths, pl.labels.label * 1000 - 500, model_config=mc, references=refs, **kw)  # same ranking
    assert rescaled.kept_epoch is not None
    paper = train(pl.paths, inverted, model_config=ModelConfig(image_size=SIZE, head="paper"), **kw)
    assert paper.history[-1]["epoch"] == 1
    caplog.clear()
    small = ModelConfig(image_size=SIZE, head="anchored", train_from="head", anchor={"k": 2})
    other_size = train(pl.paths, inverted, model_config=small, references=refs, **kw)
    assert other_size.kept_epoch is not None
    assert "not from the labels (Spearman" in caplog.text and "--paper" in caplog.text
    labels_csv = tmp_path / "inverted.csv"
    labels_csv.write_text("path,pseudo_label\n" + "".join(f"{p},{v}\n" for p, v in zip(pl.paths, inverted)))
    args = ["train", "--labels", str(labels_csv), "--references", *refs, "--k", "2", "--epochs", "1",
            "--weights", str(sononet16_path), "--workers", "0", "--quiet", "--out", str(tmp_path / "cli")]
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("crl-uiqa train: error: the labels do not follow") and "(--paper)" in err
    assert len(err.splitlines()) == 1


def test_a_pool_below_min_train_images_keeps_the_teacher_untrained_and_says_so(tmp_path, sononet16_path, capsys):
    """Without the deviation features, the anchored student of a tiny pool is its teacher, untrained, with a
    warning; min_train_images=0 trains."""
    from crl_uiqa.pseudo_labels import label_images

    paths, _ = _images(tmp_path, n=12)
    refs = paths[-3:]
    pl = label_images(paths, refs, k=2, weights=sononet16_path, size=SIZE, num_workers=0, progress=False)
    mc = ModelConfig(image_size=SIZE, head="anchored", train_from="head", anchor={"k": 2})
    kw = dict(model_config=mc, weights=sononet16_path, references=refs, num_workers=0, progress=False)
    res = train(pl.paths, pl.labels.label, config=_cfg(epochs=2, lr=0.5, select="best", min_train_images=20),
                run_dir=tmp_path / "run", **kw)
    n_train = len(res.train_paths)
    assert res.kept_epoch == 0 and [r["epoch"] for r in res.history] == [0]
    assert res.warnings[0].startswith(f"only {n_train} training images (fewer than min_train_images = 20)")
    s = score_paths(res.model, pl.paths, num_workers=0, progress=False)
    assert np.allclose(s.scores, pl.labels.label, atol=2e-3)  # the teacher: the pseudo-labels themselves
    trained = train(pl.paths, pl.labels.label, config=_cfg(epochs=2, lr=0.5, select="last", min_train_images=0), **kw)
    assert [r["epoch"] for r in trained.history] == [0, 1, 2] and not any("min_train_images" in w
                                                                        for w in trained.warnings)
    # the command line's default (100) applies to fit/train, and --strict turns the warning into status 3
    labels_csv = tmp_path / "labels.csv"
    pl.to_csv(labels_csv)
    args = ["train", "--labels", str(labels_csv), "--references", *refs, "--k", "2", "--batch-size", "4",
            "--image-size", str(SIZE[0]), str(SIZE[1]), "--weights", str(sononet16_path), "--workers", "0", "--quiet",
            "--reference-stats", "off"]
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "cli1")]) == 0
    assert "fewer than min_train_images = 100" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "cli2"), "--strict"]) == 3
    with pytest.raises(ConfigError, match="min_train_images"):
        _cfg(min_train_images=-1)


def test_train_command_without_references_uses_the_paper_head(tmp_path):
    paths, labels = _images(tmp_path, n=4)
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("path,pseudo_label\n" + "".join(f"{p},{q}\n" for p, q in zip(paths, labels)))
    # --head anchored asked for explicitly, without the references: one clear error, before any training
    assert main(["train", "--labels", str(labels_csv), "--out", str(tmp_path / "run"), "--head", "anchored",
                 "--quiet"]) != 0
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_kept_epoch_is_the_best_by_the_criterion(tmp_path, sononet16_path):
    from crl_uiqa.training import selection_criterion

    paths, labels = _images(tmp_path, n=16)
    res = train(paths, labels, config=_cfg(epochs=4, lr=5e-2, select="best"), model_config=ModelConfig(image_size=SIZE),
                weights=sononet16_path, num_workers=0, progress=False)
    crit = [selection_criterion(r) for r in res.history]
    assert [r["epoch"] for r in res.history] == [0, 1, 2, 3, 4]
    assert crit == [r["val_strong_accuracy"] for r in res.history]  # the documented criterion
    # a trained epoch must beat epoch 0 (the starting model); among trained epochs a tie goes to the later
    best = max(crit[1:])
    expected = 0 if best <= crit[0] else max(e for e in range(1, 5) if crit[e] == best)
    assert res.kept_epoch == expected
    # the model returned holds that epoch's weights: its validation loss is the one logged for it
    va = [paths.index(p) for p in res.val_paths]
    s = score_paths(res.model, res.val_paths, num_workers=0, progress=False).scores
    row = res.history[expected]
    assert np.mean((s - np.asarray(labels)[va]) ** 2) == pytest.approx(row["val_l_d"], abs=1e-3)


# ---------------------------------------------------------------- training on crops, bfloat16 on the CPU
def test_random_crops_keep_the_pixel_scale():
    from crl_uiqa.training import cut_windows, random_crops

    x = torch.arange(2 * 1 * 10 * 12, dtype=torch.float32).reshape(2, 1, 10, 12)
    crops, corners = random_crops(x, (4, 6), torch.Generator().manual_seed(3))
    assert crops.shape == (2, 1, 4, 6)
    for i, (t, c) in enumerate(corners.tolist()):
        assert 0 <= t <= 6 and 0 <= c <= 6
        assert torch.equal(crops[i], x[i, :, t : t + 4, c : c + 6])  # a window, not a resize: same pixels
    # the same generator seed gives the same windows; cut_windows cuts them out of another view
    crops2, corners2 = random_crops(x, (4, 6), torch.Generator().manual_seed(3))
    assert torch.equal(corners, corners2) and torch.equal(crops, crops2)
    assert torch.equal(cut_windows(x * 2, corners, (4, 6)), crops * 2)
    with pytest.raises(ValueError, match="larger than the images"):
        random_crops(x, (11, 6), torch.Generator())


def test_train_crop_and_amp_settings_are_validated(tmp_path):
    from crl_uiqa.errors import ConfigError

    assert TrainConfig(train_crop=[32, 40]).train_crop == (32, 40)
    assert TrainConfig.from_dict(TrainConfig(train_crop=(32, 40), amp="bf16").to_dict()).train_crop == (32, 40)
    # a fraction of each side: the default 0.5 gives 112x144 windows of 224x288 frames, at least the backbone's minimum
    assert TrainConfig(train_crop=0.5).crop_size((224, 288)) == (112, 144)
    assert TrainConfig(train_crop=0.1).crop_size((64, 80), minimum=16) == (16, 16)
    assert TrainConfig(train_crop=1).crop_size((64, 80)) == (64, 80) and TrainConfig().crop_size((64, 80)) is None
    assert TrainConfig.from_dict(TrainConfig(train_crop=0.5).to_dict()).train_crop == 0.5
    for bad in ((0, 40), (32,), "32x40", 0.0, 1.5, -0.5, True):
        with pytest.raises(ConfigError, match="train_crop"):
            TrainConfig(train_crop=bad)
    with pytest.raises(ConfigError, match="amp"):
        TrainConfig(amp="fp16")
    paths, labels = _images(tmp_path, n=4)
    with pytest.raises(ConfigError, match="must fit in the image size"):  # refused before any work
        train(paths, labels, config=_cfg(train_crop=(64, 64)), model_config=ModelConfig(image_size=SIZE),
              run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    # the same through the command line: one clear error, nothing written
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("path,pseudo_label\n" + "".join(f"{p},{q}\n" for p, q in zip(paths, labels)))
    args = ["train", "--labels", str(labels_csv), "--head", "paper", "--image-size", str(SIZE[0]), str(SIZE[1]),
            "--quiet", "--out", str(tmp_path / "cli")]
    assert main(args + ["--train-crop", "64", "64"]) != 0
    from crl_uiqa.cli import build_parser
    from crl_uiqa.commands._common import training_configs

    tc, _ = training_configs(build_parser().parse_args(args + ["--train-crop", "32", "40", "--amp", "bf16"]))
    assert tc.train_crop == (32, 40) and tc.amp == "bf16"
    tc, _ = training_configs(build_parser().parse_args(args + ["--train-crop", "0.25"]))
    assert tc.train_crop == 0.25
    with pytest.raises(ConfigError, match="--train-crop takes"):
        training_configs(build_parser().parse_args(args + ["--train-crop", "a", "b", "c"]))
    tc, _ = training_configs(build_parser().parse_args(args))
    assert tc.train_crop == 0.5 and tc.amp is True  # the defaults: half-side windows, bfloat16 on CUDA only
    tc, _ = training_configs(build_parser().parse_args(args + ["--paper"]))
    assert tc.train_crop is None  # the paper trains on whole frames
    assert not (tmp_path / "cli" / "model.safetensors").exists()


def test_autocast_setting_per_device():
    from crl_uiqa.devices import autocast_enabled

    assert not autocast_enabled(True, "cpu") and autocast_enabled(True, "cuda")
    assert autocast_enabled("bf16", "cpu") and autocast_enabled("bf16", "cuda")
    assert not autocast_enabled(False, "cuda") and not autocast_enabled("bf16", "mps")


def test_anchored_training_on_crops_holds_each_crop_to_its_own_teacher(tmp_path, sononet16_path):
    """L_d's target for a crop is the teacher's score of that crop: at lr ~ 0 it is ~0 (the whole frame's
    label would not be); the model trained on crops scores whole frames."""
    from crl_uiqa.pseudo_labels import label_images

    paths, _ = _images(tmp_path, n=12)
    refs = paths[-3:]
    pl = label_images(paths, refs, k=2, weights=sononet16_path, size=SIZE, num_workers=0, progress=False)
    mc = ModelConfig(image_size=SIZE, head="anchored", train_from="head", anchor={"k": 2})
    common = dict(model_config=mc, weights=sononet16_path, references=refs, num_workers=0, progress=False)
    res = train(pl.paths, pl.labels.label, config=_cfg(epochs=1, lr=1e-12, train_crop=(32, 40)), **common)
    assert res.history[1]["l_d"] == pytest.approx(0.0, abs=1e-8)
    # the same run with the crop's target replaced by the whole frame's label would see a clear L_d
    from crl_uiqa.training import load_image_cache, random_crops

    cache, kept, _ = load_image_cache(pl.paths, SIZE, num_workers=0, progress=False)
    crops, _ = random_crops(cache.float() / 255, (32, 40), torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(((res.model.teacher_score(crops) - torch.tensor(pl.labels.label[kept], dtype=torch.float32)) ** 2).mean()) > 1e-4
    # a real step moves the correction; scores are of whole frames at the model's size
    res = train(pl.paths, pl.labels.label, config=_cfg(epochs=1, lr=0.5, train_crop=(32, 40)), **common)
    assert res.history[1]["l_c"] > 0 and res.history[1]["l_r"] >= 0
    assert float(res.model.fc.weight.detach().abs().sum()) > 0
    s = score_paths(res.model, pl.paths, num_workers=0, progress=False)
    assert s.scores.shape == (12,) and np.isfinite(s.scores).all()


def test_bf16_autocast_on_the_cpu_trains_and_scores_close_to_fp32(tmp_path, sononet16_path):
    paths, labels = _images(tmp_path, n=8)
    res = train(paths, labels, config=_cfg(epochs=1, amp="bf16"), model_config=ModelConfig(image_size=SIZE),
                weights=sononet16_path, num_workers=0, progress=False)
    assert np.isfinite(res.history[1]["loss"])
    s32 = score_paths(res.model, paths, num_workers=0, progress=False, device="cpu")
    s16 = score_paths(res.model, paths, num_workers=0, progress=False, device="cpu", amp="bf16")
    assert s16.scores.dtype == np.float64
    # bfloat16 keeps 8 bits of mantissa: scores agree to about 1 % of their spread, not exactly
    assert np.allclose(s16.scores, s32.scores, atol=0.05 * max(np.ptp(s32.scores), 1e-3) + 1e-3)
    # the score command's --amp bf16 gives the same bfloat16 scores
    save_model(res.model, tmp_path / "run")
    assert main(["score", "--model", str(tmp_path / "run"), "--images", *paths, "--out", str(tmp_path / "s.csv"),
                 "--amp", "bf16", "--device", "cpu", "--workers", "0", "--quiet"]) == 0
    rows = [line.split(",") for line in (tmp_path / "s.csv").read_text().splitlines()[1:]]
    assert np.allclose([float(r[1]) for r in rows], s16.scores, atol=1e-6)


def test_validation_views_cover_min_val_pairs_and_are_fixed():
    """Small pools get several fixed corrupted views per validation image; large ones keep one (as before)."""
    from crl_uiqa.training import _fixed_strong_views, validation_views_per_image
    from crl_uiqa.views import StrongViews

    assert [validation_views_per_image(n, 200) for n in (0, 1, 6, 113, 200, 500)] == [0, 200, 34, 2, 1, 1]
    assert validation_views_per_image(6, 0) == 1
    val = (torch.rand(6, 1, *SIZE, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    sv = StrongViews()
    many = _fixed_strong_views(val, sv, seed=3, min_pairs=200)
    assert many.shape == (6 * 34, 1, *SIZE) and many.dtype == torch.uint8
    assert torch.equal(many, _fixed_strong_views(val, sv, seed=3, min_pairs=200))  # drawn the same every time
    assert torch.equal(many[:6], _fixed_strong_views(val, sv, seed=3))  # view 0 = the single-view draw
    assert not torch.equal(many[:6], many[6:12])  # later views are other corruptions
    assert not torch.equal(many, _fixed_strong_views(val, sv, seed=4, min_pairs=200))


def test_min_val_pairs_sets_the_pairs_the_criterion_counts(tmp_path, sononet16_path):
    paths, labels = _images(tmp_path, n=12)
    res = train(paths, labels, config=_cfg(epochs=1, min_val_pairs=20), model_config=ModelConfig(image_size=SIZE),
                weights=sononet16_path, num_workers=0, progress=False)
    assert len(res.val_paths) == 3  # 12 x 0.25
    assert [r["val_strong_pairs"] for r in res.history] == [21, 21]  # ceil(20 / 3) = 7 views of each of 3 images
    assert all(0 <= r["val_strong_accuracy"] <= 1 for r in res.history)
    with pytest.raises(ValueError, match="min_val_pairs"):
        TrainConfig(min_val_pairs=-1)


def test_validation_views_draw_only_from_the_runs_families():
    """A family held out of strong_views never reaches the kept-epoch criterion's fixed views (also with L_r off)."""
    from crl_uiqa.corruptions import sample_strong_views
    from crl_uiqa.training import _fixed_strong_views, strong_views_of
    from crl_uiqa.views import StrongViews

    held_in = ("gaussian_blur", "motion_blur", "low_resolution")
    cache = (torch.rand(16, 1, 32, 40, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    for relativity in (True, False):
        views = strong_views_of(TrainConfig(strong_views=",".join(held_in), relativity=relativity))
        assert views.families == held_in
        got = _fixed_strong_views(cache, views, seed=3)
        assert torch.equal(got, _fixed_strong_views(cache, StrongViews(held_in), seed=3))
        assert not torch.equal(got, _fixed_strong_views(cache, StrongViews(), seed=3))  # all 11 families differ
    # the families the draw used (same generator as _fixed_strong_views) are all held in
    _, fams, _ = sample_strong_views(cache.float() / 255, held_in, generator=torch.Generator().manual_seed(10_003))
    assert set(fams) <= set(held_in) and len(set(fams)) > 1


def test_a_pool_below_min_train_images_learns_only_the_deviation_correction(tmp_path, sononet16_path, capsys):
    """With the deviation features (the default), a pool under min_train_images trains the two-parameter
    correction on the deviation feature instead of the conv head; min_train_images=0 trains the full one."""
    from crl_uiqa.pseudo_labels import label_images

    paths, _ = _images(tmp_path, n=12)
    refs = paths[-3:]
    pl = label_images(paths, refs, k=2, weights=sononet16_path, size=SIZE, num_workers=0, progress=False)
    from crl_uiqa.reference_stats import SIX_STATISTICS, STATISTIC_NAMES

    mc = ModelConfig(image_size=SIZE, head="anchored", train_from="head",
                     anchor={"k": 2, "reference_stats": "norm", "statistics": list(STATISTIC_NAMES)})
    kw = dict(model_config=mc, weights=sononet16_path, references=refs, num_workers=0, progress=False)
    small = train(pl.paths, pl.labels.label, config=_cfg(epochs=2, lr=0.5, select="last", min_train_images=20),
                  run_dir=tmp_path / "run", **kw)
    assert small.model.config.anchor["correction"] == "deviation" and small.model.projection is None
    # the deviation correction measures the six statistics of before the black level (BENCHMARKS.md)
    assert small.model.deviation.statistics == SIX_STATISTICS and small.model.deviation.center.shape == (6,)
    assert [r["epoch"] for r in small.history] == [0, 1, 2]
    assert not any("min_train_images" in w for w in small.warnings)
    assert json.loads((tmp_path / "run" / "model.json").read_text())["model_config"]["anchor"]["correction"] == "deviation"
    back, _ = load_model(tmp_path / "run")
    assert back.projection is None
    full = train(pl.paths, pl.labels.label, config=_cfg(epochs=2, lr=0.5, select="last", min_train_images=0), **kw)
    assert "correction" not in full.model.config.anchor and full.model.projection is not None
    assert full.model.deviation.statistics == STATISTIC_NAMES  # the full correction keeps all seven
    # the command line's defaults (reference_stats norm, min_train_images 100) take the deviation correction
    labels_csv = tmp_path / "labels.csv"
    pl.to_csv(labels_csv)
    assert main(["train", "--labels", str(labels_csv), "--references", *refs, "--k", "2", "--batch-size", "4",
                 "--image-size", str(SIZE[0]), str(SIZE[1]), "--weights", str(sononet16_path), "--workers", "0",
                 "--quiet", "--out", str(tmp_path / "cli")]) == 0
    meta = json.loads((tmp_path / "cli" / "model.json").read_text())
    assert meta["model_config"]["anchor"]["correction"] == "deviation"
    assert meta["model_config"]["anchor"]["statistics"] == list(SIX_STATISTICS)


def test_an_anchored_run_with_no_image_to_validate_on_keeps_its_teacher(tmp_path, sononet16_path):
    """select="best" with no validation image (val_fraction 0, or a pool of 2): no evidence can prefer a trained
    correction, so the model is its teacher, untrained, and the run says why; select="last" trains anyway."""
    from crl_uiqa.pseudo_labels import label_images

    paths, _ = _images(tmp_path, n=8)
    refs = paths[-3:]
    pl = label_images(paths, refs, k=2, weights=sononet16_path, size=SIZE, num_workers=0, progress=False)
    mc = ModelConfig(image_size=SIZE, head="anchored", train_from="head", anchor={"k": 2, "reference_stats": "norm"})
    kw = dict(model_config=mc, weights=sononet16_path, references=refs, num_workers=0, progress=False)
    res = train(pl.paths, pl.labels.label, config=_cfg(epochs=2, lr=0.5, select="best", val_fraction=0.0), **kw)
    assert res.kept_epoch == 0 and [r["epoch"] for r in res.history] == [0]
    assert res.warnings[0].startswith("no validation image (val_fraction 0 of 8 images)")
    s = score_paths(res.model, pl.paths, num_workers=0, progress=False)
    assert np.allclose(s.scores, pl.labels.label, atol=2e-3)
    trained = train(pl.paths, pl.labels.label, config=_cfg(epochs=2, lr=0.5, select="last", val_fraction=0.0), **kw)
    assert [r["epoch"] for r in trained.history] == [0, 1, 2]


def _frozen_sononet_model(train_from="head", freeze_bn=True, layer="block3", reference_stats=True):
    """A random SonoNet-16 with non-trivial batch-norm statistics, an anchored head with a non-zero correction."""
    from _helpers import random_sononet
    from crl_uiqa.model import QualityModel

    net = random_sononet()
    dim = net.embed(torch.rand(1, 1, 48, 64), layer).shape[1]
    anchor = {"layer": layer, "k": 2, "n_references": 3, "dim": dim, "intensity_stats": True}
    if reference_stats:  # the default: the seven statistics, the black level among them
        from crl_uiqa.reference_stats import STATISTIC_NAMES

        anchor.update(reference_stats="norm", statistics=list(STATISTIC_NAMES))
    m = QualityModel(net, ModelConfig(image_size=SIZE, head="anchored", train_from=train_from, freeze_bn=freeze_bn,
                                      proj_channels=4, anchor=anchor))
    m.eval()
    with torch.no_grad():
        m.anchor.set(net.embed(torch.rand(3, 1, *SIZE), layer), 0.5, -3.0, 0.0)
        if reference_stats:
            from crl_uiqa.reference_stats import image_statistics

            m.deviation.set(image_statistics(torch.rand(3, 1, *SIZE)))
        torch.nn.init.normal_(m.fc.weight, std=0.3)
        m.fc.bias.fill_(0.1)
    return m


def test_fixed_image_scorer_runs_a_frozen_trunk_once_and_scores_as_the_whole_model():
    """Validation images are scored after every epoch; with the trunk frozen only the head changes, so
    FixedImageScorer keeps what the fixed parts output (batch by batch, as predict_cache batches) and runs the
    head alone: the same scores as the whole model, also after the head changed, with one trunk pass in all."""
    from crl_uiqa.training import FixedImageScorer, predict_cache

    m = _frozen_sononet_model()
    assert m.trunk_frozen
    cache = (torch.rand(7, 1, *SIZE) * 255).round().to(torch.uint8)
    x = cache.float() / 255
    # the score composed by hand from the parts: teacher + FC over [pooled conv head, raw mean, raw std, deviation]
    with torch.no_grad():
        h = torch.cat([m.projection(m.anchor_map(x)).mean(dim=(2, 3)), x.flatten(1).mean(dim=1, keepdim=True),
                       x.flatten(1).std(dim=1, keepdim=True), m.deviation(x)], dim=1)
        assert torch.allclose(m(x), m.teacher_score(x) + m.fc(h).squeeze(1), atol=1e-6)
    q0, corr = m.anchored_terms(x)
    assert torch.allclose(m(x), q0 + corr, atol=1e-7) and float(corr.detach().abs().max()) > 1e-3
    trunk_passes = []  # batches through the trunk's first block
    m.backbone.blocks[0].register_forward_pre_hook(lambda *_: trunk_passes.append(1))
    budget = [1 << 30]
    scorer = FixedImageScorer(m, cache, "cpu", False, budget, batch_size=3)
    assert scorer.features is not None and len(scorer.features) == 3  # batches of 3, 3, 1
    assert 0 < budget[0] < 1 << 30  # what it keeps is counted against the run's budget
    assert len(trunk_passes) == 3
    assert np.allclose(scorer(), predict_cache(m, cache, "cpu", batch_size=3), atol=1e-6)
    with torch.no_grad():  # "training": the head changes, the trunk does not
        m.fc.weight.mul_(-2.0)
        m.projection[0].weight.add_(0.05)
    n = len(trunk_passes)
    s = scorer()
    assert len(trunk_passes) == n  # the head alone ran
    expected = predict_cache(m, cache, "cpu", batch_size=3)
    assert len(trunk_passes) == n + 3 and np.allclose(s, expected, atol=1e-6)
    # over the budget: no features kept, each call runs the whole model and still scores the same
    over = FixedImageScorer(m, cache, "cpu", False, [1000], batch_size=3)
    assert over.features is None and np.allclose(over(), expected, atol=1e-6)
    # under bfloat16 autocast (--amp bf16) the kept outputs are what the whole model computes in bf16
    bf16 = FixedImageScorer(m, cache, "cpu", True, [1 << 30], batch_size=3)
    assert bf16.features is not None
    assert np.allclose(bf16(), predict_cache(m, cache, "cpu", batch_size=3, amp=True), atol=1e-6)


def test_a_trunk_that_can_change_is_not_frozen():
    """Trainable trunk blocks, or a trunk whose batch-norm statistics move in training (freeze_bn off), change
    what the fixed parts output from epoch to epoch: those models are scored whole every epoch."""
    from crl_uiqa.training import FixedImageScorer

    cache = (torch.rand(2, 1, *SIZE) * 255).round().to(torch.uint8)
    for kw in ({"train_from": "block4"}, {"freeze_bn": False}):
        m = _frozen_sononet_model(**kw, reference_stats=False)
        assert not m.trunk_frozen
        assert FixedImageScorer(m, cache, "cpu", False, [1 << 30]).features is None
    paper = build_model(ModelConfig(image_size=SIZE, train_from="head"), pretrained=False).eval()
    assert paper.trunk_frozen
    x = cache.float() / 255
    with torch.no_grad():  # the paper's head composed by hand: 1x1 projection, global average, FC
        expected = paper.fc(paper.projection(paper.backbone.feature_maps(x)).mean(dim=(2, 3))).squeeze(1)
        assert torch.allclose(paper.from_fixed_features(paper.fixed_features(x)), expected, atol=1e-6)


def test_validation_with_kept_trunk_outputs_gives_the_same_run(tmp_path, sononet16_path, monkeypatch):
    """The kept-epoch criterion scored from the frozen trunk's kept outputs, or by running the whole model every
    epoch (no memory allowed for them): the same history, the same epoch kept, the same weights."""
    from crl_uiqa import training
    from crl_uiqa.pseudo_labels import label_images

    paths, _ = _images(tmp_path, n=12)
    refs = paths[-3:]
    pl = label_images(paths, refs, k=2, weights=sononet16_path, size=SIZE, num_workers=0, progress=False)
    mc = ModelConfig(image_size=SIZE, head="anchored", train_from="head", anchor={"k": 2, "reference_stats": "norm"})
    kw = dict(model_config=mc, weights=sononet16_path, references=refs, num_workers=0, progress=False,
              config=_cfg(epochs=3, lr=0.5, select="best", min_train_images=0, min_val_pairs=20),
              val_pairs=[(paths[11], paths[0]), (paths[9], paths[2]), (paths[6], paths[5])])
    kept = train(pl.paths, pl.labels.label, **kw)
    monkeypatch.setattr(training, "FIXED_FEATURES_BUDGET", 0)
    whole = train(pl.paths, pl.labels.label, **kw)
    assert kept.kept_epoch == whole.kept_epoch
    assert kept.history[-1]["val_strong_pairs"] == whole.history[-1]["val_strong_pairs"] >= 20
    for a, b in zip(kept.history, whole.history):
        assert "val_accuracy" in a
        for key in ("val_srcc", "val_strong_accuracy", "val_l_d", "criterion", "val_accuracy"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-6), key
    for name, t in kept.model.state_dict().items():
        assert torch.allclose(t.float(), whole.model.state_dict()[name].float(), atol=1e-6), name


def test_an_interrupted_anchored_run_resumes_to_the_same_model(tmp_path, sononet16_path):
    """The default kind of run (anchored head, frozen trunk, the criterion from the trunk's kept outputs, the best
    epoch kept): stopped after its first epoch and resumed, it ends with the uninterrupted run's history, epoch
    kept and weights; the resumed run's kept outputs come from the teacher stored in its checkpoint."""
    from crl_uiqa.pseudo_labels import label_images

    paths, _ = _images(tmp_path, n=12)
    refs = paths[-3:]
    pl = label_images(paths, refs, k=2, weights=sononet16_path, size=SIZE, num_workers=0, progress=False)
    mc = ModelConfig(image_size=SIZE, head="anchored", train_from="head", anchor={"k": 2, "reference_stats": "norm"})
    kw = dict(model_config=mc, weights=sononet16_path, references=refs, num_workers=0, progress=False,
              config=_cfg(epochs=3, lr=0.5, select="best", min_train_images=0, min_val_pairs=20))
    full = train(pl.paths, pl.labels.label, run_dir=tmp_path / "full", **kw)
    with pytest.raises(_Stop):
        train(pl.paths, pl.labels.label, run_dir=tmp_path / "part", on_epoch=_stop_after_first, **kw)
    resumed = train(pl.paths, pl.labels.label, run_dir=tmp_path / "part", resume=True, **kw)
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2, 3] and resumed.kept_epoch == full.kept_epoch
    for a, b in zip(full.history, resumed.history):
        for key in ("val_srcc", "val_strong_accuracy", "criterion", "l_d", "l_r"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-6), key
    for name, t in full.model.state_dict().items():
        assert torch.allclose(t.float(), resumed.model.state_dict()[name].float(), atol=1e-6), name


def test_settings_float32_training_cannot_hold_are_refused_up_front():
    # torch's SGD overflowed on an lr or weight decay above float32's range, after the pseudo-label pass (exit 3)
    for name in ("lr", "weight_decay", "alpha", "theta", "beta", "margin_scale"):
        with pytest.raises(ConfigError, match=name):
            TrainConfig(**{name: 1e300})
    assert TrainConfig(lr=1e30).lr == 1e30
    # the epoch generators are seeded with seed * 1_000_003 + epoch, which must fit torch's 64-bit seed
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ConfigError, match=r"seed \(--seed\) must be <="):
        TrainConfig(seed=2**64)


def test_a_diverging_run_is_a_setting_error_naming_lr(tmp_path):
    paths, labels = _images(tmp_path, n=6)
    with pytest.raises(ConfigError, match=r"training diverged: .* at epoch 1 \(--lr 1e\+30"):
        train(paths, labels, config=_cfg(epochs=2, batch_size=1, lr=1e30), model_config=ModelConfig(image_size=SIZE),
              num_workers=0, progress=False)
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("path,pseudo_label\n" + "".join(f"{p},{q}\n" for p, q in zip(paths, labels)))
    # on the command line: one line and exit 1 (a user's setting), not the "bug in crl-uiqa" exit 3
    assert main(["train", "--labels", str(labels_csv), "--out", str(tmp_path / "run"), "--lr", "1e30",
                 "--epochs", "2", "--batch-size", "1", "--image-size", *map(str, SIZE), "--workers", "0", "--quiet"]) == 1


def test_min_val_pairs_beyond_what_memory_holds_is_refused_up_front():
    # each pair is a corrupted copy of a validation image kept in memory: --min-val-pairs 1e12 drew views until the
    # machine ran out of memory, after the pseudo-label pass
    from crl_uiqa.training import MAX_VAL_PAIRS

    assert TrainConfig(min_val_pairs=MAX_VAL_PAIRS).min_val_pairs == MAX_VAL_PAIRS
    with pytest.raises(ConfigError, match=r"min_val_pairs \(--min-val-pairs\) must be <="):
        TrainConfig(min_val_pairs=10**12)


def test_the_near_chance_warning_names_only_the_measures_a_run_took():
    """With one validation image there is no SRCC: the warning said 'SRCC with the pseudo-labels nan'."""
    from crl_uiqa.training import diagnose_training

    history = [{"epoch": 0, "val_srcc": float("nan"), "val_strong_accuracy": 0.52},
               {"epoch": 1, "val_srcc": float("nan"), "val_strong_accuracy": 0.55}]
    warnings = diagnose_training(history, 1, lr=0.5, steps=300, n_train=500, head="anchored")
    near = [w for w in warnings if "near chance" in w]
    assert len(near) == 1 and "nan" not in near[0] and "clean-over-corrupted accuracy 0.550" in near[0]
    assert "SRCC" not in near[0]
    both = diagnose_training([{"epoch": 1, "val_srcc": 0.1, "val_strong_accuracy": 0.9}], 1, lr=0.5, steps=300,
                             n_train=500)
    assert any("SRCC with the pseudo-labels 0.100, clean-over-corrupted accuracy 0.900" in w for w in both)


def test_validation_pairs_naming_a_missing_or_unreadable_image_are_named(tmp_path, capsys):
    """A pair naming a missing image was found only after fit's pseudo-labels, as "no readable training image";
    an unreadable one was "some validation-pair images cannot be read", naming none (trial 4)."""
    from crl_uiqa.errors import InputError, NotFoundError
    from crl_uiqa.estimator import CRLUIQA
    from crl_uiqa.training import train

    paths, labels = _images(tmp_path, n=6)
    missing = str(tmp_path / "nope.png")
    kw = dict(config=_cfg(epochs=1), model_config=ModelConfig(image_size=SIZE, head="paper"), num_workers=0,
              progress=False)
    with pytest.raises(NotFoundError, match=rf"validation pair image not found \(--val-pairs\): {missing}$"):
        train(paths, labels, val_pairs=[(paths[0], missing)], **kw)
    # fit checks them before the pseudo-labels: no weights are needed to be refused
    with pytest.raises(NotFoundError, match="validation pair image not found"):
        CRLUIQA(k=1, weights=tmp_path / "no-weights.npz").fit(paths, references=paths[:1], val_pairs=[(missing, paths[1])])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    for pairs in ([(paths[0], str(broken))], [(paths[0], paths[1]), (paths[2], str(broken))]):
        with pytest.raises(InputError, match=rf"validation pair image.* {re.escape(str(broken))}.*not a readable image"):
            train(paths, labels, val_pairs=pairs, **kw)
    assert main(["train", "--labels", str(_labels_csv(tmp_path, paths, labels)), "--out", str(tmp_path / "run"),
                 "--paper", "--epochs", "1", "--image-size", "48", "64", "--workers", "0", "--quiet",
                 "--val-pairs", str(_pairs_csv(tmp_path, [(paths[0], str(broken))]))]) == 1
    err = capsys.readouterr().err
    assert "validation pair image" in err and str(broken) in err


def _labels_csv(tmp_path, paths, labels):
    p = tmp_path / "labels.csv"
    p.write_text("path,pseudo_label\n" + "".join(f"{a},{b}\n" for a, b in zip(paths, labels)))
    return p


def _pairs_csv(tmp_path, pairs):
    p = tmp_path / "pairs.csv"
    p.write_text("better,worse\n" + "".join(f"{a},{b}\n" for a, b in pairs))
    return p


def test_an_undecodable_validation_pair_image_is_refused_before_the_pseudo_labels(tmp_path, capsys):
    """A --val-pairs image that exists but is no image was found only when the pairs were decoded, after fit's
    pseudo-labels (minutes of work); the up-front check now opens each one's header through the image reader."""
    from crl_uiqa.errors import InputError
    from crl_uiqa.estimator import CRLUIQA

    paths, _ = _images(tmp_path, n=6)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not the rest of a png")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0\0\0\x18ftypisom" + bytes(64))
    for bad, why in ((broken, "not a readable image"), (video, "a video")):
        # no weights: the old code stopped there, at the pseudo-labels, before it looked at the pairs' pixels
        with pytest.raises(InputError, match=rf"validation pair image {re.escape(str(bad))} cannot be read: {why}.*"
                                             r"pair 2, its worse image"):
            CRLUIQA(k=1, weights=tmp_path / "no-weights.npz").fit(
                paths, references=paths[:1], val_pairs=[(paths[0], paths[1]), (paths[2], str(bad))])
    rc = main(["fit", "--images", *paths[1:], "--references", paths[0], "--weights", str(tmp_path / "none.npz"),
               "--k", "1", "--out", str(tmp_path / "run"),
               "--val-pairs", str(_pairs_csv(tmp_path, [(paths[1], str(broken))])),
               "--quiet", "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert f"validation pair image {broken} cannot be read" in err and "pair 1, its worse image" in err


def test_the_frozen_trunk_is_run_folded_and_gives_the_models_outputs():
    """Training computes a frozen trunk's outputs with a copy whose batch norms are folded
    (``_folded_fixed_parts``): they are the model's own to float rounding, the copy does not train, and a trunk
    that can change gets no copy (the model computes them itself)."""
    from crl_uiqa.training import FixedImageScorer, _folded_fixed_parts, predict_cache

    m = _frozen_sononet_model()
    fixed = _folded_fixed_parts(m.train())
    assert fixed is not None and m.training  # the model's mode is kept
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in fixed.backbone.modules())
    assert not any(p.requires_grad for p in fixed.parameters())
    x = torch.rand(4, 1, *SIZE)
    m.eval()
    with torch.no_grad():
        for a, b in zip(m.fixed_features(x), fixed.fixed_features(x)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
        q0, corr = m.anchored_terms(x)
        q0f, corrf = m.anchored_terms(x, fixed.fixed_features(x))
        assert torch.allclose(q0, q0f, atol=1e-5) and torch.allclose(corr, corrf, atol=1e-5)
    cache = (torch.rand(5, 1, *SIZE) * 255).round().to(torch.uint8)
    scorer = FixedImageScorer(m, cache, "cpu", False, [1 << 30], batch_size=2, fixed=fixed)
    assert np.allclose(scorer(), predict_cache(m, cache, "cpu", batch_size=2), atol=1e-5)
    for kw in ({"train_from": "block4"}, {"freeze_bn": False}):
        assert _folded_fixed_parts(_frozen_sononet_model(**kw, reference_stats=False)) is None


@pytest.mark.parametrize("head,window", [("anchored", True), ("anchored", False), ("paper", False)])
def test_an_epoch_on_the_folded_trunk_trains_the_head_as_the_model_itself(head, window):
    """One training epoch with the frozen trunk run folded (``_train_epoch(fixed=...)``) leaves the head's weights
    and the loss where the same epoch run through the model itself leaves them, to float rounding."""
    from _helpers import random_sononet
    from crl_uiqa.model import QualityModel
    from crl_uiqa.training import TrainConfig, _folded_fixed_parts, _train_epoch, strong_views_of

    def make():
        if head == "anchored":
            return _frozen_sononet_model()
        return QualityModel(random_sononet(), ModelConfig(image_size=SIZE, head="paper", train_from="head", proj_channels=4))

    g = torch.Generator().manual_seed(1)
    cache = (torch.rand(8, 1, *SIZE, generator=g) * 255).round().to(torch.uint8)
    q = torch.rand(8, generator=g)
    cfg = TrainConfig(batch_size=4)
    out = []
    for folded in (False, True):
        m = make()
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
        fixed = _folded_fixed_parts(m) if folded else None
        assert (fixed is not None) == folded
        sums = _train_epoch(m, opt, cache, q, cfg=cfg, head=head, epoch=0, epochs=1, lr=0.05,
                            window=(SIZE[0] // 2, SIZE[1] // 2) if window else None, views=strong_views_of(cfg),
                            dev=torch.device("cpu"), amp=False, progress=False, fixed=fixed)
        out.append((sums, m.state_dict()))
    (s0, w0), (s1, w1) = out
    assert set(s0) == set(s1) and all(s1[k] == pytest.approx(s0[k], rel=1e-4, abs=1e-6) for k in s0)
    moved = [k for k in w0 if k.startswith("fc.") and not torch.equal(w0[k], make().state_dict()[k])]
    assert moved  # the head trained
    assert all(torch.allclose(w0[k].float(), w1[k].float(), rtol=1e-4, atol=1e-5) for k in w0)
