"""The demo end to end at smoke size, on the no-weights (offline, fallback encoder) path."""
import json
import re

from crl_uiqa.cli import main


def test_demo_quick_fallback(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CRL_UIQA_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("CRL_UIQA_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "FALLBACK" in text and "report:" in text
    html = (out / "report.html").read_text()
    assert len(re.findall(r"data:image/png;base64,", html)) >= 5  # curves, strip, scatter, views, training
    assert "https://" not in html and "http://" not in html.replace("http://www.w3.org", "")
    res = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in res["table"]]
    assert methods[:2] == ["CRL-UIQA", "distance score (no training)"] and "mssim" in methods
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in res["table"])
    for p in res["picks"]:
        assert p["frame_error"] == abs(p["picked_frame"] - p["true_best_frame"])
    assert (out / "model" / "model.safetensors").exists() and (out / "encoder").exists()
