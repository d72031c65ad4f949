"""Low-level statistics and their deviation from the references (crl_uiqa.reference_stats), hand-checked."""
import importlib.util
import math

import numpy as np
import pytest
import torch

from crl_uiqa.errors import ConfigError
from crl_uiqa.model import ModelConfig, load_model, save_model
from crl_uiqa.reference_stats import (
    MIN_SCALE,
    SIX_STATISTICS,
    STATISTIC_NAMES,
    ReferenceDeviation,
    image_statistics,
    lower_quantile,
)


def _ramp():
    """8 x 8, x[i, j] = j / 8: horizontal steps of 1/8, no vertical change."""
    return (torch.arange(8.0) / 8).expand(8, 8)[None, None].clone()


def test_image_statistics_of_a_ramp_hand_checked():
    s = image_statistics(_ramp())[0]
    values = np.arange(8) / 8
    assert float(s[0]) == pytest.approx(0.4375, abs=1e-6)  # mean of 0, 1/8, ..., 7/8
    assert float(s[1]) == pytest.approx(np.std(np.tile(values, 8), ddof=1), abs=1e-6)  # torch.std is unbiased
    # full resolution: every horizontal step is 1/8, vertical 0 -> g1 = 1/8 (+1e-6)
    # 2x2 pooling: columns (2j + 0.5) / 8 -> steps 2/8 -> g2 = 1/4; again: steps 4/8 -> g4 = 1/2
    assert float(s[2]) == pytest.approx(math.log(0.125), abs=1e-4)
    assert float(s[3]) == pytest.approx(math.log(0.25), abs=1e-4)
    assert float(s[4]) == pytest.approx(math.log(0.5), abs=1e-4)
    assert float(s[5]) == pytest.approx(math.log(0.5), abs=1e-4)


def test_noise_and_blur_move_the_gradient_ratio_in_opposite_directions():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(80.0), indexing="ij")
    clean = (0.5 + 0.3 * torch.sin(xx / 3) * torch.cos(yy / 4))[None, None]
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(clean, 5, stride=1, padding=2, count_include_pad=False)
    r = image_statistics(torch.cat([clean, noisy, blurred]))[:, 4]  # log(g1 / g2)
    assert r[1] > r[0] > r[2]


def test_statistics_refuse_what_they_cannot_measure():
    with pytest.raises(ValueError, match="gray images"):
        image_statistics(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 8x8"):
        image_statistics(torch.zeros(1, 1, 4, 16))
    with pytest.raises(ValueError, match="shape"):
        ReferenceDeviation().set(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="NaN"):
        ReferenceDeviation().set(torch.full((3, 7), float("nan")))
    with pytest.raises(ValueError, match="unknown statistic 'median'"):
        image_statistics(torch.zeros(1, 1, 16, 16), ["mean", "median"])
    with pytest.raises(ValueError, match="name one twice"):
        ReferenceDeviation(statistics=["mean", "mean"])
    with pytest.raises(ValueError, match="non-empty list"):
        ReferenceDeviation(statistics=[])


@torch.no_grad()
def test_deviation_is_symmetric_log1p_of_z_hand_checked():
    dev = ReferenceDeviation("each", SIX_STATISTICS)
    refs = torch.tensor([[0.1, 0.2, -3.0, -2.5, -0.5, -0.4],
                         [0.3, 0.2, -3.0, -2.5, -0.5, -0.4]])
    dev.set(refs)
    # mean 0.2 and spread 0.1414 for the first statistic; the others agree exactly -> the floor MIN_SCALE
    assert torch.allclose(dev.center, torch.tensor([0.2, 0.2, -3.0, -2.5, -0.5, -0.4]), atol=1e-6)
    assert torch.allclose(dev.scale, torch.tensor([math.sqrt(0.02)] + [MIN_SCALE] * 5), atol=1e-6)
    x = _ramp()
    s = image_statistics(x, SIX_STATISTICS)[0]
    z = (s - dev.center) / dev.scale
    d = dev(x)[0]
    assert d.shape == (7,) and dev.n_features == 7
    assert torch.allclose(d[:6], torch.log1p(z.abs()), atol=1e-6)
    assert float(d[6]) == pytest.approx(float(torch.log1p(z.abs()).square().mean().sqrt()), abs=1e-6)
    # first statistic by hand: (0.4375 - 0.2) / sqrt(0.02) = 1.679 -> log(2.679)
    assert float(d[0]) == pytest.approx(math.log1p((0.4375 - 0.2) / math.sqrt(0.02)), abs=1e-5)
    # from statistics already measured: the same features without the image
    assert torch.allclose(dev.from_statistics(s[None]), d[None], atol=1e-6)
    # by hand: centre + 1.718 scales on every statistic -> log1p(1.718) = 1 on each, rms 1
    one = dev.from_statistics((dev.center + (math.e - 1) * dev.scale)[None])[0]
    assert torch.allclose(one, torch.ones(7), atol=1e-5)
    # mode "norm" (the default): the root mean square alone
    mean_only = ReferenceDeviation(statistics=SIX_STATISTICS)
    mean_only.set(refs)
    assert torch.allclose(mean_only(x), d[6:], atol=1e-6)
    with pytest.raises(ValueError, match="norm, each"):
        ReferenceDeviation("all")
    # a brighter and a darker image that deviate by the same amount deviate alike
    dev.set(image_statistics(torch.full((1, 1, 16, 16), 0.5), SIX_STATISTICS).expand(2, 6))
    up, down = dev(torch.full((2, 1, 16, 16), 0.5) + torch.tensor([0.1, -0.1]).view(2, 1, 1, 1))
    assert float(up[0]) == pytest.approx(float(down[0]), abs=1e-5) and float(up[0]) > 0
    # one reference: no spread, the scale is the floor
    dev.set(refs[:1])
    assert torch.allclose(dev.scale, torch.full((6,), MIN_SCALE))


@torch.no_grad()
def test_anchored_head_with_reference_stats_starts_at_its_teacher_and_saves_the_centre(tmp_path):
    from crl_uiqa.model import build_model

    cfg = ModelConfig(image_size=(64, 80), head="anchored", train_from="head", proj_channels=4,
                      anchor={"layer": "block4", "k": 2, "n_references": 3, "dim": 128, "smoothing": False,
                              "intensity_stats": True, "reference_stats": "each"})
    torch.manual_seed(0)
    m = build_model(cfg, pretrained=False)
    assert m.fc.in_features == 4 + 2 + 7
    m.anchor.set(torch.rand(3, 128), None, -5.0, 0.0)
    m.deviation.set(torch.tensor([[0.1, 0.2, -3.0, -2.5, -0.5, -0.4], [0.3, 0.25, -2.9, -2.4, -0.45, -0.35]]))
    m.eval()
    xs = torch.rand(3, 1, 64, 80, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(m(xs), m.teacher_score(xs), atol=1e-6)  # the correction starts at zero
    # a weight on the mean deviation feature moves the score by weight x feature
    m.fc.weight[0, -1] = -0.5
    assert torch.allclose(m(xs) - m.teacher_score(xs), -0.5 * m.deviation(xs)[:, -1], atol=1e-5)
    # the centre and scale are buffers: saved with the model and loaded back
    save_model(m, tmp_path / "run")
    back, _ = load_model(tmp_path / "run")
    assert torch.allclose(back.deviation.center, m.deviation.center)
    assert torch.allclose(back.deviation.scale, m.deviation.scale)
    assert torch.allclose(back(xs), m(xs), atol=1e-5)


def test_training_sets_the_centre_from_the_reference_images(tmp_path, sononet16_path):
    """train() measures the references at the model's size (8-bit, like every training image) and stores their
    mean and spread."""
    from crl_uiqa.io import read_gray, to_tensor, write_gray_png
    from crl_uiqa.pseudo_labels import label_images
    from crl_uiqa.training import TrainConfig, train

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:60, 0:80]
    paths = []
    for i in range(10):
        img = (0.4 + 0.3 * np.sin(xx / (3.0 + i)) * np.cos(yy / 5.0)) * (1 - i / 20) + rng.uniform(0, 0.1 * i / 9, xx.shape)
        write_gray_png(tmp_path / f"i{i}.png", img)
        paths.append(str(tmp_path / f"i{i}.png"))
    refs, size = paths[:3], (48, 64)
    pl = label_images(paths, refs, k=2, weights=sononet16_path, size=size, num_workers=0, progress=False)
    mc = ModelConfig(image_size=size, head="anchored", train_from="head",
                     anchor={"k": 2, "intensity_stats": True, "reference_stats": "norm",
                             "statistics": list(STATISTIC_NAMES)})
    res = train(pl.paths, pl.labels.label, config=TrainConfig(epochs=1, batch_size=4, lr=1e-12, val_fraction=0.25),
                model_config=mc, weights=sononet16_path, references=refs, num_workers=0, progress=False)
    x = torch.stack([(to_tensor(read_gray(p), size) * 255).round() / 255 for p in refs])
    s = image_statistics(x)  # all seven, the default
    assert s.shape == (3, 7)
    assert torch.allclose(res.model.deviation.center, s.mean(dim=0), atol=1e-5)
    assert torch.allclose(res.model.deviation.scale, s.std(dim=0).clamp_min(MIN_SCALE), atol=1e-5)
    with torch.no_grad():  # two steps at lr 1e-12: still its teacher
        assert torch.allclose(res.model(x), res.model.teacher_score(x), atol=1e-5)


def test_anchored_model_with_reference_stats_exports_to_onnx(tmp_path):
    """The deviation features are plain tensor ops: the exported model scores as the PyTorch one does."""
    pytest.importorskip("onnxruntime")
    from crl_uiqa.export import export_model, load_runtime
    from crl_uiqa.model import build_model

    cfg = ModelConfig(image_size=(64, 80), head="anchored", train_from="head", proj_channels=4,
                      anchor={"layer": "block4", "k": 2, "n_references": 3, "dim": 128, "smoothing": False,
                              "intensity_stats": True, "reference_stats": "each",
                              "statistics": list(STATISTIC_NAMES)})
    torch.manual_seed(0)
    m = build_model(cfg, pretrained=False)
    with torch.no_grad():
        m.anchor.set(torch.rand(3, 128), None, -5.0, 0.0)
        m.deviation.set(torch.tensor([[0.1, 0.2, -3.0, -2.5, -0.5, -0.4, 0.02],
                                      [0.3, 0.25, -2.9, -2.4, -0.45, -0.35, 0.06]]))
        m.fc.weight.normal_(0, 0.3)
    save_model(m.eval(), tmp_path / "run")
    res = export_model(tmp_path / "run", tmp_path / "model.onnx")  # checks against PyTorch itself (atol 1e-4)
    xs = torch.rand(3, 1, 64, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = m(xs).numpy()
    got = load_runtime(res.path, "onnx")(xs)
    assert np.allclose(got, expected, atol=1e-4)


def test_black_level_is_the_5th_percentile_hand_checked():
    """Gray levels 0, 1/64, ..., 63/64: the 5th percentile sits at rank 0.05 x 63 = 3.15, i.e.
    3/64 + 0.15/64 = 0.04921875 (linear interpolation, as numpy)."""
    x = (torch.arange(64.0) / 64).reshape(1, 1, 8, 8)
    assert float(image_statistics(x, ["black_level"])[0, 0]) == pytest.approx(3.15 / 64, abs=1e-7)
    assert float(image_statistics(x)[0, 6]) == pytest.approx(3.15 / 64, abs=1e-7)  # the seventh of the default
    # a veil of glare lifts the black level: x -> 0.2 + 0.8 x gives 0.2 + 0.8 x 0.04921875
    assert float(image_statistics(0.2 + 0.8 * x, ["black_level"])[0, 0]) == pytest.approx(0.2 + 0.8 * 3.15 / 64,
                                                                                            abs=1e-6)
    # the other statistics do not depend on which are asked for
    assert torch.allclose(image_statistics(x)[:, :6], image_statistics(x, SIX_STATISTICS), atol=0)
    # any quantile up to the median, any row length: as numpy's quantile
    rows = torch.rand(4, 101, generator=torch.Generator().manual_seed(0))
    for q in (0.0, 0.05, 0.25, 0.5):
        assert np.allclose(lower_quantile(rows, q).numpy(), np.quantile(rows.numpy(), q, axis=1), atol=1e-6)
    assert np.allclose(lower_quantile(rows[:, :1], 0.05).numpy(), rows[:, 0].numpy())


def test_models_saved_without_statistics_keep_the_six(tmp_path):
    """A model.json from before the black level names no ``statistics``: it rebuilds with six buffers and
    scores as before; the training default names all seven."""
    from crl_uiqa.model import build_model
    from crl_uiqa.training import settings

    assert settings()[1]["anchor"]["statistics"] == list(STATISTIC_NAMES)
    cfg = ModelConfig(image_size=(64, 80), head="anchored", train_from="head", proj_channels=4,
                      anchor={"layer": "block4", "k": 2, "n_references": 3, "dim": 128, "smoothing": False,
                              "reference_stats": "norm"})
    torch.manual_seed(0)
    m = build_model(cfg, pretrained=False)
    assert m.deviation.statistics == SIX_STATISTICS and m.deviation.center.shape == (6,)
    with torch.no_grad():
        m.anchor.set(torch.rand(3, 128), None, -5.0, 0.0)
        m.deviation.set(torch.tensor([[0.1, 0.2, -3.0, -2.5, -0.5, -0.4], [0.3, 0.25, -2.9, -2.4, -0.45, -0.35]]))
        m.fc.weight.fill_(-0.5)
    save_model(m.eval(), tmp_path / "run")
    back, _ = load_model(tmp_path / "run")
    assert "statistics" not in back.config.anchor and back.deviation.center.shape == (6,)
    xs = torch.rand(2, 1, 64, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(back(xs), m(xs), atol=1e-6)


def test_model_config_refuses_unknown_statistics():
    with pytest.raises(ConfigError, match="anchor unknown statistic 'median'"):
        ModelConfig(head="anchored", anchor={"reference_stats": "norm", "statistics": ["mean", "median"]})
    with pytest.raises(ConfigError, match="non-empty list"):
        ModelConfig(head="anchored", anchor={"reference_stats": "norm", "statistics": "black_level"})


def test_model_config_refuses_an_unknown_reference_stats_mode():
    with pytest.raises(ConfigError, match="reference_stats must be norm, each or off"):
        ModelConfig(head="anchored", anchor={"reference_stats": "median"})
    assert ModelConfig(head="anchored", anchor={"reference_stats": False}).anchor["reference_stats"] is False


def test_reference_stats_option_of_fit_and_train():
    """--reference-stats sets the anchored head's mode; the default is norm; --paper's head has none."""
    from crl_uiqa.cli import build_parser
    from crl_uiqa.commands._common import training_configs

    base = ["train", "--labels", "labels.csv", "--out", "run"]
    _, mc = training_configs(build_parser().parse_args(base))
    assert mc.head == "anchored" and mc.anchor["reference_stats"] == "norm"
    _, mc = training_configs(build_parser().parse_args(base + ["--reference-stats", "each"]))
    assert mc.anchor["reference_stats"] == "each"
    _, mc = training_configs(build_parser().parse_args(base + ["--reference-stats", "off"]))
    assert mc.anchor["reference_stats"] is False
    _, mc = training_configs(build_parser().parse_args(base + ["--paper"]))
    assert mc.head == "paper" and not mc.anchor.get("reference_stats")
    _, mc = training_configs(build_parser().parse_args(base))
    assert mc.anchor["statistics"] == list(STATISTIC_NAMES)  # the black level is in by default
    _, mc = training_configs(build_parser().parse_args(base + ["--no-black-level"]))
    assert mc.anchor["statistics"] == list(SIX_STATISTICS) and mc.anchor["reference_stats"] == "norm"


def test_anchored_head_options_with_the_papers_head_are_refused(tmp_path, monkeypatch, capsys):
    """--head paper --reference-stats each trained the paper's head, ignoring the option, and saved a model_config
    saying reference_stats norm: options the paper's head cannot honour are one line, before any work."""
    from crl_uiqa.cli import build_parser, main
    from crl_uiqa.commands._common import training_configs
    from crl_uiqa.errors import ConfigError

    base = ["fit", "--images", "i", "--references", "r", "--out", "run"]
    for extra, named in ((["--head", "paper", "--reference-stats", "each"], r"--reference-stats only apply"),
                         (["--paper", "--no-black-level"], r"--no-black-level only apply.*head here is paper \(--paper"),
                         (["--head", "paper", "--min-train-images", "5", "--reference-stats", "off"],
                          r"--reference-stats, --min-train-images only apply.*\(--head paper\): leave them out")):
        with pytest.raises(ConfigError, match=named):
            training_configs(build_parser().parse_args(base + extra))
    _, mc = training_configs(build_parser().parse_args(base + ["--head", "anchored", "--reference-stats", "each"]))
    assert mc.anchor["reference_stats"] == "each"
    # train without --references takes the paper's head: an anchored-only option there is refused too, exit 1
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels.csv").write_text("path,pseudo_label\na.png,0.1\nb.png,0.9\n")
    assert main(["train", "--labels", "labels.csv", "--out", "run", "--reference-stats", "each"]) == 1
    assert "--reference-stats only apply to the anchored head" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@torch.no_grad()
def test_deviation_correction_is_two_parameters_on_the_deviation_feature(tmp_path):
    """correction "deviation": no conv head, the FC sees the deviation feature alone, so the score is
    teacher + w * rms(log1p|z|) + b, hand-checked; saved, loaded back and exported alike."""
    from crl_uiqa.model import build_model

    cfg = ModelConfig(image_size=(64, 80), head="anchored", train_from="head",
                      anchor={"layer": "block4", "k": 2, "n_references": 3, "dim": 128, "smoothing": False,
                              "reference_stats": "norm", "correction": "deviation"})
    torch.manual_seed(0)
    m = build_model(cfg, pretrained=False)
    assert m.projection is None and m.fc.in_features == 1
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 2
    m.anchor.set(torch.rand(3, 128), None, -5.0, 0.0)
    m.deviation.set(torch.tensor([[0.1, 0.2, -3.0, -2.5, -0.5, -0.4], [0.3, 0.25, -2.9, -2.4, -0.45, -0.35]]))
    m.eval()
    xs = torch.rand(3, 1, 64, 80, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(m(xs), m.teacher_score(xs), atol=1e-6)  # starts at its teacher
    m.fc.weight.fill_(-0.5)
    m.fc.bias.fill_(0.1)
    z = (image_statistics(xs, SIX_STATISTICS) - m.deviation.center) / m.deviation.scale
    rms = torch.log1p(z.abs()).square().mean(dim=1).sqrt()
    assert torch.allclose(m(xs), m.teacher_score(xs) - 0.5 * rms + 0.1, atol=1e-5)
    save_model(m, tmp_path / "run")
    back, _ = load_model(tmp_path / "run")
    assert back.projection is None and torch.allclose(back(xs), m(xs), atol=1e-5)
    if importlib.util.find_spec("onnxruntime") is not None:
        from crl_uiqa.export import export_model, load_runtime

        res = export_model(tmp_path / "run", tmp_path / "model.onnx")
        assert np.allclose(load_runtime(res.path, "onnx")(xs), m(xs).numpy(), atol=1e-4)


def test_model_config_refuses_a_deviation_correction_without_the_deviation_features():
    with pytest.raises(ConfigError, match="needs anchor reference_stats"):
        ModelConfig(head="anchored", anchor={"correction": "deviation"})
    with pytest.raises(ConfigError, match="anchor correction must be one of full, deviation"):
        ModelConfig(head="anchored", anchor={"reference_stats": "norm", "correction": "conv"})
