"""CUDA paths: run where a GPU exists, skipped elsewhere (CI has none)."""
import numpy as np
import pytest
import torch

from crl_uiqa.io import write_gray_png
from crl_uiqa.model import ModelConfig, build_model
from crl_uiqa.scoring import score_paths
from crl_uiqa.training import TrainConfig, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _images(tmp_path, n=8):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        write_gray_png(p, rng.uniform(0, 1, (60, 80)) * (i + 1) / n)
        paths.append(str(p))
    return paths, [i / (n - 1) for i in range(n)]


def test_cuda_scores_match_cpu(tmp_path):
    paths, _ = _images(tmp_path)
    m = build_model(ModelConfig(image_size=(48, 64)), pretrained=False).eval()
    cpu = score_paths(m, paths, device="cpu", num_workers=0, progress=False).scores
    gpu = score_paths(m, paths, device="cuda", num_workers=0, progress=False).scores  # bfloat16 autocast
    assert np.allclose(cpu, gpu, atol=5e-2)


def test_cuda_training_with_mixed_precision(tmp_path, sononet16_path):
    paths, labels = _images(tmp_path)
    res = train(paths, labels, config=TrainConfig(epochs=1, batch_size=4, val_fraction=0.25), weights=sononet16_path,
                model_config=ModelConfig(image_size=(48, 64)), device="cuda", num_workers=0, progress=False)
    assert np.isfinite(res.history[-1]["loss"])
    assert next(res.model.parameters()).device.type == "cuda"
