"""Tests of the foundation commands of ``crl-uiqa`` (run in-process through crl_uiqa.cli.main)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from crl_uiqa.backbones import CLASS_NAMES
from crl_uiqa.classify import plane_index
from crl_uiqa.cli import main

torch.set_num_threads(1)

FOUNDATION = ("pseudo-label", "embed", "classify", "evaluate")
RUNTIME = ["--device", "cpu", "--workers", "0", "--quiet"]


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's --help and usage errors
        return int(exc.code or 0)


def test_top_level_help(capsys):
    assert _run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "crl-uiqa" in out
    for name in FOUNDATION:
        assert name in out


@pytest.mark.parametrize("command", FOUNDATION)
def test_command_help(capsys, command):
    assert _run([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"crl-uiqa {command}" in out and "--" in out


def test_no_command_prints_help(capsys):
    assert _run([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_usage_error_exit_code(capsys):
    assert _run(["evaluate"]) == 2  # required arguments missing
    assert "required" in capsys.readouterr().err


def _hc18(hc18_dir, n):
    return [str(p) for p in sorted((hc18_dir / "images").glob("*_HC.png"))[:n]]


def test_pseudo_label_writes_csv(hc18_dir, sononet16_path, tmp_path, capsys):
    images = _hc18(hc18_dir, 7)
    out = tmp_path / "pl.csv"
    rc = _run(["pseudo-label", "--images", *images[3:], "--references", *images[:3], "--out", str(out),
               "--k", "2", "--weights", str(sononet16_path), *RUNTIME])
    assert rc == 0
    assert "wrote 4 pseudo-labels" in capsys.readouterr().out
    with out.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["path", "distance", "score", "smoothed", "pseudo_label"]
        rows = list(reader)
    assert [r["path"] for r in rows] == images[3:]
    q = np.array([float(r["pseudo_label"]) for r in rows])
    assert ((q >= 0) & (q <= 1)).all() and q.min() == 0.0 and q.max() == 1.0
    d = np.array([float(r["distance"]) for r in rows])
    np.testing.assert_allclose([float(r["score"]) for r in rows], -d)
    assert q[np.argmin(d)] == 1.0 and q[np.argmax(d)] == 0.0


def test_pseudo_label_k_too_large(hc18_dir, tmp_path, capsys):
    images = _hc18(hc18_dir, 5)
    rc = _run(["pseudo-label", "--images", *images[3:], "--references", *images[:3], "--out",
               str(tmp_path / "pl.csv"), "--k", "99", *RUNTIME])
    assert rc == 1
    err = capsys.readouterr().err
    assert "k=99" in err and "n=3" in err and "Traceback" not in err
    assert not (tmp_path / "pl.csv").exists()


def test_pseudo_label_missing_weights_is_clear(hc18_dir, tmp_path, capsys):
    images = _hc18(hc18_dir, 4)
    rc = _run(["pseudo-label", "--images", *images, "--references", *images[:2], "--out", str(tmp_path / "pl.csv"),
               "--k", "1", "--weights", str(tmp_path / "nowhere.npz"), *RUNTIME])
    assert rc == 1
    assert "weights not found" in capsys.readouterr().err


def test_classify_prints_planes(examples_dir, sononet16_path, tmp_path, capsys):
    out = tmp_path / "planes.csv"
    rc = _run(["classify", "--images", str(examples_dir), "--crop", "115", "81", "620", "794",
               "--weights", str(sononet16_path), "--out", str(out), *RUNTIME])
    assert rc == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.endswith(".png")]
    assert len(lines) == 13
    for ln in lines:
        stem = ln.rsplit("/", 1)[-1].removesuffix(".png")
        assert ln.startswith(CLASS_NAMES[plane_index(stem)]), ln
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 13 and set(CLASS_NAMES) <= set(rows[0])


def test_embed_writes_npy(examples_dir, sononet16_path, tmp_path, capsys):
    out = tmp_path / "e.npy"
    rc = _run(["embed", "--images", str(examples_dir / "4CH.png"), str(examples_dir / "LIPS.png"), "--out", str(out),
               "--layer", "adaptation", "--weights", str(sononet16_path), *RUNTIME])
    assert rc == 0
    assert "2 x 64" in capsys.readouterr().out
    assert np.load(out).shape == (2, 64)
    assert out.with_suffix(".paths.txt").read_text().splitlines()[1].endswith("LIPS.png")


def test_embed_skips_unreadable(examples_dir, sononet16_path, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("no image")
    out = tmp_path / "e.safetensors"
    rc = _run(["embed", "--images", str(examples_dir / "4CH.png"), str(bad), "--out", str(out),
               "--weights", str(sononet16_path), *RUNTIME])
    assert rc == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable" in captured.err and str(bad) in captured.err
    assert (tmp_path / "e.safetensors.skipped.csv").exists()
    rc = _run(["embed", "--images", str(examples_dir / "4CH.png"), str(bad), "--out", str(out), "--strict",
               "--weights", str(sononet16_path), *RUNTIME])
    assert rc == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


def _eval_files(tmp_path):
    (tmp_path / "scores.csv").write_text("path,score\na.png,0.9\nb.png,0.5\nc.png,0.1\nd.png,0.5\ne.png,0.7\n")
    (tmp_path / "pairs.csv").write_text(
        "better,worse,type\na.png,b.png,noise\na.png,c.png,noise\nb.png,c.png,noise\nc.png,e.png,blur\n"
        "b.png,d.png,blur\n")
    return tmp_path / "scores.csv", tmp_path / "pairs.csv"


def test_evaluate_prints_accuracy(tmp_path, capsys):
    scores, pairs = _eval_files(tmp_path)
    assert _run(["evaluate", "--scores", str(scores), "--pairs", str(pairs)]) == 0
    out = capsys.readouterr().out
    first = next(ln for ln in out.splitlines() if ln.startswith("all"))
    assert "0.700" in first and " 5 " in first
    assert any(ln.startswith("blur") and "0.250" in ln for ln in out.splitlines())


def test_evaluate_json(tmp_path, capsys):
    scores, pairs = _eval_files(tmp_path)
    assert _run(["evaluate", "--scores", str(scores), "--pairs", str(pairs), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["overall"]["accuracy"] == pytest.approx(0.7)
    assert res["by_type"]["noise"]["accuracy"] == 1.0


def test_evaluate_missing_score(tmp_path, capsys):
    scores, pairs = _eval_files(tmp_path)
    with pairs.open("a") as fh:
        fh.write("a.png,zz.png,noise\n")
    assert _run(["evaluate", "--scores", str(scores), "--pairs", str(pairs)]) == 1
    assert "zz.png" in capsys.readouterr().err
    assert _run(["evaluate", "--scores", str(scores), "--pairs", str(pairs), "--skip-missing", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_missing"] == 1
