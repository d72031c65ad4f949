"""The demo end to end at smoke size: with the packaged SonoNet-16 weights (the default, offline) and
on the fallback path (no weights anywhere)."""
import json
import re

from crl_uiqa import weights
from crl_uiqa.cli import main


def _check_outputs(out):
    html = (out / "report.html").read_text()
    assert len(re.findall(r"data:image/png;base64,", html)) >= 5  # curves, strip, scatter, views, training
    assert "https://" not in html and "http://" not in html.replace("http://www.w3.org", "")
    res = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in res["table"]]
    assert methods[:2] == ["CRL-UIQA", "distance score (no training)"] and "mssim" in methods
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in res["table"])
    for p in res["picks"]:
        assert p["frame_error"] == abs(p["picked_frame"] - p["true_best_frame"])
    assert (out / "model" / "model.safetensors").exists()
    return html, res


def test_demo_quick_uses_packaged_sononet(quick_demo):
    html, res = _check_outputs(quick_demo)
    assert res["encoder"].startswith("SonoNet-16, published") and "SonoNet16.safetensors" in res["encoder"]
    assert not (quick_demo / "encoder").exists()  # no fallback trained
    assert set(res["cpu_seconds"]) == set(res["timings"]) and all(v >= 0 for v in res["cpu_seconds"].values())
    assert "Encoder: SonoNet-16 with its published weights" in html
    # the time row is readable text, not a Python dict
    time_row = re.search(r"<th>time</th><td>([^<]*)</td>", html).group(1)
    assert "{" not in time_row and re.fullmatch(r"(\w[\w-]* \d+ s · )+total \d+ s", time_row)
    # jargon explained
    for term in ("P(·)", "k", "Yeo-Johnson λ", "val_srcc"):
        assert f"<li><strong>{term}</strong>:" in html
    # Fig. 2's caption states the scores it shows (computed, not a fixed claim)
    cap = re.search(r"The best-scored held-out frame with its weak and strong views\. ([^<]*)</figcaption>", html)
    assert cap and "Source score" in cap.group(1) and "largest change" in cap.group(1)
    assert "score should hold" not in html


def test_demo_quick_fallback(tmp_path, capsys):
    """--encoder fallback: the path of a machine without SonoNet-16 weights, forced while the packaged copy is
    there; with --head auto the anchored head (it starts at the fallback's distance score)."""
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--encoder", "fallback", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "FALLBACK" in text and "report:" in text and "anchored head" in text
    html, res = _check_outputs(out)
    assert res["encoder"].startswith("FALLBACK") and (out / "encoder").exists()
    assert res["head"] == "anchored" and res["kept_epoch"] in (0, 1)
    assert "Encoder: fallback" in html
    model = json.loads((out / "model" / "model.json").read_text())["model_config"]
    assert model["head"] == "anchored" and model["anchor"]["layer"] == "adaptation"


def test_demo_without_weights_falls_back_and_encoder_sononet_says_so(tmp_path, monkeypatch, capsys):
    """No weights anywhere (packaged copy hidden, empty cache, no download): auto chooses the fallback encoder;
    --encoder sononet fails at once with one line, before simulating anything."""
    from crl_uiqa import demo

    monkeypatch.delenv("CRL_UIQA_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("CRL_UIQA_NO_DOWNLOAD", "1")
    monkeypatch.setenv("CRL_UIQA_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(weights, "PACKAGED_DIR", tmp_path / "no-packaged-weights")
    assert demo._find_sononet(None) is None
    assert demo.demo_head("auto", fallback=True) == "anchored" and demo.demo_head("auto", fallback=False) == "paper"
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--encoder", "sononet", "--out", str(out), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "--encoder sononet" in err and "not found" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # nothing simulated


def test_demo_settings_refused_before_any_work(tmp_path):
    import pytest

    from crl_uiqa.demo import DemoSettings
    from crl_uiqa.errors import ConfigError

    with pytest.raises(ConfigError, match="encoder"):
        DemoSettings(out_dir=tmp_path, encoder="resnet")
    with pytest.raises(ConfigError, match="head"):
        DemoSettings(out_dir=tmp_path, head="big")
    with pytest.raises(ConfigError, match="--weights"):
        DemoSettings(out_dir=tmp_path, encoder="fallback", weights="SonoNet16.npz")
    # the anchored head's settings are the project's defaults, on the demo's layer and size, on whole frames
    t, m = DemoSettings(out_dir=tmp_path).training("anchored")
    from crl_uiqa.training import settings

    default = settings()[0]
    assert t["train_crop"] is None and default["train_crop"] == 0.5
    assert {k: t[k] for k in default if k != "train_crop"} == {k: v for k, v in default.items() if k != "train_crop"}
    assert m["head"] == "anchored" and m["anchor"]["layer"] == "adaptation" and m["image_size"] == (112, 144)


def test_views_figure_accepts_a_resize_that_overshoots_one():
    """Antialiased resizing of a sharp 0/1 image overshoots 1 by a rounding error; the corruptions refuse values
    outside [0, 1], so the report's Fig. 2 crashed on such a frame (found with the anchored head at 224x288)."""
    import numpy as np
    import torch

    from crl_uiqa.demo import _views_figure
    from crl_uiqa.io import to_tensor

    img = (np.random.default_rng(0).random((256, 320)) > 0.5).astype(np.float32)
    assert float(to_tensor(img, (224, 288)).max()) > 1.0  # the case this test is about

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3))

    fig, caption = _views_figure(Mean(), img, (224, 288))
    assert "Source score" in caption
