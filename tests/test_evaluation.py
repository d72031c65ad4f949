"""Tests of the evaluation metrics (crl_uiqa.evaluation): pairwise accuracy T/(T+F), correlations, files."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from crl_uiqa.evaluation import (
    bootstrap_ci,
    correlations,
    evaluate_files,
    format_result,
    pair_outcomes,
    pairwise_accuracy,
    read_pairs,
    read_scores,
)

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
