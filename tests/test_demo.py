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


def test_demo_quick_fallback(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CRL_UIQA_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("CRL_UIQA_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(weights, "PACKAGED_DIR", tmp_path / "no-packaged-weights")
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "FALLBACK" in text and "report:" in text
    html, res = _check_outputs(out)
    assert res["encoder"].startswith("FALLBACK") and (out / "encoder").exists()
    assert "Encoder: fallback" in html
