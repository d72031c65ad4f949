"""Tests of the evaluation metrics (crl_uiqa.evaluation): pairwise accuracy T/(T+F), correlations, files."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from crl_uiqa.errors import ConfigError, InputError
from crl_uiqa.evaluation import (
    MAX_N_BOOT,
    bootstrap_ci,
    correlations,
    evaluate_files,
    format_result,
    pair_outcomes,
    pairwise_accuracy,
    read_pairs,
    read_scores,
)
from crl_uiqa.tables import read_score_table

SCORES = {"a": 0.9, "b": 0.5, "c": 0.1, "d": 0.5, "e": 0.7}
# 3 right (a>b, a>c, b>c), 1 wrong (c>e is claimed, e scores higher), 1 tie (b vs d)
PAIRS = [("a", "b", "noise"), ("a", "c", "noise"), ("b", "c", "noise"), ("c", "e", "blur"), ("b", "d", "blur")]


def test_pair_outcomes():
    np.testing.assert_array_equal(pair_outcomes([2, 1, 1], [1, 2, 1]), [1.0, 0.0, 0.5])


def test_pairwise_accuracy_by_hand():
    res = pairwise_accuracy(SCORES, PAIRS)
    assert res["overall"]["accuracy"] == pytest.approx((3 + 0.5) / 5)  # 0.7
    assert res["overall"]["n"] == 5 and res["n_missing"] == 0
    assert res["by_type"]["noise"]["accuracy"] == 1.0 and res["by_type"]["noise"]["n"] == 3
    assert res["by_type"]["blur"]["accuracy"] == pytest.approx((0 + 0.5) / 2)
    assert set(res["by_type"]) == {"blur", "noise"}


def test_pairs_without_type():
    res = pairwise_accuracy(SCORES, [(b, w) for b, w, _ in PAIRS])
    assert res["overall"]["accuracy"] == pytest.approx(0.7)
    assert res["by_type"] == {}


def test_constant_scorer_is_one_half():
    res = pairwise_accuracy({k: 1.0 for k in SCORES}, PAIRS)
    assert res["overall"]["accuracy"] == 0.5


def test_bootstrap_interval():
    res = pairwise_accuracy(SCORES, PAIRS, n_boot=500, seed=3)
    o = res["overall"]
    assert o["ci_low"] <= o["accuracy"] <= o["ci_high"]
    assert 0.0 <= o["ci_low"] < o["ci_high"] <= 1.0
    again = pairwise_accuracy(SCORES, PAIRS, n_boot=500, seed=3)
    assert again == res  # deterministic for a seed
    # all right: the interval collapses onto 1
    assert res["by_type"]["noise"]["ci_low"] == res["by_type"]["noise"]["ci_high"] == 1.0
    outcomes = np.r_[np.ones(60), np.zeros(40)]
    lo, hi = bootstrap_ci(outcomes, n_boot=2000, seed=0)
    # normal approximation: 0.6 +- 1.96 * sqrt(0.24 / 100) = [0.504, 0.696]
    assert lo == pytest.approx(0.504, abs=0.02) and hi == pytest.approx(0.696, abs=0.02)
    assert all(np.isnan(bootstrap_ci(np.array([]))))


def test_missing_scores_error_or_skip():
    pairs = PAIRS + [("a", "zzz", "noise"), ("yyy", "b", "blur")]
    with pytest.raises(ValueError, match="zzz"):
        pairwise_accuracy(SCORES, pairs)
    res = pairwise_accuracy(SCORES, pairs, missing="skip")
    assert res["n_missing"] == 2 and res["overall"]["n"] == 5
    assert res["overall"]["accuracy"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="none of the pairs"):
        pairwise_accuracy(SCORES, [("x", "y", None)], missing="skip")
    with pytest.raises(ValueError, match="no pairs"):
        pairwise_accuracy(SCORES, [])


def test_correlations_against_scipy():
    pred = [0.1, 0.4, 0.35, 0.8, 0.9, 0.2]
    target = [1, 3, 2, 4, 5, 6]
    c = correlations(pred, target)
    assert c["srcc"] == pytest.approx(stats.spearmanr(pred, target).statistic)
    assert c["plcc"] == pytest.approx(stats.pearsonr(pred, target).statistic)
    assert c["krcc"] == pytest.approx(stats.kendalltau(pred, target).statistic)
    assert c["n"] == 6
    # hand check: ranks of pred are 1,4,3,5,6,2 vs 1,3,2,4,5,6: sum d^2 = 0+1+1+1+1+16 = 20,
    # SRCC = 1 - 6*20 / (6*35) = 3/7
    assert c["srcc"] == pytest.approx(3 / 7)
    mono = correlations([1, 2, 3, 10], [0.1, 0.2, 0.3, 0.4])
    assert mono["srcc"] == pytest.approx(1.0) and mono["krcc"] == pytest.approx(1.0)
    assert correlations([1, 2, 3], [6, 4, 2])["plcc"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="at least 3"):
        correlations([1, 2], [1, 2])
    with pytest.raises(ValueError, match="equally long"):
        correlations([1, 2, 3], [1, 2, 3, 4])


def test_format_result():
    text = format_result(pairwise_accuracy(SCORES, PAIRS, n_boot=100))
    assert "0.700" in text and "noise" in text and "blur" in text


# --------------------------------------------------------------------------- files
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _pairs_csv(folder):
    rows = "".join(f"imgs/{b}.png,imgs/{w}.png,{t}\n" for b, w, t in PAIRS)
    return _write(folder / "pairs.csv", "better,worse,type\n" + rows)


def test_evaluate_files_absolute_scores_relative_pairs(tmp_path, monkeypatch):
    bench = tmp_path / "bench"
    pairs = _pairs_csv(bench)
    scores = _write(tmp_path / "out" / "scores.csv",
                    "path,score\n" + "".join(f"{bench / 'imgs' / k}.png,{v}\n" for k, v in SCORES.items()))
    monkeypatch.chdir(tmp_path / "out")  # the current folder plays no role
    res = evaluate_files(scores, pairs, n_boot=100)
    assert res["overall"]["accuracy"] == pytest.approx(0.7) and res["overall"]["n"] == 5


def test_evaluate_files_scores_relative_to_pairs_folder(tmp_path, monkeypatch):
    bench = tmp_path / "bench"
    pairs = _pairs_csv(bench)
    scores = _write(tmp_path / "out" / "scores.csv",
                    "path,score\n" + "".join(f"imgs/{k}.png,{v}\n" for k, v in SCORES.items()))
    monkeypatch.chdir(tmp_path)
    res = evaluate_files(scores, pairs, n_boot=100)
    assert res["overall"]["accuracy"] == pytest.approx(0.7)


def test_evaluate_files_root_and_unnormalised_paths(tmp_path):
    data = tmp_path / "data"
    pairs = _pairs_csv(tmp_path / "lists")
    scores = _write(tmp_path / "scores.csv",
                    "path,score\n" + "".join(f"{data}/x/../imgs/{k}.png,{v}\n" for k, v in SCORES.items()))
    res = evaluate_files(scores, pairs, root=data, n_boot=100)
    assert res["overall"]["accuracy"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="no score"):
        evaluate_files(scores, pairs, n_boot=100)  # wrong root: nothing matches


def test_evaluate_files_missing_skip_and_mos(tmp_path):
    bench = tmp_path / "bench"
    pairs = _write(bench / "pairs.csv", "better,worse\nimgs/a.png,imgs/b.png\nimgs/a.png,imgs/q.png\n")
    scores = _write(bench / "scores.csv", "path,score\n" + "".join(f"imgs/{k}.png,{v}\n" for k, v in SCORES.items()))
    mos = _write(bench / "mos.csv", "path,mos\n" + "".join(
        f"imgs/{k}.png,{m}\n" for k, m in zip("abcde", [5, 3, 1, 2, 4])))
    with pytest.raises(ValueError, match="q.png"):
        evaluate_files(scores, pairs)
    res = evaluate_files(scores, pairs, missing="skip", mos_csv=mos, n_boot=100)
    assert res["n_missing"] == 1 and res["overall"]["accuracy"] == 1.0
    s = [SCORES[k] for k in "abcde"]
    assert res["correlation"]["srcc"] == pytest.approx(stats.spearmanr(s, [5, 3, 1, 2, 4]).statistic)
    assert res["correlation"]["n"] == 5


def test_mos_rows_without_a_score_are_refused_or_counted_and_constant_mos_is_one_line(tmp_path):
    """A graded image with no score was dropped silently (the correlations then over a subset, n the only hint);
    constant MOS printed scipy's warnings and NaN correlations."""
    from crl_uiqa.evaluation import format_result

    bench = tmp_path / "bench"
    pairs = _write(bench / "pairs.csv", "better,worse\nimgs/a.png,imgs/b.png\n")
    scores = _write(bench / "scores.csv", "path,score\n" + "".join(f"imgs/{k}.png,{v}\n" for k, v in SCORES.items()))
    grades = "".join(f"imgs/{k}.png,{m}\n" for k, m in zip("abcde", [5, 3, 1, 2, 4]))
    mos = _write(bench / "mos.csv", "path,mos\n" + grades + "imgs/zz.png,1\n")
    with pytest.raises(InputError, match=r"no score for .*zz.png.* \(named in .*mos.csv, 1 of its 6 images unscored\)"):
        evaluate_files(scores, pairs, mos_csv=mos, n_boot=0)
    res = evaluate_files(scores, pairs, mos_csv=mos, n_boot=0, missing="skip")
    s = [SCORES[k] for k in "abcde"]
    assert res["correlation"]["srcc"] == pytest.approx(stats.spearmanr(s, [5, 3, 1, 2, 4]).statistic)
    assert res["correlation"]["n"] == 5 and res["correlation"]["n_missing"] == 1
    assert "(1 MOS images skipped: unscored)" in format_result(res)
    flat = _write(bench / "flat.csv", "path,mos\n" + "".join(f"imgs/{k}.png,3\n" for k in "abcde"))
    with pytest.raises(ValueError, match=r"correlations are undefined: the reference scores \(MOS\) of all 5 images"):
        evaluate_files(scores, pairs, mos_csv=flat, n_boot=0)


def test_read_scores_and_pairs_errors(tmp_path):
    bad = _write(tmp_path / "s.csv", "file,value\na,1\n")
    with pytest.raises(ValueError, match="path,score"):
        read_scores(bad)
    nonnum = _write(tmp_path / "n.csv", "path,score\na,high\n")
    with pytest.raises(ValueError, match="non-numeric score 'high' for a"):
        read_scores(nonnum)
    with pytest.raises(ValueError, match="better,worse"):
        read_pairs(_write(tmp_path / "p.csv", "x,y\n1,2\n"))
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "absent.csv")
    assert read_pairs(_write(tmp_path / "p2.csv", "better,worse,type\na,b,\n")) == [("a", "b", None)]


# --------------------------------------------------------------------------- bad tables (one line, file and row)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "", "1e400"])
def test_non_finite_scores_are_refused_naming_file_and_line(tmp_path, value):
    """A NaN score used to count silently as a lost pair; every reader of scores refuses it (and +-inf)."""
    pairs = _pairs_csv(tmp_path)
    rows = [f"imgs/{k}.png,{v}" for k, v in SCORES.items()]
    rows[2] = f"imgs/c.png,{value}"  # line 4
    scores = _write(tmp_path / "scores.csv", "path,score\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"scores.csv, line 4: .*score .* for imgs/c.png") as info:
        evaluate_files(scores, pairs)
    assert "\n" not in str(info.value)


def test_report_reads_empty_and_nan_scores_as_unscored_but_refuses_inf(tmp_path):
    """``allow_empty`` (the report, which shows unscored images): empty and NaN cells are "no score"."""
    ok = _write(tmp_path / "s.csv", "path,score\na.png,0.5\nb.png,\nc.png,nan\n")
    values = [r.value for r in read_score_table(ok, allow_empty=True)]
    assert values[0] == pytest.approx(0.5) and np.isnan(values[1]) and np.isnan(values[2])
    with pytest.raises(InputError, match="line 3: non-numeric score '' for b.png"):
        read_score_table(ok)  # the readers of evaluate, compare, train: a score for every row
    bad = _write(tmp_path / "i.csv", "path,score\na.png,0.5\nb.png,-inf\n")
    with pytest.raises(InputError, match="line 3: score '-inf' for b.png"):
        read_score_table(bad, allow_empty=True)


def test_a_path_listed_twice_with_different_scores_is_refused(tmp_path):
    pairs = _pairs_csv(tmp_path)
    body = "".join(f"imgs/{k}.png,{v}\n" for k, v in SCORES.items())
    dup = _write(tmp_path / "dup.csv", "path,score\n" + body + "./imgs/a.png,0.1\n")
    with pytest.raises(InputError, match=r"dup.csv, line 7: ./imgs/a.png is listed twice with different score values "
                                         r"\(0.9 on line 2, 0.1 here\)"):
        evaluate_files(dup, pairs)
    # the same score again (an image given twice to `score`; float32 noise within the tolerance) is kept
    same = _write(tmp_path / "same.csv", "path,score\n" + body + "imgs/a.png,0.9000000001\n")
    assert evaluate_files(same, pairs, n_boot=0)["overall"]["accuracy"] == pytest.approx(0.7)
    assert len(read_score_table(same)) == 6


@pytest.mark.parametrize("better, worse", [("imgs/a.png", "imgs/a.png"), ("imgs/a.png", "./imgs/x/../a.png")])
def test_a_pair_of_an_image_with_itself_is_refused(tmp_path, better, worse):
    """Such a pair could only tie (0.5); the reader names its line, pairwise_accuracy its index."""
    pairs = _write(tmp_path / "pairs.csv", f"better,worse\nimgs/a.png,imgs/b.png\n{better},{worse}\n")
    with pytest.raises(InputError, match=r"pairs.csv, line 3: better and worse are the same image"):
        read_pairs(pairs)
    with pytest.raises(InputError, match=r"pair 2: better and worse are the same image \(a\)"):
        pairwise_accuracy(SCORES, [("a", "b"), ("a", "a")])


def test_pairwise_accuracy_refuses_non_finite_scores_given_in_memory():
    with pytest.raises(InputError, match="the score of c is nan"):
        pairwise_accuracy({**SCORES, "c": float("nan")}, PAIRS)


def test_n_boot_zero_gives_no_interval_and_negative_is_refused():
    res = pairwise_accuracy(SCORES, PAIRS, n_boot=0)
    assert res["overall"]["accuracy"] == pytest.approx(0.7) and res["overall"]["n"] == 5
    assert np.isnan(res["overall"]["ci_low"]) and np.isnan(res["overall"]["ci_high"])
    text = format_result(res)
    assert "0.700  --" in text and "nan" not in text
    for bad in (-1, -5, 1.5, True, "100"):
        with pytest.raises(ConfigError, match="n_boot"):
            pairwise_accuracy(SCORES, PAIRS, n_boot=bad)
        with pytest.raises(ConfigError, match="n_boot"):
            bootstrap_ci(np.array([1.0, 0.0]), n_boot=bad)
    for huge in (10**20, 2**31 - 1):  # numpy's ValueError; then 2**31 - 1 resamples asked for 32 GiB
        with pytest.raises(ConfigError, match=f"n_boot .--n-boot; 0: no bootstrap interval. must be <= {MAX_N_BOOT}, got {huge}"):
            bootstrap_ci(np.array([1.0, 0.0]), n_boot=huge)


def test_the_bootstrap_is_drawn_in_blocks_as_one_draw():
    """Memory stays within a block of draws whatever n_boot x pairs, and the interval is that of one draw."""
    o = np.random.default_rng(1).integers(0, 2, 3001).astype(float)  # 3001 pairs: blocks of 698 resamples
    rng = np.random.default_rng(4)
    means = o[rng.integers(0, o.size, size=(2000, o.size))].mean(axis=1)
    assert bootstrap_ci(o, n_boot=2000, seed=4) == (np.quantile(means, 0.025), np.quantile(means, 0.975))
    import tracemalloc

    tracemalloc.start()
    try:
        bootstrap_ci(o[:1000], n_boot=50_000)  # drawn at once: 50_000 x 1000 indices and outcomes, 800 MB
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak


def test_a_csv_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    from crl_uiqa.io import read_manifest

    raw = tmp_path / "latin1.csv"
    raw.write_bytes("path,score\ncaf\xe9.png,0.5\n".encode("latin-1"))
    for reader in (read_scores, read_pairs, read_manifest):
        with pytest.raises(InputError, match=r"latin1.csv: not a UTF-8 text CSV \(.*0xe9\)") as info:
            reader(raw)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("scores_text, pairs_text, match", [
    ("path,score\nimgs/a.png,nan\nimgs/b.png,0.5\n", "better,worse\nimgs/a.png,imgs/b.png\n",
     "scores.csv, line 2: score 'nan' for imgs/a.png is not a finite number"),
    ("path,score\nimgs/a.png,0.1\nimgs/a.png,0.9\nimgs/b.png,0.5\n", "better,worse\nimgs/a.png,imgs/b.png\n",
     "scores.csv, line 3: imgs/a.png is listed twice"),
    ("path,score\nimgs/a.png,0.1\nimgs/b.png,0.5\n", "better,worse\nimgs/a.png,imgs/a.png\n",
     "pairs.csv, line 2: better and worse are the same image"),
    ("path,score\nimgs/a.png,0.1\nimgs/b.png,0.5\n", b"better,worse\n\xff\xfe\n",
     "pairs.csv: not a UTF-8 text CSV"),
])
def test_cli_evaluate_bad_tables_are_one_line_user_errors(tmp_path, capsys, scores_text, pairs_text, match):
    from crl_uiqa import errors
    from crl_uiqa.cli import main

    scores = _write(tmp_path / "scores.csv", scores_text)
    pairs = tmp_path / "pairs.csv"
    if isinstance(pairs_text, bytes):
        pairs.write_bytes(pairs_text)
    else:
        pairs.write_text(pairs_text)
    rc = main(["evaluate", "--scores", str(scores), "--pairs", str(pairs)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and len(err) == 1, err
    assert err[0].startswith("crl-uiqa evaluate: error: ") and match in err[0]


def test_pairwise_accuracy_inputs_of_other_kinds_or_clear_errors():
    """Path objects match string keys and any iterable of pairs works; a list of scores, a pair of one image or a
    score that is not a number are InputErrors (a CRLUIQAError), not IndexError/TypeError or a misleading
    'no score for'."""
    from pathlib import Path

    from crl_uiqa.errors import InputError

    scores = {"a.png": 0.9, Path("b.png"): 0.1, "c.png": 0.5}
    res = pairwise_accuracy(scores, ((Path("a.png"), "b.png"), ("c.png", "a.png")), n_boot=0)
    assert res["overall"]["n"] == 2 and res["overall"]["accuracy"] == pytest.approx(0.5)
    for bad_scores, pairs, match in (([0.9, 0.1], [("a.png", "b.png")], "dict"),
                                     (scores, [("a.png",)], "pair 1"),
                                     (scores, ["ab"], "pair 1"),
                                     ({"a.png": None, "b.png": 1.0}, [("a.png", "b.png")], "not a number"),
                                     (scores, [("a.png", "z.png")], "no score for 'z.png'"),
                                     (scores, [], "no pairs")):
        with pytest.raises(InputError, match=match):
            pairwise_accuracy(bad_scores, pairs, n_boot=0)
