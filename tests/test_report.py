"""Tests of the report figures, the HTML report builder and ``crl-uiqa report``."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import matplotlib.text
import numpy as np
import pytest
from matplotlib.figure import Figure

from crl_uiqa import __version__
from crl_uiqa import figures as F
from crl_uiqa.errors import ImageError, InputError
from crl_uiqa.report import PNG_SIGNATURE, Report, image_to_png

TS = "2024-10-06 12:00:00"


def _images(rng, n, shape=(24, 32)):
    return [rng.random(shape).astype(np.float32) for _ in range(n)]


def _n_images(fig: Figure) -> int:
    return sum(len(ax.images) for ax in fig.axes)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


# -- figures -------------------------------------------------------------------
def test_fig_to_png_is_png_with_dpi_scaling():
    fig = F.score_scatter([1, 2, 3], [3, 1, 2], xlabel="a", ylabel="b")
    w1, h1 = _png_size(F.fig_to_png(fig, dpi=50))
    w2, h2 = _png_size(F.fig_to_png(fig, dpi=100))
    # constrained layout keeps the figure size: the pixel size scales with dpi
    assert (w1, h1) == (250, 210)
    assert (w2, h2) == (500, 420)
    with pytest.raises(ValueError):
        F.fig_to_png("not a figure")


def test_quality_curve_marks_best_and_picks(rng):
    scores = np.array([0.1, 0.4, np.nan, 0.9, 0.3, 0.5])
    fig = F.quality_curve(scores, picks=[1, 5], title="sweep")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1 and _n_images(fig) == 0
    lines = {ln.get_label(): ln for ln in fig.axes[0].lines}
    best = next(ln for lab, ln in lines.items() if lab.startswith("best"))
    # default best = highest finite score, NaN ignored
    assert list(best.get_xdata()) == [3.0] and list(best.get_ydata()) == [0.9]
    assert list(lines["picked"].get_xdata()) == [1.0, 5.0]
    assert fig.axes[0].get_title() == "sweep"
    assert fig.axes[0].get_xlabel() == "frame"
    assert fig.axes[0].get_ylabel() == "quality score (higher = better)" and "score" in lines
    # a curve that is not a quality score (the demo's pick score) says so on the axis, legend and thumbnail
    fig = F.quality_curve(scores, title="sweep", score_name="pick score", thumbnails={3: rng.random((8, 10))})
    assert fig.axes[0].get_ylabel() == "pick score (higher = better)"
    assert "pick score" in [ln.get_label() for ln in fig.axes[0].lines]
    assert fig.axes[1].get_title() == "best: frame 3\npick score 0.900"


def test_shade_ineligible_shades_each_stretch_once_half_a_frame_wide():
    """The plane check's shading (select and the demo): one band per run of ineligible frames, reaching half a
    frame interval beyond its first and last frame; one legend entry; nothing when every frame is eligible."""
    fig = F.quality_curve([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], times=[0, 2, 4, 6, 8, 10])
    ax = fig.axes[0]
    F.shade_ineligible(ax, [0, 2, 4, 6, 8, 10], [True, False, False, True, True, False])
    spans = [p for p in ax.patches]
    xs = [ax.transData.inverted().transform(p.get_verts())[:, 0] for p in spans]  # Rectangle or Polygon (mpl < 3.9)
    extents = sorted((round(float(x.min()), 6), round(float(x.max()), 6)) for x in xs)
    assert extents == [(1.0, 5.0), (9.0, 11.0)]  # frames 1-2 (t 2-4) and frame 5 (t 10), +-1 s (half of 2 s)
    assert [p.get_label() for p in spans].count("not eligible") == 1
    fig = F.quality_curve([0.1, 0.2])
    F.shade_ineligible(fig.axes[0], [0, 1], [True, True])
    assert not fig.axes[0].patches


def test_quality_curve_thumbnail_and_times(rng):
    imgs = _images(rng, 4)
    times = [0.0, 0.5, 1.0, 1.5]
    fig = F.quality_curve([0.2, 0.8, 0.5, 0.1], times=times, thumbnails=imgs)
    assert len(fig.axes) == 2 and _n_images(fig) == 1
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), imgs[1])
    assert fig.axes[1].get_title() == "best: 0.5 s\nscore 0.800"
    best = next(ln for ln in fig.axes[0].lines if ln.get_label().startswith("best"))
    assert list(best.get_xdata()) == [0.5]
    assert fig.axes[0].get_xlabel() == "time (s)"
    # an explicit best, a single image as thumbnail, a mapping without it
    fig = F.quality_curve([0.2, 0.8, 0.5], best=2, thumbnails=imgs[0])
    assert _n_images(fig) == 1 and "frame 2" in fig.axes[1].get_title()
    assert len(F.quality_curve([0.2, 0.8], thumbnails={0: imgs[0]}).axes) == 1
    with pytest.raises(ValueError, match="out of range"):
        F.quality_curve([0.2, 0.8], picks=[2])
    with pytest.raises(ValueError, match="times"):
        F.quality_curve([0.2, 0.8], times=[1.0])
    assert _png_size(F.fig_to_png(fig))[0] > 0


def test_ranked_strip_orders_best_first(rng):
    imgs = _images(rng, 10)
    scores = [0.3, 0.9, np.nan, 0.1, 0.7, 0.5, 0.2, 0.8, 0.6, 0.4]
    fig = F.ranked_strip(imgs, scores, labels=[f"q{i}" for i in range(10)], n=4, title="top")
    assert len(fig.axes) == 4 and _n_images(fig) == 4
    assert [ax.get_title() for ax in fig.axes] == ["#1  0.900\nq1", "#2  0.800\nq7", "#3  0.700\nq4",
                                                   "#4  0.600\nq8"]
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), imgs[1])
    # all 10: wraps after 8 per row, NaN ranks last, first_rank offsets the numbering
    fig = F.ranked_strip(imgs, scores, n=20, first_rank=5)
    assert len(fig.axes) == 10
    assert fig.axes[-1].get_title() == "#14  n/a"
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (2, 8)
    with pytest.raises(ValueError, match="images"):
        F.ranked_strip(imgs[:3], scores)


def test_views_figure_counts(rng):
    src, *rest = _images(rng, 9)
    weak = [(rest[i], 0.8, name) for i, name in enumerate(["hflip", "vflip", "rot90"])]
    strong = [(rest[3 + i], 0.8 - 0.1 * i, f"blur {i}") for i in range(5)]
    fig = F.views_figure(src, 0.81, weak, strong)
    assert len(fig.axes) == 9 and _n_images(fig) == 9
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "(a) source\nscore 0.810"
    assert "hflip\n0.800" in titles and "blur 4\n0.400" in titles
    with pytest.raises(ValueError, match="weak"):
        F.views_figure(src, 0.8, [(src, 0.8)], [])


def _smallest_text_px(fig, column_px=1120, dpi=100):
    """Smallest text of ``fig`` in screen pixels once shown at ``dpi`` in a report column ``column_px`` wide."""
    fig.canvas.draw()
    width_px = fig.get_figwidth() * dpi
    scale = min(1.0, column_px / width_px)
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text()]
    return min(sizes) * dpi / 72 * scale


def test_views_figure_labels_are_legible_in_the_report(rng):
    """Four weak views and two families of four degrees (the demo's Fig. 2): no label under 11 px."""
    src, *rest = _images(rng, 13, shape=(112, 144))
    weak = [(rest[i], 0.8, name) for i, name in enumerate(["h-flip", "v-flip", "rot 12°", "h-flip + rot -10°"])]
    strong = [(rest[4 + i], 0.7, f"{fam} {d:.2f}") for i, (fam, d) in
              enumerate((f, d) for f in ("gaussian blur", "motion blur") for d in (0.25, 0.5, 0.75, 1.0))]
    fig = F.views_figure(src, 0.81, weak, strong, columns=4)
    assert fig.axes[1].get_subplotspec().get_geometry()[:2] == (3, 5)  # weak row + one row per family
    assert _smallest_text_px(fig) >= 11
    # the old one-row layout of ten views shrank 8-pt labels to 7.5 px
    wide = F.views_figure(src, 0.81, weak[:4], strong[:6])
    assert _smallest_text_px(wide) >= 11


def test_views_caption_states_what_the_numbers_show():
    # a flip that drops the score, as in the demo report of issue 11
    text = F.views_caption(0.62, [("h-flip", 0.50), ("v-flip", 0.61)],
                           [("gaussian blur", 0.5, 0.55), ("gaussian blur", 1.0, 0.40),
                            ("motion blur", 0.5, 0.64), ("motion blur", 1.0, 0.58)])
    assert "largest change h-flip, 0.620 → 0.500" in text
    assert "gaussian blur 0.620 → 0.550 → 0.400" in text and "falls at every step" in text
    assert "motion blur 0.620 → 0.640 → 0.580" in text and "not at every step" in text
    assert "not consistent on this frame" in text and "keep" not in text.split("Weak views")[1].split(":")[1]
    good = F.views_caption(0.62, [("h-flip", 0.61)], [("blur", 0.5, 0.5), ("blur", 1.0, 0.3)])
    assert "at most 0.010, less than the strongest corruption lowers it (at least 0.320)" in good
    flat = F.views_caption(0.5, [], [("blur", 1.0, 0.6)])
    assert "does not fall" in flat


def test_training_curves_panels():
    hist = [
        {"epoch": e, "loss": 1.0 / e, "L_d": 0.5 / e, "L_c": 0.1 / e, "L_r": 0.2 / e, "lr": 1e-4,
         "val_accuracy": 0.6 + 0.02 * e}
        for e in range(1, 6)
    ]
    hist[2].pop("val_accuracy")  # a missing value leaves a gap
    fig = F.training_curves(hist)
    assert len(fig.axes) == 2
    losses, acc = fig.axes
    assert [ln.get_label() for ln in losses.lines] == ["loss", "L_d", "L_c", "L_r"]
    val = next(ln for ln in acc.lines if ln.get_label() == "val_accuracy")
    assert list(val.get_xdata()) == [1, 2, 4, 5]
    np.testing.assert_allclose(val.get_ydata(), [0.62, 0.64, 0.68, 0.70])
    # a training history: the kept-epoch criterion copies val_strong_accuracy and stays off the loss panel
    hist = [{"epoch": e, "loss": 0.01, "val_strong_accuracy": 0.85 + 0.01 * e, "criterion": 0.85 + 0.01 * e,
             "val_strong_pairs": 113} for e in range(1, 4)]
    losses, acc = F.training_curves(hist).axes
    assert [ln.get_label() for ln in losses.lines] == ["loss"]
    assert "val_strong_accuracy" in [ln.get_label() for ln in acc.lines]
    fig = F.training_curves([{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}])
    assert len(fig.axes) == 1
    with pytest.raises(ValueError):
        F.training_curves([{"epoch": 1}])


def test_score_scatter_spearman():
    # d = (0, 1, -1, 0): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert F.spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert np.isnan(F.spearman_rho([1, 2, 3], [5, 5, 5]))
    fig = F.score_scatter([1, 2, 3, 4, np.nan], [1, 3, 2, 4, 7], xlabel="true", ylabel="pred", title="t")
    assert len(fig.axes) == 1
    assert fig.axes[0].get_title() == "t\nSpearman \u03c1 = 0.800, n = 4"
    assert fig.axes[0].get_xlabel() == "true"


# -- HTML report ---------------------------------------------------------------
def _srcs(text: str) -> list[str]:
    return re.findall(r'src="([^"]*)"', text)


def _thumbs(text: str) -> list[list[str]]:
    """The caption lines of each thumbnail of :meth:`Report.add_thumbnails` in the page, in order."""
    return [re.sub(r"</?strong>", "", cap).split("<br>")
            for cap in re.findall(r'<figure>(?:<img [^>]*>|<div class="noimg"[^>]*>[^<]*</div>)'
                                  r"<figcaption>(.*?)</figcaption></figure>", text)]


def test_report_html_contents(tmp_path, rng):
    rep = Report("Sweep <quality>", timestamp=TS)
    rep.add_heading("Summary").add_key_values({"frames": 12, "best score": 0.91234, "name": "a&b"})
    rep.add_text("First **bold** and `code`.\n\n- one\n- two")
    rep.add_heading("Table")
    rep.add_table([{"path": "a.png", "score": 0.5, "n": 3}, {"path": "b.png", "score": float("nan")}],
                  caption="Scores", float_format="{:.2f}")
    rep.add_heading("Figures")
    rep.add_figure(F.score_scatter([1, 2, 3], [1, 2, 3], xlabel="x", ylabel="y"), caption="scatter")
    rep.add_images(_images(rng, 3, (40, 60)), ["i1", "i2", "i3"], size=30)
    out = rep.write(tmp_path / "sub" / "report.html")
    assert out == tmp_path / "sub" / "report.html"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temp file left behind
    text = out.read_text(encoding="utf-8")
    assert text == rep.to_html()
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>Sweep &lt;quality&gt;</title>" in text
    for anchor, heading in [("summary", "Summary"), ("table", "Table"), ("figures", "Figures")]:
        assert f'<h2 id="{anchor}">{heading}</h2>' in text
        assert f'<a href="#{anchor}">{heading}</a>' in text  # table of contents
    assert "<strong>bold</strong>" in text and "<code>code</code>" in text
    assert "<ul><li>one</li><li>two</li></ul>" in text
    assert "<caption>Scores</caption>" in text
    assert '<td class="num">0.50</td>' in text and '<td class="num">n/a</td>' in text
    assert '<td class="num">3</td>' in text and "<td></td>" in text  # missing key: empty cell
    assert '<th>best score</th><td class="num">0.9123</td>' in text and "<td>a&amp;b</td>" in text
    assert f"crl-uiqa {__version__}" in text and TS in text
    srcs = _srcs(text)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in text and "https://" not in text
    assert "<figcaption>i2</figcaption>" in text


def test_report_escapes_user_text():
    evil = "<script>alert('x')</script>"
    rep = Report(evil, timestamp=TS)
    rep.add_heading(evil).add_text(evil).add_table([{evil: evil}], caption=evil)
    rep.add_key_values({evil: evil})
    text = rep.to_html()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text


def test_report_input_checks(rng):
    rep = Report("r", timestamp=TS)
    with pytest.raises(ValueError, match="PNG"):
        rep.add_figure(b"GIF89a....")
    with pytest.raises(ValueError, match="captions"):
        rep.add_images(_images(rng, 2), ["only one"])
    with pytest.raises(ValueError, match="image 0"):
        rep.add_images([np.zeros((2, 3, 4))])
    with pytest.raises(ValueError, match="float_format"):
        rep.add_table([{"a": 1.0}], float_format="{:d}")
    with pytest.raises(ValueError, match="level"):
        rep.add_heading("x", level=1)
    # PNG bytes are embedded as they are; thumbnails only shrink
    png = image_to_png(np.full((10, 40), 0.5), size=20)
    assert _png_size(png) == (20, 5)
    assert _png_size(image_to_png(np.zeros((10, 40)), size=100)) == (40, 10)
    rep.add_figure(png)
    assert "data:image/png;base64," in rep.to_html()


def test_counts_and_sizes_are_whole_numbers_or_one_line_config_errors(rng, score_folder, tmp_path):
    from crl_uiqa.baselines import _nss
    from crl_uiqa.errors import ConfigError
    from crl_uiqa.report_scores import build_score_report

    fig = F.score_scatter([1, 2, 3], [3, 1, 2], xlabel="a", ylabel="b")
    img = np.full((10, 40), 0.5)
    cases = [
        (lambda: F.fig_to_png(fig, dpi=50.0), "fig_to_png: dpi must be an integer, got 50.0"),
        (lambda: F.fig_to_png(fig, dpi=0), "fig_to_png: dpi must be >= 1, got 0"),
        (lambda: F.ranked_strip(_images(rng, 3), [1, 2, 3], n=2.5), "ranked_strip: n must be an integer, got 2.5"),
        (lambda: F.score_histogram([1, 2, 3], bins="4"), "score_histogram: bins must be an integer, got '4'"),
        (lambda: image_to_png(img, size=20.0), "size must be an integer, got 20.0"),
        (lambda: Report("r").add_images([img], size=0), "size must be >= 1, got 0"),  # the size, not "image 0"
        (lambda: build_score_report(score_folder / "scores.csv", tmp_path / "r.html", top=2.0),
         "top (--top) must be an integer, got 2.0"),
        (lambda: build_score_report(score_folder / "scores.csv", tmp_path / "r.html", max_groups=None),
         "max_groups must be an integer, got None"),
        (lambda: _nss.gaussian_window(7.0), "window size must be an integer, got 7.0"),
        (lambda: _nss.gaussian_window(6), "window size must be odd, got 6"),
    ]
    for call, message in cases:
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value) == message
    assert not (tmp_path / "r.html").exists()
    # valid whole numbers keep working, numpy's included
    assert _png_size(image_to_png(img, size=np.int64(20))) == (20, 5)
    assert _png_size(F.fig_to_png(fig, dpi=np.int32(50))) == (250, 210)
    assert _nss.gaussian_window(np.int64(7)).shape == (7, 7)


def test_report_thumbnails_escape_wrap_and_keep_the_place_of_a_missing_image(rng):
    rep = Report("t", timestamp=TS)
    imgs = _images(rng, 2, (40, 60))
    rep.add_thumbnails([imgs[0], None, imgs[1]], ["#1 · score 0.9", "#2 <b>", "#3"],
                       ["a/<script>x</script>.png", "b/c.png\n(unreadable)", "d & e.png"], size=30)
    text = rep.to_html()
    assert _thumbs(text) == [["#1 · score 0.9", "a/&lt;script&gt;x&lt;/script&gt;.png"],
                             ["#2 &lt;b&gt;", "b/c.png", "(unreadable)"], ["#3", "d &amp; e.png"]]
    assert "<script>" not in text and len(_srcs(text)) == 2
    assert [_png_size(base64.b64decode(s.split(",", 1)[1])) for s in _srcs(text)] == [(30, 20)] * 2
    assert '<div class="thumbs">' in text and ".thumbs { display: grid;" in text
    with pytest.raises(InputError, match="add_thumbnails: got 1 titles for 2 images"):
        rep.add_thumbnails(imgs, ["one"])
    with pytest.raises(ImageError, match="add_thumbnails: image 0"):
        rep.add_thumbnails([np.zeros((2, 3, 4))], ["x"])
    assert 'class="empty">(no images)' in Report("e").add_thumbnails([], []).to_html()


# -- build_score_report / CLI ----------------------------------------------------
@pytest.fixture
def score_folder(tmp_path, rng):
    """Two sweeps of 3 PNG frames, a scores CSV and a pairs CSV."""
    from PIL import Image

    rows = ["path,score,frame,true_quality"]
    for sweep, base in (("s1", 0.2), ("s2", 0.5)):
        (tmp_path / sweep).mkdir()
        for frame in range(3):
            arr = (rng.random((20, 28)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / sweep / f"f{frame}.png")
            score = base + 0.1 * (frame if frame != 2 else 0.5)  # frame 1 is the best of each sweep
            rows.append(f"{sweep}/f{frame}.png,{score},{frame},{score * 2}")
    (tmp_path / "scores.csv").write_text("\n".join(rows) + "\n")
    # 3 of 4 pairs are ordered like the scores
    (tmp_path / "pairs.csv").write_text(
        "better,worse,type\n"
        "s2/f1.png,s1/f1.png,inter\n"
        "s2/f0.png,s1/f2.png,inter\n"
        "s1/f1.png,s1/f0.png,intra\n"
        "s1/f0.png,s1/f1.png,intra\n"
    )
    return tmp_path


def test_build_score_report(score_folder):
    from crl_uiqa.report_scores import build_score_report

    out = build_score_report(score_folder / "scores.csv", score_folder / "out" / "report.html",
                             pairs_csv=score_folder / "pairs.csv", top=2, timestamp=TS)
    text = out.read_text(encoding="utf-8")
    for heading in ["Summary", "Pairwise accuracy", "Best and worst images", "Quality along each sweep",
                    "Score against true quality"]:
        assert f">{heading}</h2>" in text
    srcs = _srcs(text)
    # the histogram, one curve per sweep, the scatter; the 2 best and 2 worst images as thumbnails
    assert len(srcs) == 8 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert _thumbs(text) == [["#1 · score 0.600", "s2/f1.png", "true quality 1.200"],
                             ["#2 · score 0.550", "s2/f2.png", "true quality 1.100"],
                             ["#5 · score 0.250", "s1/f2.png", "true quality 0.500"],
                             ["#6 · score 0.200", "s1/f0.png", "true quality 0.400"]]
    assert "http://" not in text and "https://" not in text
    assert "4 of 4 pairs have both images scored." in text
    assert re.search(r"<td>all</td><td class=\"num\">0\.750</td><td class=\"num\">4</td>", text)
    assert re.search(r"<td>intra</td><td class=\"num\">0\.500</td><td class=\"num\">2</td>", text)
    assert re.search(r"<td>inter</td><td class=\"num\">1\.000</td><td class=\"num\">2</td>", text)
    # the best frame of each sweep is frame 1
    assert "<td>s1/f1.png</td>" in text and "s2: best frame s2/f1.png" in text
    assert "Spearman rho (score vs true_quality)</th><td class=\"num\">1</td>" in text


def test_report_command(score_folder, capsys):
    from crl_uiqa.cli import main

    out = score_folder / "r.html"
    rc = main(["report", "--scores", str(score_folder / "scores.csv"), "--group-by", "none",
               "--top", "3", "--out", str(out)])
    assert rc == 0 and out.is_file()
    assert "report written to" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert len(_srcs(text)) == 9  # the histogram, all 6 images as thumbnails, one curve, the scatter
    assert [t[0].split(" · ")[0] for t in _thumbs(text)] == [f"#{i}" for i in range(1, 7)]
    assert ">All 6 scored images, best first</h3>" in text
    assert "Pairwise accuracy" not in text
    bad = score_folder / "bad.csv"
    bad.write_text("file,quality\na.png,1\n")
    rc = main(["report", "--scores", str(bad), "--out", str(score_folder / "x.html")])
    assert rc == 1
    assert "missing column(s) path, score" in capsys.readouterr().err
    rc = main(["report", "--scores", str(score_folder / "scores.csv"), "--group-by", "nope",
               "--out", str(score_folder / "x.html")])
    assert rc == 1 and "no such column" in capsys.readouterr().err


def test_build_score_report_unreadable_image(score_folder):
    from crl_uiqa.report_scores import build_score_report

    csv = score_folder / "scores.csv"
    csv.write_text(csv.read_text() + "s1/missing.png,0.95,3,1.9\n")
    out = build_score_report(csv, score_folder / "r.html", top=2, group_by="folder", timestamp=TS)
    text = out.read_text(encoding="utf-8")
    # the best-scored image cannot be read: listed, and its place among the thumbnails says so
    assert ">Unreadable images</h2>" in text and "<td>s1/missing.png</td>" in text
    assert _thumbs(text)[0] == ["#1 · score 0.950", "s1/missing.png", "true quality 1.900", "(unreadable)"]
    assert text.count('class="noimg"') == 1
    assert "file not found" in text
    assert "<th>highest score (best image)</th><td>0.950  s1/missing.png</td>" in text


def test_build_score_report_matches_pairs_by_file(score_folder):
    from crl_uiqa.report_scores import build_score_report

    other = score_folder / "elsewhere"
    other.mkdir()
    a, b = score_folder / "s2" / "f1.png", score_folder / "s1" / "f0.png"
    (other / "pairs.csv").write_text(
        f"better,worse\n{a},{b}\n{b},{a}\n{a},{score_folder / 'nope.png'}\n../s1/f1.png,../s1/f0.png\n"
    )
    out = build_score_report(score_folder / "scores.csv", score_folder / "r.html",
                             pairs_csv=other / "pairs.csv", timestamp=TS)
    text = out.read_text(encoding="utf-8")
    # absolute paths and paths relative to the pairs file both match the scores' files
    assert "3 of 4 pairs have both images scored; left out: 1 name an image missing" in text
    assert re.search(r"<td>all</td><td class=\"num\">0\.667</td><td class=\"num\">3</td>", text)


def test_score_then_report_and_evaluate_find_the_images(tmp_path, monkeypatch, capsys):
    """`score --out results/scores.csv` writes paths relative to the current folder; `report` and `evaluate`
    read them back the same way (report used to look for them beside the CSV: "none of the images could be read")."""
    import torch
    from PIL import Image

    from crl_uiqa.cli import main
    from crl_uiqa.model import ModelConfig, build_model
    from crl_uiqa.training import save_model

    monkeypatch.chdir(tmp_path)
    Path("imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((40, 52)) * 60 * (i + 1)).astype(np.uint8)).save(f"imgs/{i}.png")
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(image_size=(32, 48)), pretrained=False), Path("run"))
    assert main(["score", "--model", "run", "--images", "imgs", "--out", "results/scores.csv", "--device", "cpu",
                 "--workers", "0"]) == 0
    Path("results/pairs.csv").write_text("better,worse\n../imgs/3.png,../imgs/0.png\n")
    assert main(["report", "--scores", "results/scores.csv", "--out", "results/report.html"]) == 0
    text = Path("results/report.html").read_text(encoding="utf-8")
    assert "could not be read" not in text and ">Unreadable images</h2>" not in text
    assert main(["evaluate", "--scores", "results/scores.csv", "--pairs", "results/pairs.csv"]) == 0
    capsys.readouterr()


def test_stills_get_no_sweep_curves_unless_asked(score_folder):
    from crl_uiqa.reporting.scores import build_score_report

    csv = score_folder / "stills.csv"
    csv.write_text("".join(line.rsplit(",", 2)[0] + "\n" for line in
                           (score_folder / "scores.csv").read_text().splitlines()))
    assert csv.read_text().startswith("path,score\n")
    text = build_score_report(csv, score_folder / "r.html", top=2, timestamp=TS).read_text(encoding="utf-8")
    assert ">Quality along each sweep</h2>" not in text and "unrelated stills" in text
    assert len(_srcs(text)) == 5 and len(_thumbs(text)) == 4  # the histogram, the 2 best and 2 worst images
    text = build_score_report(csv, score_folder / "r.html", top=2, timestamp=TS, curves=True).read_text()
    assert ">Quality along each sweep</h2>" in text and len(_srcs(text)) == 7  # and a curve per folder


def test_training_curves_all_nan_accuracy_warns_nothing():
    """A validation column that is NaN in every epoch (e.g. no validation pairs scored) draws quietly."""
    import warnings

    hist = [{"epoch": e, "loss": 1.0 / e, "val_srcc": float("nan")} for e in range(1, 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = F.training_curves(hist)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylim() == pytest.approx((0.35, 1.02))


def test_an_output_that_is_an_image_named_in_an_input_csv_is_refused(tmp_path, monkeypatch, capsys):
    """report --scores s.csv --out imgs/a.png replaced the image a.png (named in s.csv, embedded by the report) with
    the HTML; train --labels l.csv --out imgs/ wrote the run into the training images' folder."""
    from crl_uiqa.cli import main
    from crl_uiqa.io import write_gray_png

    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    for name in ("a", "b", "c"):
        write_gray_png(tmp_path / "imgs" / f"{name}.png", np.full((20, 24), 0.5))
    original = (tmp_path / "imgs" / "a.png").read_bytes()
    (tmp_path / "csv").mkdir()
    # relative to the CSV's own folder, as the readers take them when the current folder does not hold them
    (tmp_path / "csv" / "s.csv").write_text("path,score\n../imgs/a.png,0.5\n../imgs/b.png,0.1\n")
    (tmp_path / "csv" / "p.csv").write_text("better,worse\n../imgs/a.png,../imgs/c.png\n")
    for out, extra in (("imgs/a.png", []), ("imgs/c.png", ["--pairs", "csv/p.csv"])):
        assert main(["report", "--scores", "csv/s.csv", *extra, "--out", out]) == 1
        err = capsys.readouterr().err
        assert "is also an input (an image named in --" in err and err.count("\n") == 1
    assert (tmp_path / "imgs" / "a.png").read_bytes() == original
    (tmp_path / "l.csv").write_text("path,pseudo_label\nimgs/a.png,0.1\nimgs/b.png,0.9\n")
    assert main(["train", "--labels", "l.csv", "--out", "imgs", "--quiet"]) == 1
    assert "--out imgs holds an input (an image named in --labels l.csv:" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == ["a.png", "b.png", "c.png"]
    assert main(["report", "--scores", "csv/s.csv", "--out", "report.html"]) == 0  # a new file is fine


def test_names_with_dollar_signs_are_drawn_as_plain_text(tmp_path, capsys):
    # a scan or folder named `$\frac{a$` failed `report` and `select` (after all their scoring) with a mathtext
    # ParseSyntaxException; `scan_$x^2$` came out as a formula
    from PIL import Image

    from crl_uiqa.cli import main

    for title in (r"$\frac{a$: quality over time", "scan_$x^2$: quality"):
        fig = F.quality_curve([0.1, 0.3, 0.2], times=[0.0, 1.0, 2.0], best=1, title=title)
        assert F.fig_to_png(fig).startswith(PNG_SIGNATURE)
        shown = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text() == title]
        assert shown and not any(t.get_parse_math() for t in shown)
    folder = tmp_path / r"$\frac{a$"
    folder.mkdir()
    rows = ["path,score"]
    for i, level in enumerate((40, 200, 120)):
        Image.fromarray(np.full((24, 32), level, np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{folder / f'{i}.png'},{level / 255:.4f}")
    (tmp_path / "scores.csv").write_text("\n".join(rows) + "\n")
    rc = main(["report", "--scores", str(tmp_path / "scores.csv"), "--curves", "--out", str(tmp_path / "r.html")])
    assert rc == 0, capsys.readouterr().err
    assert r"$\frac{a$" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_report_links_stay_relative_and_escaped():
    from crl_uiqa.errors import InputError
    from crl_uiqa.reporting.html import Report

    rep = Report("t", timestamp=TS).add_links([("scan <1> & 2", "scan #2 (été)/report.html")])
    html = rep.add_note("**How to read** `x` <b>").to_html()
    assert '<a href="scan%20%232%20%28%C3%A9t%C3%A9%29/report.html">scan &lt;1&gt; &amp; 2</a>' in html
    assert '<div class="note"><p><strong>How to read</strong> <code>x</code> &lt;b&gt;</p></div>' in html
    for bad in ("https://example.org/x.html", "/etc/passwd", "javascript:alert(1)", "file:///x"):
        with pytest.raises(InputError, match="not a relative path"):
            Report("t").add_links([("x", bad)])


def test_names_in_scripts_the_font_lacks_put_no_warning_on_the_terminal(recwarn):
    from crl_uiqa.reporting.figures import fig_to_png, score_histogram

    png = fig_to_png(score_histogram([0.1, 0.5, 0.5, 0.9], title="胎儿 头部.png"))
    assert png[:8] == PNG_SIGNATURE
    assert not [w for w in recwarn if "missing from" in str(w.message)]
