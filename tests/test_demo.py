"""The demo end to end at smoke size: with the packaged SonoNet-16 weights (the default, offline) and
on the fallback path (no weights anywhere)."""
import csv
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
    # frames.csv: one row per held-out frame, ground truth beside every method's score and p(plane)
    from crl_uiqa.demo import FRAME_COLUMNS

    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert rows and list(rows[0])[:len(FRAME_COLUMNS)] == FRAME_COLUMNS and set(methods) <= set(rows[0])
    assert all(0.0 <= float(r["plane_probability"]) <= 1.0 for r in rows)
    assert all(-1.0 <= float(r["plane_match"]) <= 1.0 for r in rows)
    assert {r["sweep"] for r in rows} == {p["sweep"] for p in res["picks"]}
    assert (out / "model" / "model.safetensors").exists()
    return html, res


def test_demo_quick_uses_packaged_sononet(quick_demo):
    html, res = _check_outputs(quick_demo)
    assert res["encoder"].startswith("SonoNet-16, published") and "SonoNet16.safetensors" in res["encoder"]
    assert res["pick_rule"] == {"smooth": 3.0, "plane_match": 0.5, "plane_classifier": 0.0, "plane_threshold": 0.0}
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
    # the pick rule (the model's score plus the plane match, no plane check by default) is stated: in the
    # settings, and per sweep in the captions
    assert "the CRL-UIQA score plus 0.5 × the plane match" in html and "among frames with p(abdominal" not in html
    assert "<th>eligible frames</th>" not in html  # no plane check: no column that would say "all" on every row
    assert "The curves show the pick score, not the model&#x27;s score" in html
    frames = [r["sweep"] for r in csv.DictReader((quick_demo / "frames.csv").open())]
    assert all(p["eligible_frames"] == frames.count(p["sweep"]) for p in res["picks"])  # every frame could be picked
    assert len(re.findall(r"<figcaption>[^<]*the pick score \(the CRL-UIQA score plus 0.5 × the plane match, each "
                          r"standardised over the sweep\)[^<]*No plane check", html)) == len(res["picks"])
    _check_reader_order(html, res)


def _check_reader_order(html, res):
    """The report reads as a user's: what was done and found, the pictures, the next commands; the developer details
    (settings, times, seed, files) come last, collapsed."""
    h2 = re.findall(r"<h2 id=\"[^\"]*\">([^<]*)</h2>", html)
    assert h2 == ["What it found", "Pictures", "Next: your own images", "For developers"]
    found = html[html.index(">What it found</h2>"):html.index(">Pictures</h2>")]
    for p in res["picks"]:  # each sweep's pick against its truly best frame, in words
        words = (f"picked frame {p['picked_frame']}, the truly best frame itself" if p["frame_error"] == 0 else
                 f"picked frame {p['picked_frame']}; the truly best is frame {p['true_best_frame']}, "
                 f"{p['frame_error']} frame")
        assert words in found, words
    model, dist = res["table"][0], res["table"][1]
    assert f"the trained model put {model['accuracy']:.1%} in the right order" in found
    verdict = ("ranks better than" if model["accuracy"] > dist["accuracy"] else "ranks worse than"
               if model["accuracy"] < dist["accuracy"] else "rank these pairs equally well")
    assert verdict in found
    nxt = html[html.index(">Next: your own images</h2>"):html.index(">For developers</h2>")]
    for command in ("crl-uiqa fit --images frames/ --references best_planes/ --out run/",
                    "crl-uiqa score --model run/ --images new_frames/ --out scores.csv",
                    "crl-uiqa report --scores scores.csv --pairs pairs.csv --out report.html",
                    "crl-uiqa select --model run/ --input scan1.mp4"):
        assert f"<code>{command}" in nxt, command
    dev = html[html.index(">For developers</h2>"):]
    assert dev.index('<details class="more"><summary>') < dev.index("<th>time</th>") < dev.index("</details>")
    assert "<th>seed</th><td>0 (--seed" in dev and "<th>CPU time</th>" in dev and "<code>results.json</code>" in dev
    assert html.count("<details") == 1 and "<details open" not in html


def test_demo_quick_sononet_with_the_plane_classifier_term(tmp_path, capsys):
    """--plane-classifier 1 beside SonoNet-16: the demo trains the plane classifier on simulated planes too, writes
    its probability of every held-out frame and picks on the three terms, as the report and the summary say."""
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet", "--plane-classifier", "1"]) == 0
    text = capsys.readouterr().out
    assert "plus 0.5 x the plane match plus 1 x the logit of the plane classifier's p(abdominal plane)" in text
    html, res = _check_outputs(out)
    assert res["encoder"].startswith("SonoNet-16, published") and (out / "encoder").is_dir()
    assert res["pick_rule"]["plane_classifier"] == 1.0
    assert "plus 1 × the logit of the plane classifier&#x27;s p(abdominal plane)" in html
    assert "`--plane-match 0 --plane-classifier 0`" not in html and "--plane-match 0 --plane-classifier 0" in html
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert all(0.0 <= float(r["classifier_probability"]) <= 1.0 for r in rows)
    # the trained classifier's probabilities, not SonoNet-16's own (plane_probability)
    assert any(abs(float(r["classifier_probability"]) - float(r["plane_probability"])) > 1e-3 for r in rows)
    # the pick is the top of the three standardised terms smoothed over +-3 frames, recomputed from frames.csv
    import numpy as np

    from crl_uiqa.demo import best_frame, pick_scores

    for p in res["picks"]:
        sw = sorted((r for r in rows if r["sweep"] == p["sweep"]), key=lambda r: int(r["frame"]))
        col = {c: np.array([float(r[c]) for r in sw]) for c in ("CRL-UIQA", "plane_match", "classifier_probability")}
        score = pick_scores(col["CRL-UIQA"], col["plane_match"], 0.5, col["classifier_probability"], 1.0)
        pos, _ = best_frame([int(r["frame"]) for r in sw], score, 3.0)
        assert int(sw[pos]["frame"]) == p["picked_frame"]


def test_demo_quick_fallback(tmp_path, capsys):
    """--encoder fallback: the path of a machine without SonoNet-16 weights, forced while the packaged copy is
    there; with --head auto the anchored head (it starts at the fallback's distance score). The output folder is
    reached through a symlink (as /tmp is on macOS): the ground truth is matched by path key, not resolved path.
    With the flags that restore the picks before the plane match: the plane check alone, stated in the report."""
    (tmp_path / "real").mkdir()
    try:
        (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    except OSError:  # no symlinks on this file system: the plain path still tests the fallback
        (tmp_path / "link").mkdir()
    out = tmp_path / "link" / "demo"
    assert main(["demo", "--quick", "--encoder", "fallback", "--out", str(out), "--quiet",
                 "--plane-match", "0", "--plane-threshold", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "only frames with p(abdominal plane) >= 0.5 could be picked" in text and "plane match" not in text
    assert "FALLBACK" in text and "report:" in text and "anchored head" in text
    html, res = _check_outputs(out)
    assert res["encoder"].startswith("FALLBACK") and (out / "encoder").exists()
    assert res["head"] == "anchored" and res["kept_epoch"] in (0, 1)
    assert "Encoder: fallback" in html
    assert "among frames with p(abdominal plane) ≥ 0.5" in html and "plane match" not in html.split("<h2")[2]
    assert "<th>eligible frames</th>" in html
    assert len(re.findall(r"<figcaption>[^<]*CRL-UIQA score along the sweep[^<]*Plane check: ", html)) == len(res["picks"])
    _check_reader_order(html, res)
    assert "<code>encoder/</code>" in html  # the fallback classifier's folder is listed among the files
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert all(r["CRL-UIQA"] not in ("", "nan") and r["plane_probability"] != "" for r in rows)
    model = json.loads((out / "model" / "model.json").read_text())["model_config"]
    assert model["head"] == "anchored" and model["anchor"]["layer"] == "adaptation"


def test_demo_without_weights_falls_back_and_encoder_sononet_says_so(tmp_path, monkeypatch, capsys):
    """No weights anywhere (packaged copy hidden, empty cache, no download): auto chooses the fallback encoder;
    --encoder sononet fails at once with one line, before simulating anything."""
    from crl_uiqa.demo import pipeline as demo

    monkeypatch.delenv("CRL_UIQA_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("CRL_UIQA_NO_DOWNLOAD", "1")
    monkeypatch.setenv("CRL_UIQA_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(weights, "PACKAGED_DIR", tmp_path / "no-packaged-weights")
    assert demo._find_sononet(None) is None
    assert demo.demo_head("auto") == "anchored"  # with either encoder
    assert demo.demo_head("paper") == "paper"
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--encoder", "sononet", "--out", str(out), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "--encoder sononet" in err and "not found" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # nothing simulated


def test_demo_weights_given_must_exist_and_load_before_any_work(tmp_path, capsys):
    """A --weights that is missing or not a weight file is refused in one line before anything is simulated;
    it never falls back silently to the fallback encoder (trial 8: a missing path ran the fallback demo)."""
    (tmp_path / "notes.npz").write_text("not weights")
    for given in (tmp_path / "missing.npz", tmp_path / "notes.npz"):
        out = tmp_path / f"demo-{given.stem}"
        assert main(["demo", "--quick", "--weights", str(given), "--out", str(out), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert str(given) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists()  # nothing simulated


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
    with pytest.raises(ConfigError, match="--smooth"):
        DemoSettings(out_dir=tmp_path, smooth=-1)
    with pytest.raises(ConfigError, match="--seed"):
        DemoSettings(out_dir=tmp_path, seed=-1)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="--plane-threshold"):
            DemoSettings(out_dir=tmp_path, plane_threshold=bad)
    for bad in (-1, float("inf"), "1"):
        with pytest.raises(ConfigError, match="--plane-match"):
            DemoSettings(out_dir=tmp_path, plane_match=bad)
        with pytest.raises(ConfigError, match="--plane-classifier"):
            DemoSettings(out_dir=tmp_path, plane_classifier=bad)
    # the anchored head's settings are pinned in the demo (the project's defaults may move on), on the demo's
    # layer and size, on whole frames; they build valid configurations
    from crl_uiqa.model import ModelConfig
    from crl_uiqa.training import TrainConfig

    t, m = DemoSettings(out_dir=tmp_path).training("anchored")
    assert t["train_crop"] is None and t["epochs"] == 6 and t["lr"] == 0.5 and t["select"] == "best"
    assert m["head"] == "anchored" and m["anchor"]["layer"] == "adaptation" and m["image_size"] == (112, 144)
    assert TrainConfig(**t).select == "best" and ModelConfig(**m).head == "anchored"
    t["epochs"] = 1
    m["anchor"]["k"] = 1
    assert DemoSettings(out_dir=tmp_path).training("anchored")[0]["epochs"] == 6  # a copy, not the pinned dict
    assert DemoSettings(out_dir=tmp_path).training("anchored")[1]["anchor"]["k"] == 3
    # with SonoNet-16 the anchored head scores at the network's own size, trained on windows of half each side;
    # the paper's head stays at 112x144 on whole frames
    t, m = DemoSettings(out_dir=tmp_path).training("anchored", fallback=False)
    assert m["image_size"] == (224, 288) and TrainConfig(**t).crop_size(m["image_size"]) == (112, 144)
    t, m = DemoSettings(out_dir=tmp_path).training("paper", fallback=False)
    assert m["image_size"] == (112, 144) and t.get("train_crop") is None and m["head"] == "paper"
    assert DemoSettings(out_dir=tmp_path).smooth == 3.0 and DemoSettings(out_dir=tmp_path, smooth=0).smooth == 0.0
    # the command's defaults are the demo's (the command module does not import the demo to build its parser)
    from crl_uiqa.cli import build_parser
    from crl_uiqa.demo import DEMO_PLANE_THRESHOLD, DEMO_SMOOTH

    args = build_parser().parse_args(["demo"])
    assert args.smooth == DEMO_SMOOTH and args.plane_threshold == DEMO_PLANE_THRESHOLD == 0.0
    from crl_uiqa.demo import DEMO_PLANE_MATCH

    assert args.plane_match == DEMO_PLANE_MATCH == DemoSettings(out_dir=tmp_path).plane_match == 0.5
    from crl_uiqa.demo.pipeline import DEMO_PLANE_CLASSIFIER

    assert args.plane_classifier == DEMO_PLANE_CLASSIFIER == DemoSettings(out_dir=tmp_path).plane_classifier
    assert DemoSettings(out_dir=tmp_path).plane_threshold == DEMO_PLANE_THRESHOLD


def test_pick_scores_add_the_plane_match_standardised_over_the_sweep():
    import numpy as np
    import pytest

    from crl_uiqa.demo import pick_scores
    from crl_uiqa.errors import InputError

    model = np.array([1.0, 2.0, 3.0])  # mean 2, sd sqrt(2/3)
    match = np.array([0.5, 0.1, 0.3])  # mean 0.3, sd sqrt(0.08/3)
    np.testing.assert_array_equal(pick_scores(model, match, 0.0), model)  # weight 0: the model's scores
    z_model = np.array([-1.0, 0.0, 1.0]) / np.sqrt(2 / 3)
    z_match = np.array([0.2, -0.2, 0.0]) / np.sqrt(0.08 / 3)
    np.testing.assert_allclose(pick_scores(model, match, 0.5), z_model + 0.5 * z_match, rtol=1e-12)
    # with enough weight the plane match moves the pick from the model's best frame (2) to its own (0)
    assert int(np.argmax(pick_scores(model, match, 0.5))) == 2 and int(np.argmax(pick_scores(model, match, 2))) == 0
    # a flat term adds nothing (no division by zero)
    np.testing.assert_allclose(pick_scores(model, np.full(3, 0.4), 1.0), z_model, rtol=1e-12)
    # the plane classifier's term: the logit of its probabilities, standardised, times its weight
    p = np.array([0.5, 0.1, 0.9])  # logits 0, -log 9, log 9: mean 0, sd log(9) sqrt(2/3)
    z_logit = np.array([0.0, -1.0, 1.0]) / np.sqrt(2 / 3)
    np.testing.assert_allclose(pick_scores(model, match, 0.5, p, 2.0), z_model + 0.5 * z_match + 2 * z_logit,
                               rtol=1e-12)
    np.testing.assert_allclose(pick_scores(model, match, 0.0, p, 1.0), z_model + z_logit, rtol=1e-12)
    # probabilities of 0 and 1 are clipped to 1e-6 and 1 - 1e-6 (logits -+13.8), not infinite
    np.testing.assert_allclose(pick_scores(np.zeros(3), match, 0.0, np.array([0.0, 0.5, 1.0]), 1.0),
                               np.array([-1.0, 0.0, 1.0]) / np.sqrt(2 / 3), rtol=1e-9, atol=1e-9)
    with pytest.raises(InputError, match="classifier"):
        pick_scores(model, match, 0.5, None, 1.0)


def test_best_frame_smoothing_prefers_a_stretch_of_good_frames_to_a_lone_spike():
    import numpy as np
    import pytest

    from crl_uiqa.demo import best_frame

    frames = np.arange(40)
    scores = np.full(40, 0.2)
    scores[5] = 1.0  # a lone spike
    scores[18:25] = [0.7, 0.8, 0.85, 0.9, 0.85, 0.8, 0.7]  # a smooth peak at frame 21
    pos, smoothed = best_frame(frames, scores)
    assert pos == 5 and np.allclose(smoothed, scores)
    pos, smoothed = best_frame(frames, scores, 4)
    assert pos == 21 and smoothed[5] < 0.5  # the spike is averaged away
    assert smoothed[5] < smoothed[21] and smoothed.shape == scores.shape
    # frame numbers are the time axis: a sweep that starts at frame 100 picks the same position
    assert best_frame(frames + 100, scores, 4)[0] == 21
    # ties go to the earlier frame; NaN is never picked; no finite score is an error
    assert best_frame(frames[:3], [0.5, 0.5, 0.1])[0] == 0
    assert best_frame(frames[:3], [np.nan, 0.2, 0.1])[0] == 1
    with pytest.raises(ValueError, match="finite"):
        best_frame(frames[:2], [np.nan, np.nan])


def test_best_frame_plane_check_picks_among_eligible_frames_of_the_scores_smoothed_over_all():
    """The plane check (select --plane): only eligible frames may be picked, but the smoothing runs over every
    frame, so an eligible frame next to good ineligible ones keeps their support. Hand-computed case."""
    import numpy as np
    import pytest

    from crl_uiqa.demo import best_frame

    frames = np.arange(6)
    scores = np.array([0.1, 0.9, 0.2, 0.3, 0.4, 0.35])
    ok = np.array([False, False, True, True, True, True])
    assert best_frame(frames, scores)[0] == 1  # frame 1 wins without the check
    pos, smoothed = best_frame(frames, scores, eligible=ok)
    assert pos == 4 and np.allclose(smoothed, scores)  # the best eligible raw score
    # smoothed over +-2 frames (Gaussian weights exp(-d^2 / 2), sigma 1, truncated at 2 frames, renormalised):
    # frame 2 gains from frame 1 (0.9) and wins among the eligible frames 2-5
    pos, smoothed = best_frame(frames, scores, 2, eligible=ok)
    w = np.exp(-np.array([2.0, 1.0, 0.0, 1.0, 2.0]) ** 2 / 2)
    s2 = (w @ scores[0:5]) / w.sum()
    assert pos == 2 and smoothed[2] == pytest.approx(s2, abs=1e-9)
    assert smoothed[2] > smoothed[3] and smoothed[2] > smoothed[4]
    with pytest.raises(ValueError, match="eligible"):
        best_frame(frames, scores, eligible=np.zeros(6, dtype=bool))


def test_views_figure_accepts_a_resize_that_overshoots_one():
    """Antialiased resizing of a sharp 0/1 image overshoots 1 by a rounding error; the corruptions refuse values
    outside [0, 1], so the report's Fig. 2 crashed on such a frame (found with the anchored head at 224x288).
    ``to_tensor`` clips the overshoot, so a batch read by ``iter_batches`` can be corrupted as it is."""
    import numpy as np
    import torch
    from torch.nn import functional as F

    from crl_uiqa.corruptions import ULTRASOUND_FAMILIES, sample_strong_views
    from crl_uiqa.demo.report import model_views_figure as _views_figure
    from crl_uiqa.io import to_tensor

    img = (np.random.default_rng(0).random((256, 320)) > 0.5).astype(np.float32)
    raw = F.interpolate(torch.from_numpy(img)[None, None], size=(224, 288), mode="bilinear", antialias=True,
                        align_corners=False)
    assert float(raw.max()) > 1.0  # the case this test is about
    x = to_tensor(img, (224, 288))
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    torch.testing.assert_close(x, raw[0].clamp(0.0, 1.0), rtol=0, atol=0)
    views, _, _ = sample_strong_views(x[None], ULTRASOUND_FAMILIES, generator=torch.Generator().manual_seed(0))
    assert views.shape == (1, 1, 224, 288)

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3))

    fig, caption = _views_figure(Mean(), img, (224, 288))
    assert "Source score" in caption


def test_demo_never_replaces_a_users_file(tmp_path, capsys):
    """A folder holding a file named like a demo output, written by someone else, is refused before any work;
    the user's file is kept."""
    from crl_uiqa.cli import main

    mine = tmp_path / "userdir" / "report.html"
    mine.parent.mkdir()
    mine.write_text("mine")
    assert main(["demo", "--quick", "--quiet", "--out", str(mine.parent)]) == 1
    err = capsys.readouterr().err
    assert f"{mine}: no crl-uiqa run wrote this file" in err and len(err.strip().splitlines()) == 1
    assert mine.read_text() == "mine" and sorted(p.name for p in mine.parent.iterdir()) == ["report.html"]


def test_findings_say_which_ranks_better_and_whether_the_intervals_allow_it():
    from crl_uiqa.demo.report import _findings_text

    pick = {"sweep": "s1", "picked_frame": 4, "true_best_frame": 4, "frame_error": 0, "picked_true_quality": 0.9,
            "best_true_quality": 0.9}
    far = {**pick, "sweep": "s2", "picked_frame": 9, "frame_error": 5, "picked_true_quality": 0.5}

    def row(method, acc, lo, hi):
        return {"method": method, "accuracy": acc, "ci_low": lo, "ci_high": hi, "pairs": 200}

    text = _findings_text([row("CRL-UIQA", 0.62, 0.55, 0.69), row("distance score (no training)", 0.80, 0.74, 0.85),
                           row("niqe", 0.41, 0.35, 0.48)], [pick, far])
    assert "on average 2.5 frames from the truly best one, exactly on it in 1 of 2 sweeps, within 2 frames in 1 of 2" \
        in text
    assert "picked frame 4, the truly best frame itself (true quality 0.900)" in text
    assert "picked frame 9; the truly best is frame 4, 5 frames away (true quality 0.500 against 0.900)" in text
    assert "put 62.0% in the right order" in text and "ranks worse than the distance score it started from, by " \
        "18.0 percentage points. The two 95% intervals do not overlap." in text
    assert "the best (niqe) reached 0.410" in text
    text = _findings_text([row("CRL-UIQA", 0.73, 0.685, 0.77), row("distance score (no training)", 0.715, 0.667,
                                                                       0.757)], [])
    assert "ranks better than" in text and "intervals overlap, so on this many pairs the difference is not certain" \
        in text and "Best frames" not in text and "other image-quality methods" not in text


def test_report_details_is_a_collapsed_section():
    from crl_uiqa.report import Report

    rep = Report("t", timestamp="2024-01-01")
    with rep.details("For <developers>"):
        rep.add_text("inside")
    rep.add_text("after")
    html = rep.to_html()
    assert '<details class="more"><summary>For &lt;developers&gt;</summary>\n<p>inside</p>\n</details>\n<p>after</p>' \
        in html
