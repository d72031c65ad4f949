"""CRLUIQA's front: settings that contradict each other are refused, predict honours strict."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crl_uiqa import CRLUIQA
from crl_uiqa.errors import ConfigError
from crl_uiqa.io import write_gray_png
from crl_uiqa.model import ModelConfig, build_model, save_model
from crl_uiqa.training import TrainConfig


def test_conflicting_settings_are_refused():
    with pytest.raises(ConfigError, match="not both"):
        CRLUIQA(train_config=TrainConfig(), epochs=3)  # epochs used to be dropped silently
    with pytest.raises(ConfigError, match="contradicts model_config"):
        CRLUIQA(model_config=ModelConfig(image_size=(112, 144)), image_size=(224, 288))
    est = CRLUIQA(model_config=ModelConfig(image_size=(112, 144)), image_size=(112, 144), device="cpu")
    assert est.model_config.image_size == (112, 144)
    assert CRLUIQA(epochs=3, device="cpu").train_config.epochs == 3
    assert CRLUIQA(image_size=(112, 144), device="cpu").model_config.image_size == (112, 144)


def test_predict_strict_false_gives_nan_for_unreadable(tmp_path):
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(image_size=(32, 48)), pretrained=False), tmp_path / "run")
    est = CRLUIQA.load(tmp_path / "run", device="cpu", num_workers=0, progress=False)
    good = [str(write_gray_png(tmp_path / f"{i}.png", np.full((40, 52), 0.2 * (i + 1)))) for i in range(2)]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    paths = [good[0], str(bad), good[1]]
    with pytest.raises(ValueError, match="broken.png"):
        est.predict(paths)
    scores = est.predict(paths, strict=False)
    assert scores.shape == (3,) and np.isnan(scores[1]) and np.isfinite(scores[[0, 2]]).all()
    np.testing.assert_allclose(scores[[0, 2]], est.predict(good), rtol=1e-5, atol=1e-6)


def test_moved_names_stay_importable():
    import crl_uiqa.export as export
    import crl_uiqa.model as model
    import crl_uiqa.runtime as runtime
    import crl_uiqa.training as training

    assert export.load_runtime is runtime.load_runtime and export.Runtime is runtime.Runtime
    assert training.load_model is model.load_model and training.save_model is model.save_model
