"""One image, many spellings: paths through symbolic links, ``..`` after a link and long names.

Found in a path trial (2026-12-02): scores and pairs naming one file through a linked folder and through its
real path did not match (evaluate refused, report showed 0 pairs with exit 0); scores of one folder were
evaluated against another folder's pairs of the same relative names; an output folder ``link/../x`` was
refused; a long non-ASCII scan name overflowed the 255-byte name limit.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crl_uiqa.cli import main
from crl_uiqa.errors import InputError
from crl_uiqa.evaluation import evaluate_files
from crl_uiqa.files import atomic_path, check_output_dir, safe_name
from crl_uiqa.tables import pair_keys, path_key, score_keys


def _images(folder: Path, n: int = 4) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = folder / f"f{i}.png"
        Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(p)
        out.append(p)
    return out


@pytest.fixture
def linked(tmp_path):
    """``real/imgs/f0..f3.png`` and ``link -> real``."""
    imgs = _images(tmp_path / "real" / "imgs")
    try:
        (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    except OSError:
        pytest.skip("no symbolic links on this file system")
    return tmp_path, imgs


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_keys_name_the_file_whatever_the_spelling(linked):
    root, imgs = linked
    real = imgs[0]
    via_link = root / "link" / "imgs" / real.name
    assert path_key(via_link) == path_key(real) == os.path.realpath(real)
    assert path_key(root / "link" / ".." / "real" / "imgs" / real.name) == path_key(real)
    assert path_key("imgs/f0.png", root / "link") == path_key(real)
    # one image under two spellings: the same score is one entry, different scores are refused
    assert score_keys({str(real): 0.5, str(via_link): 0.5}) == {path_key(real): 0.5}
    with pytest.raises(InputError, match="same image"):
        score_keys({str(real): 0.5, str(via_link): 0.7})
    # a pair whose two sides are one file can only tie: refused, however spelled
    with pytest.raises(InputError, match="same image"):
        pair_keys([(str(real), str(via_link))])


def test_evaluate_and_report_match_scores_and_pairs_through_a_link(linked, monkeypatch, capsys):
    root, imgs = linked
    monkeypatch.chdir(root)
    scores = _write(root / "scores.csv", "path,score\n" + "".join(f"link/imgs/{p.name},{i}\n"
                                                             for i, p in enumerate(imgs)))
    pairs = _write(root / "real" / "pairs.csv", "better,worse\nimgs/f3.png,imgs/f0.png\nimgs/f2.png,imgs/f1.png\n")
    res = evaluate_files(scores, pairs)
    assert res["overall"]["n"] == 2 and res["overall"]["accuracy"] == 1.0
    assert main(["report", "--scores", str(scores), "--pairs", str(pairs), "--out", str(root / "r.html")]) == 0
    html = (root / "r.html").read_text()
    assert "2 of 2 pairs have both images scored" in re.sub(r"<[^>]+>", "", html)


def test_scores_of_one_folder_never_rank_another_folders_pairs(tmp_path, monkeypatch, caplog):
    """Two data sets with the same relative names: the scores of ``a`` must not be read as scores of ``b``."""
    _images(tmp_path / "a" / "imgs")
    _images(tmp_path / "b" / "imgs")
    scores = _write(tmp_path / "a" / "scores.csv", "path,score\n" + "".join(f"imgs/f{i}.png,{i}\n" for i in range(4)))
    pairs = _write(tmp_path / "b" / "pairs.csv", "better,worse\nimgs/f3.png,imgs/f0.png\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="no score for"):
        evaluate_files(scores, pairs)
    with caplog.at_level("WARNING"):
        assert main(["report", "--scores", str(scores), "--pairs", str(pairs), "--out", str(tmp_path / "r.html")]) == 0
    text = re.sub(r"<[^>]+>", "", (tmp_path / "r.html").read_text())
    assert "0 of 1 pairs have both images scored" in text
    assert "1 of the 1 pairs" in caplog.text  # said on the console too, not only in the page
    # scores whose images are not on disk still fall back to the pairs' folder (a CSV that travelled alone)
    away = _write(tmp_path / "away.csv", "path,score\n" + "".join(f"imgs/f{i}.png,{i}\n" for i in range(4)))
    (tmp_path / "a" / "scores.csv").unlink()
    monkeypatch.chdir(tmp_path / "b")
    assert evaluate_files(away, pairs)["overall"]["n"] == 1


def test_outputs_through_link_dotdot_land_where_the_system_puts_them(linked, monkeypatch):
    root, _ = linked
    (root / "real" / "deep").mkdir()
    (root / "lt").symlink_to(root / "real" / "deep", target_is_directory=True)
    monkeypatch.chdir(root)
    out = check_output_dir("lt/../runs")  # the system's "lt/.." is real/, not root
    with atomic_path(out / "x.txt") as tmp:
        tmp.write_text("ok")
    assert (root / "real" / "runs" / "x.txt").read_text() == "ok"
    assert not (root / "runs").exists()
    assert not [p for p in (root / "real" / "runs").iterdir() if p.name != "x.txt"]  # no temporary left


def test_safe_name_counts_bytes_not_characters():
    long = "é" * 127  # 254 bytes: a legal name, too long once "-2" is added
    name = safe_name(long)
    assert len(name.encode("utf-8")) <= 200 and long.startswith(name) and len(name) == 100
    assert len((name + "-2").encode("utf-8")) <= 255
    assert safe_name("x" * 300) == "x" * 200


def test_tilde_after_equals_is_the_home_folder(linked, monkeypatch):
    """``--out=~/r.html``: the shell leaves the ``~`` alone after ``=``; the CLI expands it, as for ``--out ~/r.html``,
    instead of making a folder named ``~`` in the current one."""
    root, imgs = linked
    home = root / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(root)
    scores = _write(root / "scores.csv", "path,score\n" + "".join(f"real/imgs/{p.name},{i}\n"
                                                             for i, p in enumerate(imgs)))
    assert main(["report", "--scores=" + str(scores), "--out=~/r.html"]) == 0
    assert (home / "r.html").is_file() and not (root / "~").exists()


def test_a_reference_given_twice_counts_once(linked, caplog):
    """References: the same folder given as a link and as its target is one set of n planes (each of the k
    nearest is one plane, Eq. 1), so the pseudo-labels do not change; images to score keep their repeats."""
    from crl_uiqa.io import list_images, list_references
    from crl_uiqa.pseudo_labels import label_images

    root, imgs = linked
    real, link = str(root / "real" / "imgs"), str(root / "link" / "imgs")
    assert len(list_images([real, link])) == 8
    with caplog.at_level("WARNING"):
        refs = list_references([real, link])
    assert refs == list_images(real) and "4 of the 8 references" in caplog.text
    images = _images(root / "pool", 6)
    once = label_images(images, real, k=2, progress=False)
    twice = label_images(images, [real, link], k=2, progress=False)
    np.testing.assert_allclose(twice.labels.label, once.labels.label, rtol=0, atol=1e-6)


def test_a_linked_csv_reads_its_paths_from_the_real_files_folder(linked, monkeypatch):
    """Scores and pairs CSVs reached through a symbolic link to the file: both take their relative paths from
    the folder of the file itself (before, the pairs were read from the link's folder and the scores not)."""
    root, imgs = linked
    real = root / "real"
    _write(real / "scores.csv", "path,score\n" + "".join(f"imgs/{p.name},{i}\n" for i, p in enumerate(imgs)))
    _write(real / "pairs.csv", "better,worse\nimgs/f3.png,imgs/f0.png\n")
    (root / "links").mkdir()
    (root / "links" / "scores.csv").symlink_to(real / "scores.csv")
    (root / "links" / "pairs.csv").symlink_to(real / "pairs.csv")
    monkeypatch.chdir(root)
    res = evaluate_files(root / "links" / "scores.csv", root / "links" / "pairs.csv")
    assert res["overall"]["n"] == 1 and res["overall"]["accuracy"] == 1.0


def test_evaluate_scores_root_names_the_folder_score_ran_in(tmp_path, monkeypatch, capsys):
    """``score`` run in ``work`` writes paths relative to it into a CSV kept elsewhere: from a third folder,
    ``evaluate --scores-root work`` finds them (before, only the pairs' folder could be given)."""
    _images(tmp_path / "work" / "data")
    (tmp_path / "results").mkdir()
    (tmp_path / "other").mkdir()
    scores = _write(tmp_path / "results" / "scores.csv",
                    "path,score\n" + "".join(f"data/f{i}.png,{i}\n" for i in range(4)))
    pairs = _write(tmp_path / "work" / "data" / "pairs.csv", "better,worse\nf3.png,f0.png\nf1.png,f2.png\n")
    monkeypatch.chdir(tmp_path / "other")
    with pytest.raises(Exception, match="no score for"):
        evaluate_files(scores, pairs)
    res = evaluate_files(scores, pairs, scores_root=tmp_path / "work")
    assert res["overall"]["n"] == 2 and res["overall"]["accuracy"] == pytest.approx(0.5)
    assert main(["evaluate", "--scores", str(scores), "--pairs", str(pairs), "--scores-root", "../work",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"]["n"] == 2
    assert main(["evaluate", "--scores", str(scores), "--pairs", str(pairs), "--scores-root", "../nowhere"]) != 0
    err = capsys.readouterr().err
    assert "nowhere" in err and err.count("\n") == 1


def test_estimator_evaluate_reads_a_linked_pairs_csv_from_its_own_folder(tmp_path):
    """CRLUIQA.evaluate takes a pairs CSV's paths from the CSV's own folder, a link to it followed, as the
    evaluate command does (crl_uiqa.tables.csv_folder); before, from the link's folder."""
    import torch

    from crl_uiqa import CRLUIQA
    from crl_uiqa.model import ModelConfig, build_model, save_model

    _images(tmp_path / "data" / "imgs")
    pairs = _write(tmp_path / "data" / "pairs.csv", "better,worse\nimgs/f0.png,imgs/f1.png\n")
    (tmp_path / "elsewhere").mkdir()
    try:
        (tmp_path / "elsewhere" / "pairs.csv").symlink_to(pairs)
    except OSError:
        pytest.skip("no symbolic links on this file system")
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(image_size=(16, 16)), pretrained=False), tmp_path / "run")
    est = CRLUIQA.load(tmp_path / "run", device="cpu", num_workers=0, progress=False)
    direct = est.evaluate(pairs)
    assert direct["overall"]["n"] == 1
    assert est.evaluate(tmp_path / "elsewhere" / "pairs.csv")["overall"] == direct["overall"]
