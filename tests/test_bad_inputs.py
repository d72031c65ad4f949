"""A bad-input corpus, generated here (no binary fixtures), through the library and the command line (issue 12).

Images: truncated, empty, random bytes, huge dimensions in the header, 1x1,
16-bit, odd modes, broken and looping symlinks. Tables: bad manifests and label
CSVs. Weights: random bytes, a foreign or damaged .npz. Scans: a garbage JPEG
DICOM. Outputs: --out a folder or under a file, disk full (patched writer and,
where the test may mount one, a real 64 KB tmpfs), stale side files, temporary
files of a killed writer, spreadsheet-looking file names. Property-based tests
(hypothesis) feed arbitrary bytes, text and values to the image decoder, the CSV
readers and the config parsers.
"""
from __future__ import annotations

import errno
import io
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from crl_uiqa import errors
from crl_uiqa.cli import main
from crl_uiqa.errors import ConfigError, CRLUIQAError, InputError, OutputError, WeightsError
from crl_uiqa.files import atomic_path, read_csv, write_csv, write_text
from crl_uiqa.io import MIN_IMAGE_SIDE, ImageReadError, iter_batches, list_images, read_gray, read_manifest

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------- corpus builders
def png_bytes(a: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR announces width x height (8-bit gray) followed by a tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def good(size=(40, 48), seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(0, 255, size)).astype(np.uint8)


@pytest.fixture
def corpus(tmp_path) -> dict[str, Path]:
    d = tmp_path / "corpus"
    d.mkdir()
    ok = png_bytes(good())
    files = {
        "good.png": ok,
        "good2.png": png_bytes(good(seed=1)),
        "truncated.png": ok[: len(ok) // 2],
        "empty.png": b"",
        "random.png": np.random.default_rng(0).bytes(3000),
        "text.jpg": b"this is not an image\n",
        "huge.png": png_header_only(20000, 20000),
        "tiny.png": png_bytes(np.full((1, 1), 128, np.uint8)),
        "sixteen.png": png_bytes(np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    buf = io.BytesIO()
    Image.new("CMYK", (40, 48)).save(buf, format="JPEG")
    (d / "cmyk.jpg").write_bytes(buf.getvalue())
    Image.fromarray(np.full((40, 48), 0.5, np.float32)).save(d / "float.tif")
    os.symlink(d / "loop_a.png", d / "loop_b.png")
    os.symlink(d / "loop_b.png", d / "loop_a.png")
    os.symlink(d / "gone.png", d / "dangling.png")
    return {p.name: p for p in d.iterdir()}


EXPECTED_REASON = {
    "truncated.png": "cannot decode", "empty.png": "empty file", "random.png": "not a readable image",
    "text.jpg": "not a readable image", "huge.png": "image too large: 400.0 megapixels", "cmyk.jpg": "unsupported image mode",
    "float.tif": "32-bit float", "loop_a.png": "symbolic link loop", "loop_b.png": "symbolic link loop",
    "dangling.png": "broken symbolic link",
}


# ----------------------------------------------------------------------------- images
def test_each_bad_image_gives_its_reason(corpus):
    for name, reason in EXPECTED_REASON.items():
        with pytest.raises(ImageReadError, match=reason) as ei:
            read_gray(corpus[name])
        assert ei.value.path == str(corpus[name])
    a = read_gray(corpus["sixteen.png"])
    assert a.dtype == np.float32 and a.max() == pytest.approx((40 * 48 - 1) * 30 / 65535)


def test_folder_listing_keeps_looping_and_broken_links(corpus):
    listed = {Path(p).name for p in list_images(corpus["good.png"].parent)}
    assert {"loop_a.png", "loop_b.png", "dangling.png", "huge.png"} <= listed


def test_batches_skip_and_list_every_bad_image(corpus):
    paths = sorted(str(p) for p in corpus.values())
    failures: list = []
    kept = []
    for b in iter_batches(paths, size=(32, 32), batch_size=4, num_workers=0, failures=failures):
        kept += [paths[i] for i in b.indices]
    assert sorted(Path(p).name for p in kept) == ["good.png", "good2.png", "sixteen.png"]
    reasons = {Path(f.path).name: f.reason for f in failures}
    for name, reason in EXPECTED_REASON.items():
        assert reason in reasons[name], (name, reasons[name])
    assert f"below the minimum of {MIN_IMAGE_SIDE}" in reasons["tiny.png"]


def test_huge_image_is_refused_before_decoding_even_above_pils_own_limit(corpus, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    monkeypatch.setenv("CRL_UIQA_MAX_PIXELS", str(2 * 10**8))  # above PIL's own limit: ours applies, from the header
    with pytest.raises(ImageReadError, match="image too large: 20000x20000 = 400.0 megapixels, above the limit of 200"):
        read_gray(corpus["huge.png"])
    monkeypatch.setenv("CRL_UIQA_MAX_PIXELS", "100")  # 40 x 48 is above a limit of 100 pixels
    with pytest.raises(ImageReadError, match="above the limit of 0.0001"):
        read_gray(corpus["good.png"])
    monkeypatch.setenv("CRL_UIQA_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="max-pixels"):
        list(iter_batches([str(corpus["good.png"])], num_workers=0))


def test_score_skips_and_lists_bad_images_and_a_clean_rerun_drops_the_list(corpus, tmp_path, capsys):
    from crl_uiqa.model import ModelConfig, build_model, save_model

    save_model(build_model(ModelConfig(image_size=(32, 40)), pretrained=False), tmp_path / "m")
    out = tmp_path / "s.csv"
    rc = main(["--max-pixels", "1000000", "score", "--model", str(tmp_path / "m"), "--images",
               str(corpus["good.png"].parent), "--out", str(out), "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err and "image too large" in err
    skipped = (tmp_path / "s.csv.skipped.csv").read_text()
    for name in EXPECTED_REASON:
        assert name in skipped
    assert len(out.read_text().splitlines()) == 4  # header + the three good images
    rc = main(["score", "--model", str(tmp_path / "m"), "--images", str(corpus["good.png"]), "--out", str(out),
               "--workers", "0", "--quiet"])
    assert rc == 0 and not (tmp_path / "s.csv.skipped.csv").exists()  # no stale list from the earlier run


def test_the_skipped_list_reruns_the_same_files_from_another_folder(corpus, tmp_path, monkeypatch, capsys):
    """OUT.skipped.csv is a path list for --images, whose relative paths are read from the list's folder: images
    given relative to the working folder were listed as given, so rerunning the list (after fixing the files)
    found none of them (the fault trial). They are now listed relative to the list's folder."""
    import shutil

    from crl_uiqa.model import ModelConfig, build_model, save_model

    save_model(build_model(ModelConfig(image_size=(32, 40)), pretrained=False), tmp_path / "m")
    (tmp_path / "imgs").mkdir()
    for name in ("good.png", "truncated.png"):
        shutil.copy(corpus[name], tmp_path / "imgs" / name)
    monkeypatch.chdir(tmp_path)
    rc = main(["score", "--model", "m", "--images", "imgs", "--out", "out/s.csv", "--workers", "0", "--quiet"])
    assert rc == 0 and "cannot decode" in capsys.readouterr().err
    listed = read_csv(tmp_path / "out" / "s.csv.skipped.csv")
    assert [r["path"] for r in listed] == [os.path.join("..", "imgs", "truncated.png")]
    shutil.copy(corpus["good2.png"], tmp_path / "imgs" / "truncated.png")  # the user fixes the file
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rc = main(["score", "--model", "../m", "--images", str(tmp_path / "out" / "s.csv.skipped.csv"), "--out", "t.csv",
               "--workers", "0", "--quiet"])
    rows = read_csv(tmp_path / "elsewhere" / "t.csv")
    assert rc == 0 and len(rows) == 1 and Path(rows[0]["path"]).resolve() == (tmp_path / "imgs" / "truncated.png")


def test_train_skips_and_lists_bad_images_in_the_run_folder(corpus, tmp_path, capsys, sononet16_path):
    names = ["good.png", "good2.png", "sixteen.png", "huge.png", "tiny.png", "truncated.png"]
    labels = tmp_path / "labels.csv"
    write_csv(labels, [{"path": str(corpus[n]), "pseudo_label": i / 5} for i, n in enumerate(names)],
              ["path", "pseudo_label"])
    run = tmp_path / "run"
    rc = main(["train", "--labels", str(labels), "--out", str(run), "--epochs", "1", "--batch-size", "2",
               "--val-fraction", "0", "--image-size", "32", "40", "--weights", str(sononet16_path), "--workers", "0",
               "--quiet"])
    assert rc == 0 and "Traceback" not in capsys.readouterr().err
    skipped = (run / "skipped.csv").read_text()
    assert "huge.png" in skipped and "tiny.png" in skipped and "truncated.png" in skipped and "good" not in skipped


def test_a_1x1_image_does_not_move_the_other_pseudo_labels(tmp_path, sononet16_path):
    from crl_uiqa.pseudo_labels import label_images

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(6):
        Image.fromarray(good((64, 80), seed=i)).save(imgs / f"{i}.png")
    refs = sorted(str(p) for p in imgs.glob("*.png"))[:3]
    kw = dict(k=2, weights=sononet16_path, size=(48, 64), num_workers=0, progress=False)
    clean = label_images(str(imgs), refs, **kw)
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(imgs / "dot.png")
    with_dot = label_images(str(imgs), refs, **kw)
    assert with_dot.paths == clean.paths and [Path(f.path).name for f in with_dot.failures] == ["dot.png"]
    np.testing.assert_allclose(with_dot.labels.label, clean.labels.label, rtol=0, atol=1e-12)
    assert with_dot.labels.lmbda == pytest.approx(clean.labels.lmbda, rel=1e-9)


# ----------------------------------------------------------------------------- tables
@pytest.mark.parametrize("text, match", [
    ("", "empty"), ("\n\n,,\n", "empty"), ("path\n", "lists no image"),
])
def test_bad_manifests_are_clear(tmp_path, text, match):
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_manifest(m)


def test_a_manifest_row_without_its_path_cell_is_named(tmp_path):
    """A row shorter than the header's path column was an IndexError, exit 3 (trial 4)."""
    m = tmp_path / "m.csv"
    m.write_text("label,path\n3\n4,b.png\n")
    with pytest.raises(InputError, match=r"m.csv, line 2: no path in the path column"):
        read_manifest(m)


BROKEN_TABLES = {
    # the csv module's own error (a field above its 128 KiB limit) was an internal error, exit 3
    "huge-field": (b"path,score\na.png,1\nb.png,2," + b"x" * 200_000 + b"\n", "line 3: not a readable CSV (field larger"),
    # os.stat of a path holding NUL raised a bare ValueError in report (exit 3); score listed it as undecodable
    "nul": (b"path,score\na.png,1\nb\x00.png,2\n", "line 3: a NUL character"),
    # one of two columns of one name was used in silence: DictReader kept the last, the manifest the first
    "repeated-column": (b"path,score,score\na.png,1,5\nb.png,2,6\n", "names column 'score' more than once"),
}


@pytest.mark.parametrize("command", ["score", "report", "evaluate", "train"])
@pytest.mark.parametrize("kind", sorted(BROKEN_TABLES))
def test_a_broken_table_is_one_line_naming_file_and_line(tmp_path, capsys, command, kind):
    data, match = BROKEN_TABLES[kind]
    if command == "score" and kind == "repeated-column":
        data = data.replace(b"path,score,score", b"path,path,score")
        match = "names column 'path' more than once"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(data)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("better,worse\na.png,b.png\n")
    argv = {
        "score": ["score", "--model", str(_model(tmp_path)), "--images", str(bad), "--out", str(tmp_path / "s.csv")],
        "report": ["report", "--scores", str(bad), "--out", str(tmp_path / "r.html")],
        "evaluate": ["evaluate", "--scores", str(bad), "--pairs", str(pairs)],
        "train": ["train", "--labels", str(bad), "--out", str(tmp_path / "run"), "--workers", "0", "--quiet"],
    }[command]
    if command == "train":
        bad.write_bytes(data.replace(b",score", b",pseudo_label"))
        match = match.replace("'score'", "'pseudo_label'")
    rc = main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and len(err) == 1, err
    assert f"{bad}" in err[0] and match in err[0], err
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "r.html").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_folder_or_pipe_given_as_a_file_is_not_called_missing(tmp_path, capsys):
    """A folder given as --scores, a FIFO or device as --images, were "not found" though they exist (trial 4)."""
    from crl_uiqa.io import list_images

    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "s.csv").mkdir()
    with pytest.raises(InputError, match="pipe.png: not a regular file, folder, pattern or list"):
        list_images(str(tmp_path / "pipe.png"))
    with pytest.raises(InputError, match="s.csv: is a folder, a CSV file is expected"):
        read_csv(tmp_path / "s.csv")
    assert main(["report", "--scores", str(tmp_path / "s.csv"), "--out", str(tmp_path / "r.html")]) == 1
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert line.endswith("s.csv: is a folder, a CSV file is expected"), line


def test_a_path_list_holding_nul_is_refused(tmp_path):
    from crl_uiqa.io import read_path_list

    lst = tmp_path / "l.txt"
    lst.write_bytes(b"a.png\nb\x00.png\n")
    with pytest.raises(InputError, match=r"l.txt, line 2: a NUL character"):
        read_path_list(lst)


@pytest.mark.parametrize("text, match", [
    ("path,score\na.png,1\n", "path,pseudo_label"), ("path,pseudo_label\na.png,high\n", "non-numeric"),
    ("", "path,pseudo_label"), ("\xff\xfe\x00garbage", "path,pseudo_label|UTF-8|decode"),
])
def test_bad_label_csvs_are_one_line(tmp_path, capsys, text, match):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(text.encode("latin-1"))
    rc = main(["train", "--labels", str(labels), "--out", str(tmp_path / "run"), "--workers", "0", "--quiet"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and len(err) == 1, err


@pytest.mark.parametrize("command", ["score", "train", "evaluate-scores", "evaluate-pairs"])
def test_a_csv_that_is_not_utf8_is_named_in_one_line(tmp_path, capsys, command):
    """A latin-1 or binary CSV used to give a raw "'utf-8' codec can't decode byte 0xff ..." without the file."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfepath,score\n")
    ok_scores = tmp_path / "scores.csv"
    ok_scores.write_text("path,score\na.png,0.5\nb.png,0.1\n")
    ok_pairs = tmp_path / "pairs.csv"
    ok_pairs.write_text("better,worse\na.png,b.png\n")
    argv = {
        "score": ["score", "--model", str(_model(tmp_path)), "--images", str(bad), "--out", str(tmp_path / "s.csv")],
        "train": ["train", "--labels", str(bad), "--out", str(tmp_path / "run"), "--workers", "0", "--quiet"],
        "evaluate-scores": ["evaluate", "--scores", str(bad), "--pairs", str(ok_pairs)],
        "evaluate-pairs": ["evaluate", "--scores", str(ok_scores), "--pairs", str(bad)],
    }[command]
    rc = main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and len(err) == 1, err
    assert f"{bad}: not a UTF-8 text CSV" in err[0] and "0xff" in err[0], err


def test_paths_that_look_like_formulas_are_kept_exactly(tmp_path):
    """The documented choice: path strings are never altered (programs join on them)."""
    rows = [{"path": p, "score": 0.5} for p in ("=cmd|'/c calc'!A1", "+1.png", "-x.png", "@sum.png")]
    write_csv(tmp_path / "s.csv", rows, ["path", "score"])
    import csv

    with open(tmp_path / "s.csv", newline="") as fh:
        assert [r["path"] for r in csv.DictReader(fh)] == [r["path"] for r in rows]


# ----------------------------------------------------------------------------- weights
def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("kind, match", [
    ("random", "not a .npz weight file"), ("foreign", "not SonoNet-family weights"), ("objects", "Python objects"),
    ("truncated", "not a .npz|damaged"), ("shapes", "layer 0 has shape"),
])
def test_bad_weights_files_are_clear_and_never_suggest_pickle(tmp_path, capsys, kind, match):
    w = tmp_path / "w.npz"
    if kind == "random":
        w.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "foreign":
        _npz(w, conv1_weight=np.zeros(3), features=np.zeros(2))
    elif kind == "objects":
        np.savez(w, arr_0=np.array([{"a": 1}], dtype=object))
    elif kind == "truncated":
        _npz(w, **{f"arr_{i}": np.zeros(100) for i in range(3)})
        w.write_bytes(w.read_bytes()[:300])
    else:
        _npz(w, **{f"arr_{i}": np.zeros(2, np.float32) for i in range(75)})
    from crl_uiqa.backbones import get_backbone

    with pytest.raises(WeightsError, match=match):
        get_backbone("sononet16", w)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(good(seed=i)).save(imgs / f"{i}.png")
    rc = main(["pseudo-label", "--images", str(imgs), "--references", str(imgs), "--k", "1", "--weights", str(w),
               "--out", str(tmp_path / "pl.csv"), "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_USER and err.count("\n") == 1 and "pickle" not in err and str(w) in err


# ----------------------------------------------------------------------------- scans
def test_garbage_jpeg_dicom_is_one_error_without_pydicom_traceback(tmp_path, caplog):
    pytest.importorskip("pydicom")
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from _helpers import us_dicom_dataset
    from crl_uiqa.video.scan import ScanReadError, open_scan

    ds = us_dicom_dataset(JPEGBaseline8Bit, 32, 40, 2)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    rng = np.random.default_rng(0)
    ds.PixelData = encapsulate([b"\xff\xd8" + rng.bytes(200), b"\xff\xd8" + rng.bytes(200)])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "garbage.dcm", enforce_file_format=True)
    caplog.set_level("DEBUG")
    with pytest.raises(ScanReadError, match="damaged or truncated pixel data"):
        list(open_scan(tmp_path / "garbage.dcm").sample_frames())
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


# ----------------------------------------------------------------------------- plug-in backbones
def test_a_failing_backbone_plugin_is_the_users_error_naming_the_plugin(tmp_path, capsys, corpus):
    """A plug-in the user named that raises (or returns no module) is a one-line user error, not a crl-uiqa bug."""
    from crl_uiqa.backbones import get_backbone

    with pytest.raises(ConfigError, match=r"^backbone plugin python:os:getcwd failed: TypeError: .*keyword"):
        get_backbone("python:os:getcwd")
    with pytest.raises(ConfigError, match=r"backbone plugin python:builtins:dict returned dict, not a torch.nn.Module"):
        get_backbone("python:builtins:dict")
    with pytest.raises(ConfigError, match="cannot import backbone builder 'python:os:no_such_function'"):
        get_backbone("python:os:no_such_function")
    rc = main(["embed", "--backbone", "python:os:getcwd", "--images", str(corpus["good.png"]), "--out",
               str(tmp_path / "e.npy"), "--quiet", "--workers", "0"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and len(err) == 1, err
    assert err[0].startswith("crl-uiqa embed: error: backbone plugin python:os:getcwd failed: TypeError:"), err


# ----------------------------------------------------------------------------- outputs
def _model(tmp_path) -> Path:
    from crl_uiqa.model import ModelConfig, build_model, save_model

    save_model(build_model(ModelConfig(image_size=(32, 40)), pretrained=False), tmp_path / "m")
    return tmp_path / "m"


@pytest.mark.parametrize("where, match", [("dir", "is a folder, a file name is expected"),
                                          ("under-file", "is a file, not a folder")])
def test_bad_out_is_refused_before_any_work(tmp_path, capsys, corpus, where, match):
    (tmp_path / "plain.txt").write_text("keep me")
    out = {"dir": tmp_path, "under-file": tmp_path / "plain.txt" / "s.csv"}[where]
    rc = main(["score", "--model", str(tmp_path / "no-model"), "--images", str(corpus["good.png"]), "--out", str(out)])
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and match in line and str(out) in line and "no-model" not in line
    assert (tmp_path / "plain.txt").read_text() == "keep me"


@pytest.mark.parametrize("argv, match", [
    # every image was decoded, each skipped as too small, then "none of the N images could be read" (trial 4)
    (["score", "--crop", "0", "0", "3", "3"], "--crop: crop box (top, left, height, width)=(0, 0, 3, 3) is 3x3 pixels, "
                                               "below the model pipeline's minimum of 4 per side"),
    # the layer was refused by the first forward pass, after a batch was decoded (trial 4)
    (["embed", "--backbone", "smallnet", "--layer", "block5"], "layer (--layer) 'block5' is not a layer of SmallNet"),
])
def test_a_setting_that_makes_every_image_unusable_is_refused_before_reading_any(tmp_path, capsys, corpus, argv,
                                                                                 match, monkeypatch):
    from crl_uiqa import io as crl_io

    def no_reading(*args, **kwargs):
        raise AssertionError("an image was read before the setting was checked")

    monkeypatch.setattr(crl_io, "read_gray", no_reading)
    extra = ["--model", str(_model(tmp_path))] if argv[0] == "score" else []
    rc = main([*argv, *extra, "--images", str(corpus["good.png"]), "--out", str(tmp_path / "o.npy"), "--workers", "0",
               "--quiet"])
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and match in line, line


def test_an_embeddings_out_of_another_kind_is_refused_before_any_work(tmp_path, capsys, corpus, monkeypatch):
    """`embed --out e.txt` embedded every image, then refused the suffix when saving (trial 4)."""
    from crl_uiqa import embed

    def no_embedding(*args, **kwargs):
        raise AssertionError("images were embedded before --out was checked")

    monkeypatch.setattr(embed, "compute_embeddings", no_embedding)
    rc = main(["embed", "--images", str(corpus["good.png"]), "--out", str(tmp_path / "e.txt"), "--quiet"])
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and "embedding output must end in .npy or .safetensors" in line, line


def test_a_file_out_ending_in_a_slash_is_refused_before_any_work(tmp_path, capsys, corpus):
    """`--out scores/` wrote a file named scores, then failed on scores/.skipped.csv after the work (trial 4)."""
    out = f"{tmp_path / 'scores'}/"
    rc = main(["score", "--model", str(_model(tmp_path)), "--images", str(corpus["good.png"]), "--out", out])
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and f"{out}: ends in /, so names a folder; a file name is expected" in line
    assert not (tmp_path / "scores").exists()


def test_fit_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "run").write_text("x")
    rc = main(["fit", "--images", str(tmp_path), "--references", str(tmp_path), "--out", str(tmp_path / "run")])
    assert rc == errors.EXIT_USER and "is a file, a folder is expected" in capsys.readouterr().err


def test_disk_full_via_a_patched_writer_keeps_the_old_file(tmp_path, monkeypatch, corpus, capsys):
    out = tmp_path / "s.csv"
    out.write_text("path,score\nold.png,0.5\n")
    real = Path.write_bytes

    def full(self, data):
        real(self, data[: len(data) // 2])  # some bytes went out before the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    model = _model(tmp_path)
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError, match="No space left on device"):
        write_text(out, "path,score\nnew.png,0.7\n")
    rc = main(["score", "--model", str(model), "--images", str(corpus["good.png"]), "--out", str(out),
               "--workers", "0", "--quiet"])
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and str(out) in line and "No space left on device" in line
    monkeypatch.setattr(Path, "write_bytes", real)
    assert out.read_text() == "path,score\nold.png,0.5\n"  # nothing half-written
    assert not list(tmp_path.glob(".s.csv*"))  # and no temporary left


def _mount_tmpfs(mnt: Path, options: str) -> None:
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                                            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KB tmpfs (needs root and mount; skipped elsewhere)."""
    _mount_tmpfs(tmp_path / "tiny", "size=64k")
    yield tmp_path / "tiny"
    subprocess.run(["umount", str(tmp_path / "tiny")], check=False)


@pytest.fixture
def read_only_disk(tmp_path):
    """A read-only tmpfs: not writable even for root (chmod would not stop root)."""
    _mount_tmpfs(tmp_path / "ro", "size=64k,ro")
    yield tmp_path / "ro"
    subprocess.run(["umount", str(tmp_path / "ro")], check=False)


def test_an_out_that_cannot_be_written_is_refused_before_any_work(read_only_disk, capsys, corpus):
    out = read_only_disk / "s.csv"
    rc = main(["score", "--model", "no-model", "--images", str(corpus["good.png"]), "--out", str(out)])
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and "cannot write into" in line and str(out) in line and "Read-only" in line
    rc = main(["fit", "--images", "x", "--references", "y", "--out", str(read_only_disk / "run")])
    assert rc == errors.EXIT_USER and "Read-only" in capsys.readouterr().err


def test_disk_full_on_a_real_small_disk(tiny_disk):
    target = tiny_disk / "big.csv"
    target.write_text("previous\n")
    with pytest.raises(OutputError, match=f"{target}.*No space left on device"):
        write_text(target, "x" * 200_000)
    assert target.read_text() == "previous\n"
    assert [p.name for p in tiny_disk.iterdir()] == ["big.csv"]


def test_a_killed_writers_temporary_is_removed_on_the_next_write(tmp_path):
    out = tmp_path / "s.csv"
    code = ("import os, signal, sys; from crl_uiqa.files import atomic_path\n"
            f"with atomic_path({str(out)!r}) as tmp:\n"
            "    tmp.write_text('half'); os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                          capture_output=True)
    assert proc.returncode == -9
    left = list(tmp_path.glob(".s.csv.crl-uiqa-*.tmp*"))
    assert len(left) == 1 and not out.exists()
    with atomic_path(out) as tmp:  # a live writer's temporary is kept while it writes
        tmp.write_text("ok")
        assert tmp.exists()
    assert out.read_text() == "ok" and not list(tmp_path.glob(".s.csv.*"))


def _disk_full_at(monkeypatch, name_part: str):
    """Make the operating system refuse (ENOSPC) writes of the temporaries whose name holds ``name_part``, after
    some bytes went out; the other writes go through."""
    real = Path.write_bytes

    def full(self, data):
        if name_part not in self.name:
            return real(self, data)
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_keeps_the_last_one(tmp_path, monkeypatch):
    # safetensors' own writer reported a full disk as a SafetensorError: fit, train and demo ended with exit 3
    # ("internal error ... SafetensorError: ... No space left on device (os error 28)"), fault trial 2026-12-03
    import torch

    from crl_uiqa.checkpoint import load_tensors, save_tensors

    path = tmp_path / "last.safetensors"
    save_tensors(path, {"w": torch.zeros(64)}, {"epoch": 0})
    _disk_full_at(monkeypatch, "last.safetensors")
    with pytest.raises(OutputError, match=f"{path}: cannot write last.safetensors: No space left on device"):
        save_tensors(path, {"w": torch.ones(64)}, {"epoch": 1})
    monkeypatch.undo()
    tensors, meta = load_tensors(path)
    assert meta["epoch"] == 0 and float(tensors["w"].sum()) == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


@pytest.mark.parametrize("fail_at", ["emb.npy", "emb.paths.txt", "emb.safetensors"])
def test_a_full_disk_while_writing_embeddings_keeps_the_previous_pair(tmp_path, monkeypatch, fail_at):
    # numpy's writer said "1536 requested and 992 written" (no cause, no errno) and safetensors' a SafetensorError
    # (exit 3); a full disk at the .paths.txt left the new vectors beside the previous run's paths
    from crl_uiqa.embed import Embeddings

    out = tmp_path / ("emb.safetensors" if fail_at.endswith("safetensors") else "emb.npy")
    Embeddings(["a.png", "b.png"], np.zeros((2, 3), np.float32), "block4").save(out)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    _disk_full_at(monkeypatch, fail_at)
    with pytest.raises(OutputError, match=f"{tmp_path / fail_at}: cannot write {fail_at}: No space left on device"):
        Embeddings(["c.png", "d.png", "e.png"], np.ones((3, 3), np.float32), "block4").save(out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # both files as they were, no temporary
    assert Embeddings.load(out).paths == ["a.png", "b.png"]


def test_a_full_disk_while_exporting_torchscript_is_one_line(tmp_path, monkeypatch):
    # torch.jit.save's own writer aborted the process on a full disk (SIGABRT, a C++ traceback of 15 lines) and
    # left its temporary file behind
    from crl_uiqa.export import export_model

    out = tmp_path / "m.pt"
    out.write_bytes(b"previous export")
    model = _model(tmp_path)
    _disk_full_at(monkeypatch, "m.pt")
    with pytest.raises(OutputError, match=f"{out}: cannot write m.pt: No space left on device"):
        export_model(model, out, "torchscript", check=False)
    monkeypatch.undo()
    assert out.read_bytes() == b"previous export" and not list(tmp_path.glob(".m.pt*"))


def test_ctrl_c_while_the_commands_load_is_one_line(monkeypatch, capsys):
    # a Ctrl-C in the first second (importing torch and scipy, before the command ran) printed Python's traceback
    import crl_uiqa.cli as cli

    def interrupted(name, *args, **kw):  # the user's Ctrl-C, arriving in the middle of an import
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.importlib, "import_module", interrupted)
    # torch's import cut short before it set its logger's level: its exit handler printed 3 lines at INFO after ours
    import logging

    monkeypatch.setattr(logging.getLogger("torch"), "level", logging.NOTSET)
    monkeypatch.setattr(logging.getLogger(), "level", logging.INFO)  # as the command line sets it
    assert main(["score", "--help"]) == errors.EXIT_INTERRUPTED
    assert capsys.readouterr().err.splitlines() == ["crl-uiqa: interrupted"]
    assert logging.getLogger("torch").getEffectiveLevel() == logging.WARNING


def test_an_out_is_written_in_place_of_a_link_never_through_it(tmp_path):
    # --out naming a symbolic link: the link is replaced by the new file and what it pointed to is not written
    # (a link planted in an output folder cannot send a write outside it); README "Outputs are atomic"
    (tmp_path / "elsewhere.csv").write_text("precious\n")
    (tmp_path / "out").mkdir()
    link = tmp_path / "out" / "s.csv"
    link.symlink_to(tmp_path / "elsewhere.csv")
    write_text(link, "path,score\n")
    assert not link.is_symlink() and link.read_text() == "path,score\n"
    assert (tmp_path / "elsewhere.csv").read_text() == "precious\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_an_out_that_is_a_device_pipe_or_stream_is_refused_and_kept(tmp_path, capsys):
    """`--out /dev/null` replaced the system's /dev/null with a regular file when run as root, and `--out
    /dev/stdout` replaced that link (trial 8): an output that is a device, a pipe, a socket or a link to a process's
    stream is refused before any work, by the command line's check and by the writer itself."""
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    to_fifo = tmp_path / "to-pipe.csv"
    to_fifo.symlink_to(fifo)
    stream = tmp_path / "stdout.csv"
    stream.symlink_to("/proc/self/fd/1")
    for out in (fifo, to_fifo, stream):
        rc = main(["score", "--model", str(tmp_path / "no-model"), "--images", str(tmp_path), "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == errors.EXIT_USER and "is a device, pipe, socket or process stream" in err, err
        with pytest.raises(OutputError, match="device, pipe, socket or process stream"):
            write_text(out, "path,score\n")
    assert fifo.is_fifo() and to_fifo.is_symlink() and stream.is_symlink()  # (never tried on /dev/null itself: a
    # regression run as root would replace it)


# ----------------------------------------------------------------------------- property-based
SEED_PNG = png_bytes(good((12, 10)))


@FAST
@given(data=st.one_of(st.binary(max_size=600),
                      st.tuples(st.integers(0, len(SEED_PNG) - 1), st.integers(0, 255)).map(
                          lambda t: SEED_PNG[: t[0]] + bytes([t[1]]) + SEED_PNG[t[0] + 1:]),
                      st.integers(0, len(SEED_PNG)).map(lambda n: SEED_PNG[:n])))
def test_decoding_any_bytes_gives_an_image_or_an_image_error(tmp_path, data):
    p = tmp_path / "x.png"
    p.write_bytes(data)
    try:
        a = read_gray(p)
    except ImageReadError as exc:
        assert exc.path == str(p) and exc.reason
        return
    assert a.ndim == 2 and a.dtype == np.float32 and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1


@FAST
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1))
def test_any_announced_size_is_decoded_or_refused(tmp_path, width, height):
    p = tmp_path / "h.png"
    p.write_bytes(png_header_only(width, height))
    try:
        read_gray(p)
    except ImageReadError as exc:
        if width * height > 50_000_000:
            assert "too large" in exc.reason


@FAST
@given(text=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300))
def test_manifest_reader_accepts_or_raises_value_errors(tmp_path, text):
    m = tmp_path / "m.csv"
    m.write_text(text, encoding="utf-8")
    try:
        man = read_manifest(m)
    except ValueError:
        return
    assert man.paths and all(isinstance(p, str) for p in man.paths)
    assert all(len(v) == len(man.paths) for v in man.columns.values())


HEADERS = ["", "path,score\n", "path,pseudo_label\n", "better,worse\n", "better,worse,type\n"]


@FAST
@given(text=st.tuples(st.sampled_from(HEADERS), st.text(max_size=300)).map("".join))
def test_pairs_and_label_csvs_accept_or_raise_user_errors(tmp_path, text):
    from crl_uiqa.evaluation import read_pairs
    from crl_uiqa.files import read_csv
    from crl_uiqa.tables import read_score_table

    p = tmp_path / "p.csv"
    p.write_bytes(text.encode("utf-8", errors="replace"))
    for reader in (read_pairs, read_csv, read_score_table, lambda q: read_score_table(q, "pseudo_label")):
        try:
            reader(p)
        except (ValueError, CRLUIQAError):
            pass


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                   st.text(max_size=8), st.lists(st.integers(-5, 500), max_size=3))


@FAST
@given(fields=st.dictionaries(st.sampled_from(["epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_schedule",
                                               "alpha", "theta", "beta", "strong_views", "margin_scale",
                                               "max_rotation", "val_fraction", "seed", "degree_range"]), VALUES))
def test_train_config_from_any_values_is_valid_or_a_config_error(fields):
    from crl_uiqa.training import TrainConfig

    try:
        cfg = TrainConfig.from_dict(fields)
    except ConfigError:
        return
    assert cfg.epochs >= 1 and cfg.batch_size >= 1 and math.isfinite(cfg.lr) and cfg.lr > 0


@FAST
@given(fields=st.dictionaries(st.sampled_from(["backbone", "proj_channels", "activation", "image_size", "freeze_bn",
                                               "train_from"]), VALUES))
def test_model_config_from_any_values_is_valid_or_a_config_error(fields):
    from crl_uiqa.model import ModelConfig

    try:
        cfg = ModelConfig.from_dict(fields)
    except ConfigError:
        return
    assert len(cfg.image_size) == 2 and min(cfg.image_size) >= 16
