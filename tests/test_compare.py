"""``compare``: the Table-2 run on a tiny synthetic set, its cache and its CLI."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from crl_uiqa.compare import compare_methods, format_table, method_slug


@pytest.fixture
def tiny(tmp_path):
    """4 clean/noisy image pairs (PNG, 48x64), the clean images as references, pairs.csv with two types."""
    from crl_uiqa.io import write_gray_png

    r = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    (tmp_path / "test").mkdir()
    rows = ["better,worse,type"]
    for i in range(4):
        clean = 0.5 + 0.4 * np.sin(x / (4 + i)) * np.cos(y / (5 + i))
        noisy = np.clip(clean + r.normal(0, 0.25, clean.shape), 0, 1)
        write_gray_png(tmp_path / "test" / f"clean{i}.png", clean)
        write_gray_png(tmp_path / "test" / f"noisy{i}.png", noisy)
        write_gray_png(tmp_path / "refs" / f"ref{i}.png", clean)
        rows.append(f"test/clean{i}.png,test/noisy{i}.png,{'gain' if i < 2 else 'noise'}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


CHEAP = {"mssim": {"size": None}}  # native 48x64: no resize


def test_compare_table_and_cache(tiny):
    out = tiny / "out"
    kw = dict(images=tiny / "test", references=tiny / "refs", out_dir=out, options=CHEAP, n_boot=100,
              progress=False, num_workers=0)
    rows = compare_methods(tiny / "pairs.csv", "mssim,crl-uiqa,sddfiqa*", **kw)
    by = {r["method"]: r for r in rows}
    assert [r["method"] for r in rows] == ["mssim", "crl-uiqa", "sddfiqa*"]
    m = by["mssim"]
    # noisy images are less similar to the clean references: every pair right
    assert m["status"] == "ok" and m["accuracy"] == 1.0 and m["n_pairs"] == 4
    assert m["acc_gain"] == 1.0 and m["acc_noise"] == 1.0 and m["n_gain"] == 2
    assert m["ci_low"] == 1.0 and m["ci_high"] == 1.0 and m["seconds"] >= 0 and not m["cached"]
    assert by["crl-uiqa"]["status"] == "skipped" and "--model" in by["crl-uiqa"]["note"]
    assert by["sddfiqa*"]["status"] == "skipped" and "--train-images" in by["sddfiqa*"]["note"]
    for name in ("compare.csv", "compare.md", "compare.json", "scores_mssim.csv", "scores_mssim.json"):
        assert (out / name).is_file(), name
    table = (out / "compare.md").read_text()
    assert "| mssim | 1.000 | [1.000, 1.000] | 1.000 | 1.000 | 4 |" in table
    assert "skipped: needs a trained model" in table
    saved = json.loads((out / "compare.json").read_text())
    assert saved["n_pairs"] == 4 and saved["n_images"] == 8 and len(saved["methods"]) == 3

    # a second call reuses the cached scores: the CSV is not rewritten
    cached = out / "scores_mssim.csv"
    before = cached.stat().st_mtime_ns
    again = compare_methods(tiny / "pairs.csv", ["mssim"], **kw)
    assert again[0]["cached"] and again[0]["accuracy"] == 1.0 and again[0]["seconds"] == m["seconds"]
    assert cached.stat().st_mtime_ns == before
    # a changed image (its mtime) or changed options invalidate the cache
    img = tiny / "test" / "noisy0.png"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    assert not compare_methods(tiny / "pairs.csv", ["mssim"], **kw)[0]["cached"]
    opts = {"mssim": {"size": None, "reduction": "max"}}
    assert not compare_methods(tiny / "pairs.csv", ["mssim"], **{**kw, "options": opts})[0]["cached"]
    assert not compare_methods(tiny / "pairs.csv", ["mssim"], **{**kw, "use_cache": False})[0]["cached"]


def test_failures_and_skips_are_rows_not_crashes(tiny):
    rows = compare_methods(tiny / "pairs.csv", ["mssim", "niqe-ref", "distance"], images=tiny / "test",
                           options={"mssim": {"reduction": "median"}}, n_boot=10, progress=False, num_workers=0)
    by = {r["method"]: r for r in rows}
    assert by["mssim"]["status"] == "skipped" and "references" in by["mssim"]["note"]
    assert by["niqe-ref"]["status"] == "skipped"
    assert by["distance"]["status"] == "skipped"
    rows = compare_methods(tiny / "pairs.csv", ["mssim"], images=tiny / "test", references=tiny / "refs",
                           options={"mssim": {"reduction": "median"}}, n_boot=10, progress=False, num_workers=0)
    assert rows[0]["status"] == "failed" and "reduction" in rows[0]["note"]
    assert "failed: unknown reduction" in format_table(rows)
    # a missing weight file makes the SonoNet methods skip, with the reason
    rows = compare_methods(tiny / "pairs.csv", ["serfiq", "weighted"], images=tiny / "test",
                           weights=tiny / "nowhere.npz", n_boot=10, progress=False, num_workers=0)
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert "weights not found" in rows[0]["note"]


def test_pairs_without_images_argument_and_root(tiny):
    # no images= : the images named in the pairs are scored
    rows = compare_methods(tiny / "pairs.csv", ["mssim"], references=tiny / "refs", options=CHEAP, n_boot=10,
                           progress=False, num_workers=0)
    assert rows[0]["accuracy"] == 1.0
    # pair paths relative to the image folder are found there
    (tiny / "pairs2.csv").write_text("better,worse\nclean0.png,noisy0.png\n")
    rows = compare_methods(tiny / "pairs2.csv", ["mssim"], images=tiny / "test", references=tiny / "refs",
                           options=CHEAP, n_boot=10, progress=False, num_workers=0)
    assert rows[0]["n_pairs"] == 1 and rows[0]["accuracy"] == 1.0


def test_input_errors(tiny):
    with pytest.raises(ValueError, match="unknown method 'bogus'"):
        compare_methods(tiny / "pairs.csv", "mssim,bogus")
    with pytest.raises(ValueError, match="options given for unknown method"):
        compare_methods(tiny / "pairs.csv", "mssim", options={"msim": {}})
    (tiny / "bad.csv").write_text("better,worse\ntest/clean0.png,test/missing.png\n")
    with pytest.raises(ValueError, match="missing.png is not among the --images"):
        compare_methods(tiny / "bad.csv", "mssim", images=tiny / "test")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        compare_methods(tiny / "bad.csv", "mssim")
    with pytest.raises(FileNotFoundError, match="no model at"):
        compare_methods(tiny / "pairs.csv", "crl-uiqa", model=tiny / "nowhere")
    (tiny / "test" / "broken.png").write_bytes(b"not a png")
    (tiny / "broken.csv").write_text("better,worse\ntest/clean0.png,test/broken.png\n")
    with pytest.raises(ValueError, match="broken.png"):  # unreadable test images stop the comparison
        compare_methods(tiny / "broken.csv", "mssim", references=tiny / "refs", progress=False, num_workers=0)


def test_cli(tiny, capsys):
    from crl_uiqa.cli import main
    from crl_uiqa.commands.compare import parse_method_options

    assert parse_method_options(["serfiq.passes=20", "mssim.size=null", "niqe-ref.patch-size=32"]) == {
        "serfiq": {"passes": 20}, "mssim": {"size": None}, "niqe-ref": {"patch_size": 32}}
    with pytest.raises(ValueError, match="METHOD.KEY=VALUE"):
        parse_method_options(["passes=20"])
    rc = main(["compare", "--pairs", str(tiny / "pairs.csv"), "--images", str(tiny / "test"), "--references",
               str(tiny / "refs"), "--methods", "mssim,crl-uiqa", "--option", "mssim.size=null", "--out",
               str(tiny / "cli"), "--n-boot", "10", "--quiet", "--workers", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| mssim | 1.000 |" in printed and "skipped" in printed
    assert (tiny / "cli" / "compare.md").is_file()
    assert main(["compare", "--pairs", str(tiny / "pairs.csv"), "--images", str(tiny / "test"), "--out",
                 str(tiny / "cli"), "--detections", "d.csv"]) == 1
    assert "--detections and --structure-weights go together" in capsys.readouterr().err
    # every method asked for skipped: nothing was measured, so the run is not a success (trial 8: exit 0)
    rc = main(["compare", "--pairs", str(tiny / "pairs.csv"), "--images", str(tiny / "test"), "--methods",
               "crl-uiqa", "--out", str(tiny / "cli"), "--n-boot", "10", "--quiet", "--workers", "0"])
    captured = capsys.readouterr()
    err = [ln for ln in captured.err.splitlines() if "error" in ln]
    assert rc == 1 and len(err) == 1 and "no method could be evaluated (crl-uiqa: skipped, needs a trained model" in err[0]
    assert "skipped: needs a trained model" in captured.out  # the table that says why is still printed and written


def test_method_slug():
    assert method_slug("sddfiqa*") == "sddfiqa_star"
    assert method_slug("niqe-ref") == "niqe-ref"


def test_n_boot_zero_means_no_interval_and_negative_is_refused_before_any_work(tiny, capsys):
    from crl_uiqa.cli import main
    from crl_uiqa.errors import ConfigError

    kw = dict(images=tiny / "test", references=tiny / "refs", options=CHEAP, progress=False, num_workers=0)
    rows = compare_methods(tiny / "pairs.csv", ["mssim"], n_boot=0, **kw)
    assert rows[0]["accuracy"] == 1.0 and rows[0]["n_pairs"] == 4
    assert rows[0]["ci_low"] is None and rows[0]["ci_high"] is None
    assert "| mssim | 1.000 |  | 1.000 | 1.000 | 4 |" in format_table(rows)
    for bad in (-5, -1, 2.5, True):
        with pytest.raises(ConfigError, match="n_boot"):
            compare_methods(tiny / "pairs.csv", ["mssim"], n_boot=bad, out_dir=tiny / "never", **kw)
    assert not (tiny / "never").exists()
    base = ["compare", "--pairs", str(tiny / "pairs.csv"), "--images", str(tiny / "test"), "--references",
            str(tiny / "refs"), "--methods", "mssim", "--option", "mssim.size=null", "--quiet", "--workers", "0"]
    assert main([*base, "--n-boot", "0", "--out", str(tiny / "nb0")]) == 0
    assert "| mssim | 1.000 |  |" in capsys.readouterr().out
    assert main([*base, "--n-boot", "-5", "--out", str(tiny / "nb-5")]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == ["crl-uiqa compare: error: n_boot (--n-boot; 0: no bootstrap interval) must be >= 0, got -5"]


def test_a_self_pair_stops_the_comparison(tiny):
    (tiny / "self.csv").write_text("better,worse\ntest/clean0.png,test/noisy0.png\ntest/clean1.png,test/clean1.png\n")
    with pytest.raises(ValueError, match="self.csv, line 3: better and worse are the same image"):
        compare_methods(tiny / "self.csv", "mssim", images=tiny / "test")


def test_user_text_in_markdown_tables_cannot_shift_columns_or_render_as_html():
    """A pair type 'a|b' split its header cell, so every later value stood under the wrong column of compare.md;
    '<img ...>' from a pairs CSV went into the Markdown as raw HTML."""
    from crl_uiqa import markdown

    rows = [{"method": "mssim", "status": "ok", "accuracy": 0.75, "ci_low": 0.5, "ci_high": 1.0,
             "acc_a|b": 0.5, "acc_<img src=x onerror=alert(1)>": 1.0, "n_pairs": 4, "seconds": 0.2,
             "note": "x | y"}]
    lines = format_table(rows).splitlines()
    # the header, separator and row have the same number of (unescaped) cell separators
    count = [len([c for i, c in enumerate(line) if c == "|" and line[i - 1] != "\\"]) for line in lines]
    assert count == [count[0]] * 3 and count[0] == 9
    assert lines[0] == "| method | accuracy | 95% CI | a\\|b | &lt;img src=x onerror=alert(1)&gt; | pairs | seconds | note |"
    assert lines[2] == "| mssim | 0.750 | [0.500, 1.000] | 0.500 | 1.000 | 4 | 0.2 | x \\| y |"
    assert markdown.cell("a&b\nc") == "a&amp;b c"


@pytest.mark.parametrize("which", ["detections", "structure-weights"])
def test_a_malformed_detector_file_is_refused_before_any_scoring(tiny, capsys, which):
    """--detections and --structure-weights are settings: a malformed one stops the run (exit 1, one line naming
    the file and line) before any method is scored; it was a "failed" weighted row, exit 0."""
    from crl_uiqa.cli import main

    good = {"detections": "path,structure,confidence\ntest/clean0.png,stomach,0.9\n",
            "structure-weights": "structure,weight\nstomach,1\n"}
    bad = {"detections": "path,structure,confidence\ntest/clean0.png,stomach,high\n",
           "structure-weights": "structure,weight\nstomach,-1\n"}
    files = {}
    for name in good:
        files[name] = tiny / f"{name}.csv"
        files[name].write_text(bad[name] if name == which else good[name])
    out = tiny / "cmp"
    rc = main(["compare", "--pairs", str(tiny / "pairs.csv"), "--images", str(tiny / "test"), "--references",
               str(tiny / "refs"), "--methods", "mssim,weighted", "--option", "mssim.size=null", "--out", str(out),
               "--detections", str(files["detections"]), "--structure-weights", str(files["structure-weights"]),
               "--n-boot", "10", "--quiet", "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{files[which]}, line 2" in err and len(err.strip().splitlines()) == 1
    assert not (out / "compare.csv").exists() and not list(out.glob("scores_*"))  # nothing was scored
