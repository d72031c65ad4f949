"""Co-learning end to end on a few images: learning, checkpoints, resume, scoring, fit/score/evaluate CLI."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from crl_uiqa.cli import main
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
    assert len(full.history) == 2 and {"l_d", "l_c", "l_r", "val_srcc"} <= set(full.history[0])
    for f in ("model.safetensors", "model.json", "last.safetensors", "last.json", "history.csv"):
        assert (tmp_path / "full" / f).exists()
    # interrupted after epoch 1, then resumed: the same model as the uninterrupted run
    with pytest.raises(_Stop):
        train(paths, labels, config=_cfg(epochs=2), model_config=mc, weights=sononet16_path,
              run_dir=tmp_path / "part", num_workers=0, progress=False, on_epoch=_stop_after_first)
    resumed = train(paths, labels, config=_cfg(epochs=2), model_config=mc, weights=sononet16_path,
                    run_dir=tmp_path / "part", resume=True, num_workers=0, progress=False)
    assert len(resumed.history) == 2
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
    assert meta["epoch"] == 0 and len(meta["history"]) == 1
    assert not (tmp_path / "r" / "model.safetensors").exists()
    assert not list((tmp_path / "r").glob("*.tmp*"))  # no half-written files


def test_resume_refuses_changed_settings(tmp_path, sononet16_path):
    paths, labels = _images(tmp_path)
    train(paths, labels, config=_cfg(epochs=1), model_config=ModelConfig(image_size=SIZE), weights=sononet16_path,
          run_dir=tmp_path / "r", num_workers=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(paths, labels, config=_cfg(epochs=2, lr=0.5), model_config=ModelConfig(image_size=SIZE),
              weights=sononet16_path, run_dir=tmp_path / "r", resume=True, num_workers=0, progress=False)


def test_bad_labels_are_clear_errors(tmp_path):
    paths, labels = _images(tmp_path, n=4)
    with pytest.raises(ValueError, match="NaN"):
        train(paths, [0.1, float("nan"), 0.3, 0.4], config=_cfg(), progress=False)
    with pytest.raises(ValueError, match="equal"):
        train(paths, [0.5] * 4, config=_cfg(), progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        train(paths[:1], [0.5], config=_cfg(), progress=False)


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
    assert res.history[-1]["l_d"] < res.history[0]["l_d"]


def test_cli_fit_score_evaluate(tmp_path, sononet16_path, capsys):
    paths, _ = _images(tmp_path / "imgs" if (tmp_path / "imgs").mkdir() is None else tmp_path, n=10)
    refs = tmp_path / "refs"
    refs.mkdir()
    for p in paths[-3:]:
        Path(refs / Path(p).name).write_bytes(Path(p).read_bytes())
    run = tmp_path / "run"
    rc = main(["fit", "--images", str(tmp_path / "imgs"), "--references", str(refs), "--out", str(run), "--k", "2",
               "--epochs", "1", "--batch-size", "4", "--image-size", str(SIZE[0]), str(SIZE[1]), "--weights",
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
