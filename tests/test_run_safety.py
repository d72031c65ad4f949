"""Crash-consistent checkpoints, resume and overwrite (issue 12, items 4 and 5).

Fault tests run the training in a subprocess and kill it with SIGKILL at the
worst moments (between the checkpoint file and its JSON copy; in the middle of
writing the checkpoint; in the middle of an epoch), then resume and compare with an uninterrupted run,
bit for bit (CPU).
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crl_uiqa import errors
from crl_uiqa.cli import main
from crl_uiqa.errors import ConfigError, OutputError
from crl_uiqa.io import write_gray_png
from crl_uiqa.model import ModelConfig
from crl_uiqa.training import TrainConfig, load_model, train

SIZE = (32, 40)
ROOT = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int = 10) -> tuple[list[str], list[float]]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    paths, labels = [], []
    for i in range(n):
        q = i / (n - 1)
        img = q * (0.5 + 0.3 * np.sin(xx / 4.0)) + (1 - q) * rng.uniform(0, 1, xx.shape)
        p = folder / f"img{i:02d}.png"
        write_gray_png(p, img)
        paths.append(str(p))
        labels.append(q)
    return paths, labels


def _cfg(epochs=3):
    return TrainConfig(epochs=epochs, batch_size=4, lr=1e-2, val_fraction=0.2, seed=0)


def _train(paths, labels, run, weights, **kw):
    return train(paths, labels, config=_cfg(kw.pop("epochs", 3)), model_config=ModelConfig(image_size=SIZE),
                 weights=weights, run_dir=run, num_workers=0, progress=False, **kw)


def _same_weights(a: Path, b: Path) -> None:
    ma, _ = load_model(a)
    mb, _ = load_model(b)
    for (k, va), (_, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(va, vb), k


KILLER = """
import json, os, signal, sys
import torch
import crl_uiqa.checkpoint as ck
from crl_uiqa.model import ModelConfig
from crl_uiqa.training import TrainConfig, train

paths, labels, run, weights, where, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)  # as the test process: bit-equality needs the same reduction order
from crl_uiqa.files import atomic_path
real_write_json, real_serialize, real_write_bytes = ck.write_json, ck.serialize_tensors, ck.write_bytes
epoch = [None]

def write_json(path, obj):  # the JSON copy of the epoch-2 checkpoint: die before it
    if where == "between" and path.name == "last.json" and obj.get("epoch") == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write_json(path, obj)

def serialize_tensors(tensors, metadata=None):  # note which epoch's checkpoint is being written
    epoch[0] = json.loads(metadata["crl_uiqa"]).get("epoch")
    return real_serialize(tensors, metadata=metadata)

def write_bytes(path, data):  # die half-way through writing the epoch-2 checkpoint
    if where == "mid-write" and path.name == "last.safetensors" and epoch[0] == 1:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return real_write_bytes(path, data)

ck.write_json, ck.serialize_tensors, ck.write_bytes = write_json, serialize_tensors, write_bytes

import crl_uiqa.training as tr
real_loss, calls = tr.total_loss, [0]

def total_loss(*args, **kw):  # die inside epoch 2 (8 training images, batches of 4: steps 3 and 4)
    calls[0] += 1
    if where == "mid-epoch" and calls[0] == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_loss(*args, **kw)

tr.total_loss = total_loss
train(paths, labels, config=TrainConfig(epochs=3, batch_size=4, lr=1e-2, val_fraction=0.2, seed=0),
      model_config=ModelConfig(image_size=(32, 40)), weights=weights, run_dir=run, num_workers=0, progress=False)
"""


@pytest.mark.parametrize("where", ["between", "mid-write", "mid-epoch"])
def test_kill_then_resume_equals_the_uninterrupted_run(tmp_path, sononet16_path, where):
    (tmp_path / "imgs").mkdir()
    paths, labels = _images(tmp_path / "imgs")
    _train(paths, labels, tmp_path / "full", sononet16_path)
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", KILLER, json.dumps([paths, labels, str(run), str(sononet16_path), where,
                                                             torch.get_num_threads()])],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (run / "model.safetensors").exists()
    if where == "mid-write":
        assert list(run.glob(".last.safetensors.crl-uiqa-*.tmp*"))  # the half-written temporary is left...
    # the checkpoint on disk is one consistent unit: epoch 2 (between) or epoch 1 (mid-write, mid-epoch)
    from crl_uiqa.checkpoint import load_tensors

    _, meta = load_tensors(run / "last.safetensors")
    # history: epoch 0 (the model before training), then one row per finished epoch
    assert meta["epoch"] == (1 if where == "between" else 0) and len(meta["history"]) == meta["epoch"] + 2
    res = _train(paths, labels, run, sononet16_path, resume=True)
    assert [r["epoch"] for r in res.history] == [0, 1, 2, 3]  # no epoch trained twice
    _same_weights(tmp_path / "full", run)
    assert not list(run.glob(".*.tmp*"))  # ...and removed by the next run (its process is gone)
    hist = (run / "history.csv").read_text().splitlines()
    assert len(hist) == 5  # header, epoch 0 (before training), epochs 1-3


def test_resume_with_other_labels_is_refused(tmp_path, sononet16_path):
    (tmp_path / "imgs").mkdir()
    paths, labels = _images(tmp_path / "imgs")
    _train(paths, labels, tmp_path / "r", sononet16_path, epochs=1)
    with pytest.raises(ConfigError, match="images or labels differ"):
        _train(paths, labels[::-1], tmp_path / "r", sononet16_path, epochs=1, resume=True)
    with pytest.raises(ConfigError, match="images or labels differ"):
        _train(paths[:-1], labels[:-1], tmp_path / "r", sononet16_path, epochs=1, resume=True)


def test_new_run_into_an_existing_one_is_refused_unless_overwrite(tmp_path, sononet16_path):
    (tmp_path / "imgs").mkdir()
    paths, labels = _images(tmp_path / "imgs")
    _train(paths, labels, tmp_path / "r", sononet16_path, epochs=1)
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    with pytest.raises(OutputError, match="already holds a finished run.*--overwrite"):
        _train(paths, labels, tmp_path / "r", sononet16_path, epochs=1, overwrite=False)
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before
    _train(paths, labels, tmp_path / "r", sononet16_path, epochs=1, overwrite=True)


def _fit(tmp_path, weights, images, refs, *extra) -> tuple[int, list[str]]:
    return main(["fit", "--images", str(images), "--references", str(refs), "--out", str(tmp_path / "run"), "--k", "2",
                 "--epochs", "1", "--batch-size", "4", "--image-size", *map(str, SIZE), "--weights", str(weights),
                 "--workers", "0", "--quiet", *extra])


def test_fit_refuses_other_inputs_on_resume_and_an_existing_run(tmp_path, sononet16_path, capsys):
    imgs, other, refs = tmp_path / "imgs", tmp_path / "other", tmp_path / "refs"
    for d in (imgs, other, refs):
        d.mkdir()
    paths, _ = _images(imgs)
    _images(other, n=8)
    for p in paths[-3:]:
        (refs / Path(p).name).write_bytes(Path(p).read_bytes())
    assert _fit(tmp_path, sononet16_path, imgs, refs) == 0
    capsys.readouterr()
    model = (tmp_path / "run" / "model.safetensors").read_bytes()
    # a new run into the finished one
    assert _fit(tmp_path, sononet16_path, imgs, refs) == errors.EXIT_USER
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--overwrite" in err and err.count("\n") == 1
    # resume with other images
    assert _fit(tmp_path, sononet16_path, other, refs, "--resume") == errors.EXIT_USER
    err = capsys.readouterr().err
    assert "--images, --references" in err and "differ" in err
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == model  # nothing lost
    # an interrupted run (no final model) is refused too
    (tmp_path / "run" / "model.safetensors").unlink()
    assert _fit(tmp_path, sononet16_path, imgs, refs) == errors.EXIT_USER
    assert "an interrupted run" in capsys.readouterr().err
    # --overwrite replaces it; --resume with the same inputs finishes it
    assert _fit(tmp_path, sononet16_path, imgs, refs, "--resume") == 0
    assert _fit(tmp_path, sononet16_path, other, refs, "--overwrite") == 0
    assert json.loads((tmp_path / "run" / "fit.json").read_text())["n_images"] == 8


def test_fit_resumes_from_another_working_folder(tmp_path, sononet16_path, monkeypatch, capsys):
    """A fit started with relative paths in one folder and interrupted resumes from another folder, the images
    spelled otherwise: its labels.csv's relative paths are taken from the folder the fit ran in (fit.json), and the
    inputs are compared by file. Before, both were compared as path strings and the resume was refused."""
    imgs, refs, elsewhere = tmp_path / "imgs", tmp_path / "refs", tmp_path / "elsewhere"
    for d in (imgs, refs, elsewhere):
        d.mkdir()
    paths, _ = _images(imgs)
    for p in paths[-3:]:
        (refs / Path(p).name).write_bytes(Path(p).read_bytes())
    monkeypatch.chdir(tmp_path)
    run = ["fit", "--images", "imgs", "--references", "refs", "--out", "run", "--k", "2", "--epochs", "2",
           "--batch-size", "4", "--image-size", *map(str, SIZE), "--weights", str(sononet16_path), "--workers", "0",
           "--quiet"]
    assert main(run) == 0
    assert json.loads((tmp_path / "run" / "fit.json").read_text())["working_folder"] == str(tmp_path)
    assert (tmp_path / "run" / "labels.csv").read_text().splitlines()[1].startswith("imgs/")
    (tmp_path / "run" / "model.safetensors").unlink()  # as a kill before the final model leaves it
    capsys.readouterr()
    monkeypatch.chdir(elsewhere)
    again = [str(tmp_path / "imgs"), "--references", "../refs", "--out", "../run"]
    assert main([run[0], "--images", *again, *run[7:], "--resume"]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "model.safetensors").exists()
    # other images are still refused, by file
    (tmp_path / "run" / "model.safetensors").unlink()
    (imgs / Path(paths[0]).name).unlink()
    assert main([run[0], "--images", *again, *run[7:], "--resume"]) == errors.EXIT_USER
    assert "differ" in capsys.readouterr().err


def test_fit_resumes_a_run_whose_fit_json_compared_path_strings(tmp_path, sononet16_path, capsys):
    """fit.json files written before the inputs were compared by file hold the digest of the path strings as given:
    such an interrupted run still resumes when given the same strings."""
    from dataclasses import asdict

    from crl_uiqa.checkpoint import inputs_digest
    from crl_uiqa.estimator import PseudoLabelConfig

    imgs, refs = tmp_path / "imgs", tmp_path / "refs"
    for d in (imgs, refs):
        d.mkdir()
    paths, _ = _images(imgs)
    for p in paths[-3:]:
        (refs / Path(p).name).write_bytes(Path(p).read_bytes())
    assert _fit(tmp_path, sononet16_path, imgs, refs) == 0
    (tmp_path / "run" / "model.safetensors").unlink()
    listing = [[str(p), p.stat().st_size] for p in sorted(imgs.iterdir())]
    ref_listing = [[str(p), p.stat().st_size] for p in sorted(refs.iterdir())]
    old = inputs_digest({"images": listing, "references": ref_listing, "crop": None, "reference_crop": None,
                         "pseudo_label_config": asdict(PseudoLabelConfig(k=2))})
    (tmp_path / "run" / "fit.json").write_text(json.dumps({"inputs_sha256": old, "n_images": 10, "n_references": 3}))
    capsys.readouterr()
    assert _fit(tmp_path, sononet16_path, imgs, refs, "--resume") == 0, capsys.readouterr().err


def test_resume_of_an_empty_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("path,pseudo_label\na.png,0.1\nb.png,0.9\n")
    rc = main(["train", "--labels", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "run"), "--resume",
               "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_USER and "no interrupted run" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- outputs kept apart from the inputs
def _gray_pngs(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = [folder / f"f{i}.png" for i in range(n)]
    for p in paths:
        write_gray_png(p, rng.uniform(0, 1, (24, 32)))
    return paths


def _refused(argv: list[str], capsys, *protected: Path) -> str:
    before = {p: p.read_bytes() for p in protected}
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert all(p.read_bytes() == b for p, b in before.items())
    return err


def test_an_output_file_that_is_an_input_is_refused_before_any_work(tmp_path, capsys):
    imgs = _gray_pngs(tmp_path / "imgs")
    model = tmp_path / "model"  # never loaded: the check comes first
    model.mkdir()
    err = _refused(["score", "--model", str(model), "--images", str(tmp_path / "imgs"), "--out", str(imgs[1])],
                   capsys, *imgs)
    assert f"--out {imgs[1]} is also an input (--images" in err and "never writes over what it reads" in err
    scores = tmp_path / "scores.csv"
    scores.write_text("path,score\na.png,0.5\n")
    err = _refused(["report", "--scores", str(scores), "--out", str(scores)], capsys, scores)
    assert "is also an input (--scores" in err
    refs = _gray_pngs(tmp_path / "refs")
    err = _refused(["pseudo-label", "--images", str(imgs[0]), "--references", str(tmp_path / "refs" / "*.png"),
                    "--out", str(refs[2])], capsys, *refs)
    assert "is also an input (--references" in err
    (model / "model.safetensors").write_bytes(b"weights")
    err = _refused(["export", "--model", str(model), "--out", str(model / "model.safetensors")], capsys,
                   model / "model.safetensors")
    assert "is also an input (--model" in err


def test_the_files_written_beside_an_out_file_are_kept_off_the_inputs(tmp_path, capsys):
    # rerunning the skipped images (--images s.csv.skipped.csv --out s.csv) deleted that list on a clean run, and
    # embed --out e.npy replaced an --images e.paths.txt path list with its own paths (fault trial, 2026-12-03)
    imgs = _gray_pngs(tmp_path / "imgs")
    model = tmp_path / "model"  # never loaded: the check comes first
    model.mkdir()
    skipped = tmp_path / "s.csv.skipped.csv"
    skipped.write_text(f"path,reason\n{imgs[0]},cannot decode image\n")
    for command in (["score", "--model", str(model)], ["classify"], ["baseline", "brisque"], ["embed"]):
        err = _refused([*command, "--images", str(skipped), "--out", str(tmp_path / "s.csv")], capsys, skipped)
        assert f"--out's list of skipped images {skipped} is also an input (--images {skipped})" in err, err
    listing = tmp_path / "e.paths.txt"
    listing.write_text(f"# the images to embed\n{imgs[0]}\n")
    err = _refused(["embed", "--images", str(listing), "--out", str(tmp_path / "e.npy")], capsys, listing)
    assert f"--out's list of paths {listing} is also an input (--images {listing})" in err
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "e.npy").exists()


def test_an_output_reaching_an_input_through_a_link_is_refused(tmp_path, capsys):
    imgs = _gray_pngs(tmp_path / "imgs")
    link = tmp_path / "alias.png"
    hard = tmp_path / "hard.png"
    link.symlink_to(imgs[0])
    os.link(imgs[1], hard)
    for out in (link, hard):
        err = _refused(["classify", "--images", str(tmp_path / "imgs"), "--out", str(out)], capsys, *imgs)
        assert "is also an input (--images" in err


def test_live_best_frame_cannot_replace_an_input_frame(tmp_path, capsys):
    frames = _gray_pngs(tmp_path / "frames")
    err = _refused(["live", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "frames"), "--no-realtime",
                    "--best", str(frames[0])], capsys, *frames)
    assert err.startswith("crl-uiqa live: error: --best") and "is also an input (--input" in err
    # a new picture in the frames' folder was read as a frame by the next run (trial 4); a CSV there is fine
    for option, name in (("--best", "best.png"), ("--plot", "sub/curve.png")):
        err = _refused(["live", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "frames"), "--no-realtime",
                        option, str(tmp_path / "frames" / name)], capsys, *frames)
        assert f"{option} {tmp_path / 'frames' / name} is inside the --input folder" in err, err
        assert "would be read as an input next time" in err
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == sorted(p.name for p in frames)


def test_an_output_folder_among_the_inputs_is_refused(tmp_path, capsys):
    imgs = _gray_pngs(tmp_path / "imgs")
    refs = _gray_pngs(tmp_path / "refs")
    base = ["fit", "--images", str(tmp_path / "imgs"), "--references", str(tmp_path / "refs")]
    err = _refused([*base, "--out", str(tmp_path / "refs")], capsys, *refs)
    assert "is the --references folder" in err
    err = _refused([*base, "--out", str(tmp_path / "imgs" / "run")], capsys, *imgs)
    assert "is inside the --images folder" in err
    assert not (tmp_path / "imgs" / "run" / "model.safetensors").exists()
    # images named one by one (a shell-expanded pattern): their folder is refused too
    err = _refused(["fit", "--images", *map(str, imgs), "--references", str(tmp_path / "refs"),
                    "--out", str(tmp_path / "imgs")], capsys, *imgs)
    assert "holds an input (--images" in err
    err = _refused(["select", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "imgs"),
                    "--out", str(tmp_path / "imgs")], capsys, *imgs)
    assert "is the --input folder" in err


def test_outputs_beside_the_inputs_are_allowed(tmp_path):
    from crl_uiqa.cli import _inputs_of, build_parser
    from crl_uiqa.files import check_outputs_apart

    _gray_pngs(tmp_path / "imgs")
    video = tmp_path / "scan.mp4"
    video.write_bytes(b"not checked here")
    (tmp_path / "run").mkdir()
    parse = build_parser().parse_args
    # a new CSV in the images folder, a model's export inside its run folder, a video's picks beside it
    args = parse(["score", "--model", str(tmp_path / "run"), "--images", str(tmp_path / "imgs"),
                  "--out", str(tmp_path / "imgs" / "scores.csv")])
    check_outputs_apart(_inputs_of(args), [("--out", args.out)])
    (tmp_path / "imgs" / "scores.csv").write_text("path,score\n")  # a rerun replaces its own earlier output
    check_outputs_apart(_inputs_of(args), [("--out", args.out)])
    (tmp_path / "run" / "model.onnx").write_bytes(b"an earlier export")  # exported again into the run folder
    args = parse(["export", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "run" / "model.onnx")])
    check_outputs_apart(_inputs_of(args), [("--out", args.out)])
    args = parse(["select", "--model", str(tmp_path / "run"), "--input", str(video), "--out", str(tmp_path)])
    check_outputs_apart(_inputs_of(args), folders=[("--out", args.out)])
    args = parse(["fit", "--images", str(tmp_path / "imgs"), "--references", str(tmp_path / "imgs"),
                  "--out", str(tmp_path / "run2")])
    check_outputs_apart(_inputs_of(args), folders=[("--out", args.out)])


def test_a_refused_run_leaves_no_empty_out_folder(tmp_path, capsys):
    _gray_pngs(tmp_path / "imgs")
    out = tmp_path / "new" / "run"
    assert main(["fit", "--images", str(tmp_path / "imgs"), "--references", str(tmp_path / "imgs"), "--epochs", "-1",
                 "--out", str(out)]) == 1
    assert "epochs" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "new").exists()  # nor the parent the check made for it
    # a file output's new parent folders go too (found in the path trial: score with a bad --model left newdir/)
    assert main(["score", "--model", str(tmp_path / "no-such-run"), "--images", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "newdir" / "sub" / "scores.csv")]) == 1
    assert not (tmp_path / "newdir").exists()
    kept = tmp_path / "kept"  # a folder that existed before stays, empty or not
    kept.mkdir()
    assert main(["fit", "--images", str(tmp_path / "imgs"), "--references", str(tmp_path / "imgs"), "--epochs", "-1",
                 "--out", str(kept)]) == 1
    assert kept.is_dir()


def test_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (["simulate", "--quiet", "--out", ""], ["demo", "--quick", "--out", " "],
                 ["score", "--model", "m", "--images", "x", "--out", ""]):
        assert main(argv) == 1
        assert "--out must not be empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- one run at a time in an output folder
SIM = ["simulate", "--quiet", "--sweeps", "1", "--reference-sweeps", "0", "--test-sweeps", "0", "--frames", "2",
       "--size", "32", "32", "--pairs", "0"]
HOLDER = """
import sys
from crl_uiqa.files import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()  # until the test closes our input (or kills us)
"""


def _holder(out: Path) -> subprocess.Popen:
    """Another process holding ``out``, as another run does; close its stdin to end it cleanly."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)  # a child stuck before its first line fails, not hangs
    if not ready:
        proc.kill()
        pytest.fail("the holder process did not report its lock within 120 s")
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


def test_a_second_run_into_a_folder_being_written_is_refused_before_any_work(tmp_path, capsys):
    from crl_uiqa.files import LOCK_NAME, output_lock

    out = tmp_path / "sim"
    out.mkdir()
    proc = _holder(out)  # a run writing there (the same lock the command line takes)
    try:
        err = _refused([*SIM, "--out", str(out)], capsys)
        assert err == (f"crl-uiqa simulate: error: {out}: another crl-uiqa run is writing into this folder; wait for "
                       "it to end, or choose another folder (--out)")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written or replaced
        with pytest.raises(OutputError, match="another crl-uiqa run"):
            with output_lock(out):
                pass
    finally:
        _release(proc)
    assert list(out.iterdir()) == []  # an ended run removes its lock file
    assert main([*SIM, "--out", str(out)]) == 0  # the command's lock, and simulate_dataset's nested in it
    assert not (out / LOCK_NAME).exists() and (out / "simulation.json").is_file()  # nothing but the outputs


def test_the_python_functions_that_fill_a_folder_hold_it_too(tmp_path):
    """CRLUIQA.fit(run_dir=...) and simulate_dataset() take the command line's lock: another process filling the
    folder makes them refuse before anything there is replaced (--overwrite's deletions included)."""
    from crl_uiqa import CRLUIQA
    from crl_uiqa.data import simulate_dataset
    from crl_uiqa.files import LOCK_NAME

    paths, _ = _images(tmp_path)
    run, sim = tmp_path / "run", tmp_path / "sim"
    run.mkdir()
    old = {"labels.csv": b"path,label\n", "model.safetensors": b"a finished run"}
    for name, data in old.items():
        (run / name).write_bytes(data)
    simulate_dataset(sim, n_train_sweeps=1, n_reference_sweeps=0, n_test_sweeps=0, n_frames=2, size=(32, 32),
                     n_pairs=0, progress=False)
    sim_files = {p: p.read_bytes() for p in sim.rglob("*") if p.is_file()}
    est = CRLUIQA(image_size=SIZE, epochs=1, device="cpu", num_workers=0, progress=False)
    for folder, call in ((run, lambda: est.fit(paths, paths[:3], run_dir=run, overwrite=True)),
                         (sim, lambda: simulate_dataset(sim, n_train_sweeps=1, n_reference_sweeps=0, n_test_sweeps=0,
                                                        n_frames=3, size=(32, 32), n_pairs=0, progress=False))):
        proc = _holder(folder)
        try:
            with pytest.raises(OutputError) as info:
                call()
            assert str(info.value) == (f"{folder}: another crl-uiqa run is writing into this folder; wait for it "
                                       "to end, or choose another folder (--out)")
        finally:
            _release(proc)
    assert sorted(p.name for p in run.iterdir()) == sorted(old)  # nothing deleted, replaced or added
    assert all((run / name).read_bytes() == data for name, data in old.items())
    assert {p: p.read_bytes() for p in sim.rglob("*") if p.is_file()} == sim_files
    assert not (sim / LOCK_NAME).exists()


@contextlib.contextmanager
def _held_by_another_thread(out: Path):
    """Another thread of this process holds ``out`` (:func:`crl_uiqa.files.output_lock`) while the block runs."""
    import threading

    from crl_uiqa.files import output_lock

    held, done = threading.Event(), threading.Event()

    def hold():
        with output_lock(out):
            held.set()
            done.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(60)
        yield
    finally:
        done.set()
        thread.join(60)


def test_another_thread_is_another_run_and_nested_holds_are_one(tmp_path):
    from crl_uiqa.data import simulate_dataset
    from crl_uiqa.files import LOCK_NAME, output_lock

    out = tmp_path / "sim"
    out.mkdir()
    tiny = dict(n_train_sweeps=1, n_reference_sweeps=0, n_test_sweeps=0, n_frames=2, size=(32, 32), n_pairs=0,
                progress=False)
    with _held_by_another_thread(out):
        with pytest.raises(OutputError, match="another crl-uiqa run"):
            simulate_dataset(out, **tiny)  # this thread: another run, refused
    assert list(out.iterdir()) == []
    with output_lock(out):  # the command line's hold, then the function's own nested in it (the same thread)
        with output_lock(tmp_path / "." / "sim"):  # the same folder by another name
            pass
        assert (out / LOCK_NAME).exists()  # an inner hold that ends releases nothing
        simulate_dataset(out, **tiny)
        assert (out / LOCK_NAME).exists()
    assert not (out / LOCK_NAME).exists() and (out / "simulation.json").is_file()


def test_a_call_that_fails_leaves_no_folder_it_created(tmp_path):
    from crl_uiqa import CRLUIQA

    with pytest.raises(ConfigError, match="larger than the number of references"):
        CRLUIQA(device="cpu").fit([], [], run_dir=tmp_path / "new" / "run")
    assert list(tmp_path.iterdir()) == []


def test_the_lock_of_a_killed_run_blocks_nothing(tmp_path, capsys):
    from crl_uiqa.files import LOCK_NAME, output_lock

    out = tmp_path / "sim"
    out.mkdir()
    proc = _holder(out)
    try:
        err = _refused([*SIM, "--out", str(out)], capsys)  # another process holds it
        assert "another crl-uiqa run is writing into this folder" in err
    finally:
        proc.kill()  # SIGKILL: no clean-up runs
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (out / LOCK_NAME).exists()  # left behind, but the system dropped the lock with the process
    with output_lock(out):
        pass
    (out / LOCK_NAME).touch()
    assert main([*SIM, "--out", str(out)]) == 0
    assert not (out / LOCK_NAME).exists()


def test_an_empty_folder_name_is_a_config_error_before_the_working_folder_is_touched(tmp_path, monkeypatch):
    """``""`` would be the working folder: it was probed and locked before the function's own check, so with another
    run in the working folder simulate_dataset("") said "another crl-uiqa run is writing into" '.', not that the
    name is empty; fit(run_dir="") trained into the working folder."""
    from crl_uiqa import CRLUIQA
    from crl_uiqa.data import simulate_dataset

    monkeypatch.chdir(tmp_path)
    proc = _holder(tmp_path)  # another run in the working folder
    try:
        with pytest.raises(ConfigError, match=r"^out_dir must not be empty \(it would be the working folder\)"):
            simulate_dataset("", n_train_sweeps=1, n_reference_sweeps=0, n_test_sweeps=0, n_frames=2, size=(32, 32))
        with pytest.raises(ConfigError, match="^run_dir must not be empty"):
            CRLUIQA(device="cpu").fit([], [], run_dir=" ")
    finally:
        _release(proc)
    assert list(tmp_path.iterdir()) == []


FORKING_HOLDER = """
import os, sys, time
from crl_uiqa.files import output_lock
with output_lock(sys.argv[1]):
    child = os.fork()  # as a DataLoader worker is forked during a run
    if child == 0:
        time.sleep(120)  # outlives the run (the test kills it)
        os._exit(0)
    print(child, flush=True)
    sys.stdin.readline()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_killed_run_s_forked_children_do_not_keep_its_folder_locked(tmp_path):
    """flock belongs to the open file, which a fork shares: a DataLoader worker (or any child) that outlived a killed
    run kept its folder locked, so the next run was refused although the run was gone."""
    from crl_uiqa.files import output_lock

    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", FORKING_HOLDER, str(out)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        proc.kill()
        proc.wait(timeout=60)
        os.kill(child, 0)  # the child lives on
        with output_lock(out):
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_another_thread_is_refused_even_where_the_system_lock_is_one_per_process(tmp_path, monkeypatch):
    """On NFS, flock is emulated by fcntl locks, one per process: a second thread took the "lock" too, and its
    release dropped the first thread's. The process keeps its own list of held folders, so it is refused there."""
    from crl_uiqa import files
    from crl_uiqa.files import output_lock

    monkeypatch.setattr(files, "_try_lock", lambda fd, path=None: True)  # a lock that never refuses within this process
    out = tmp_path / "run"
    out.mkdir()
    errors = []
    with _held_by_another_thread(out):
        with pytest.raises(OutputError, match="another crl-uiqa run is writing into this folder"):
            with output_lock(tmp_path / "." / "run"):
                errors.append("not refused")
    assert errors == [] and list(out.iterdir()) == []
    with output_lock(out):  # released: free again
        pass


def test_a_file_system_without_locks_is_not_locked_and_says_so(tmp_path, monkeypatch, caplog):
    """Some network shares refuse flock (ENOLCK, EOPNOTSUPP): the run goes on unlocked, as documented, and a warning
    says that the folder is not kept from a second run (before, nothing said so)."""
    import errno
    import logging

    fcntl = pytest.importorskip("fcntl")
    from crl_uiqa.files import LOCK_NAME, output_lock

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "share"
    out.mkdir()
    with caplog.at_level(logging.WARNING, logger="crl_uiqa.files"):
        with output_lock(out):
            assert (out / LOCK_NAME).exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"{out}: the file system refused a lock (No locks available); this folder is not kept from a second run "
        "writing into it"]
    assert list(out.iterdir()) == []


def _tiny_model(run: Path) -> Path:
    from crl_uiqa.model import build_model
    from crl_uiqa.training import save_model

    torch.manual_seed(0)
    save_model(build_model(ModelConfig(image_size=SIZE), pretrained=False), run)
    return run


@pytest.mark.parametrize("command, mine", [
    ("select", "report.html"), ("select", "frames.csv"), ("select several", "spike/picks.csv"),
    ("compare", "compare.md"), ("compare", "scores_mssim.csv"), ("simulate", "simulation.json"),
    ("train", "history.csv"), ("ablate", "ablation.csv"), ("ablate", "smoothing_l_c/model.json"),
    ("demo", "report.html"), ("demo", "model/history.csv"),
])
def test_a_file_of_the_user_named_like_an_output_is_never_replaced(tmp_path, capsys, command, mine):
    """`select --out DIR` replaced a user's own report.html and frames.csv there in silence (the names its help
    documents); every command whose --out is a folder now refuses, before any work, a file named like one of its
    outputs that no crl-uiqa run wrote, in one line naming it and what to do. Its own files it replaces as before."""
    from crl_uiqa.files import OUTPUTS_RECORD

    paths, labels = _images(tmp_path / "imgs", n=6)
    (tmp_path / "pairs.csv").write_text(f"better,worse\n{paths[5]},{paths[0]}\n{paths[4]},{paths[1]}\n")
    (tmp_path / "labels.csv").write_text("path,pseudo_label\n" + "".join(f"{p},{q}\n" for p, q in zip(paths, labels)))
    run = _tiny_model(tmp_path / "run")
    several = tmp_path / "spike"
    several.mkdir()
    write_gray_png(several / "f0.png", np.full(SIZE, 0.5))
    out = tmp_path / "out"
    argv = {
        "select": ["select", "--model", str(run), "--input", str(tmp_path / "imgs"), "--region", "none", "--quiet"],
        "select several": ["select", "--model", str(run), "--input", str(tmp_path / "imgs"), str(several),
                           "--region", "none", "--quiet"],
        "compare": ["compare", "--pairs", str(tmp_path / "pairs.csv"), "--images", str(tmp_path / "imgs"),
                    "--references", paths[5], "--methods", "mssim", "--option", "mssim.size=null", "--n-boot", "0",
                    "--quiet", "--workers", "0"],
        "simulate": SIM,
        "train": ["train", "--labels", str(tmp_path / "labels.csv"), "--paper", "--epochs", "1", "--image-size",
                  str(SIZE[0]), str(SIZE[1]), "--workers", "0", "--quiet", "--overwrite"],  # deleted the file
        "ablate": ["ablate", "--images", str(tmp_path / "imgs"), "--references", paths[5], "--pairs",
                   str(tmp_path / "pairs.csv"), "--k", "1", "--quiet"],
        "demo": ["demo", "--quiet"],
    }[command] + ["--out", str(out)]
    (out / mine).parent.mkdir(parents=True)
    (out / mine).write_text("mine")
    if command == "demo" and "/" in mine:  # beside an earlier demo's data: the old check took the folder for a demo's
        (out / "data").mkdir()
        (out / "data" / "simulation.json").write_text("{}")
        (out / OUTPUTS_RECORD).write_text("data/simulation.json\n")
    before = sorted(p for p in out.rglob("*"))
    err = _refused(argv, capsys, out / mine)
    assert err == (f"crl-uiqa {command.split()[0]}: error: {out / mine}: no crl-uiqa run wrote this file, and this "
                   "run writes one of that name there; move it out of the folder, or choose another output folder "
                   "(--out): crl-uiqa never replaces a file of yours")
    assert sorted(p for p in out.rglob("*")) == before  # before any work: nothing written
    if command in ("select", "compare", "simulate", "train"):  # the command's own files it replaces, run after run
        (out / mine).unlink()
        for _ in range(2):
            assert main(argv) == 0, capsys.readouterr().err
        capsys.readouterr()
        (out / "notes.txt").write_text("mine too")  # a file no output is named like stays, and is no obstacle
        assert main(argv) == 0 and (out / "notes.txt").read_text() == "mine too"


def test_a_file_written_where_no_name_was_checked_up_front_is_refused_at_the_write(tmp_path):
    """The write itself (files.atomic_path) refuses to replace a file in a held folder that no run wrote, and
    records what it writes, so a later run replaces it."""
    from crl_uiqa.files import OUTPUTS_RECORD, holding_output_dir, write_text

    out = tmp_path / "out"
    out.mkdir()
    (out / "x.csv").write_text("mine")
    with holding_output_dir(out):
        with pytest.raises(OutputError, match=r"x.csv: no crl-uiqa run wrote this file"):
            write_text(out / "x.csv", "ours")
        write_text(out / "sub" / "y.csv", "ours")
    assert (out / "x.csv").read_text() == "mine"
    assert (out / OUTPUTS_RECORD).read_text() == "sub/y.csv\n"
    with holding_output_dir(out / "sub"):  # a run into the sub-folder: the record above lists the file
        write_text(out / "sub" / "y.csv", "ours again")
    assert (out / "sub" / OUTPUTS_RECORD).read_text() == "y.csv\n"
    write_text(out / "x.csv", "replaced")  # outside a held folder (a --out file named by the user): written
    assert (out / "x.csv").read_text() == "replaced"


def test_select_without_reports_leaves_a_users_report_html_alone(tmp_path, capsys):
    """`select --no-report` writes no report.html, so a user's file of that name is no obstacle (and is kept)."""
    paths, _ = _images(tmp_path / "imgs", n=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("mine")
    argv = ["select", "--model", str(_tiny_model(tmp_path / "run")), "--input", str(tmp_path / "imgs"), "--region",
            "none", "--quiet", "--out", str(out)]
    assert main([*argv, "--no-report"]) == 0
    assert (out / "report.html").read_text() == "mine" and (out / "frames.csv").is_file()
    capsys.readouterr()
    _refused(argv, capsys, out / "report.html")  # with reports: refused, the file kept


def test_a_select_folder_from_before_records_is_rerun_in_place_but_a_lookalike_is_not(tmp_path, capsys):
    """A `select` output folder written before crl-uiqa kept records (no record file) is recognised by its
    selection.json (one scan) or summary.csv (several scans) and replaced by the next run, as a recorded one is, and
    so is one scan's folder copied out of a several-scan run; a user's folder with a report.html and a selection.json that is not select's is still refused."""
    import json

    from crl_uiqa.files import OUTPUTS_RECORD

    _images(tmp_path / "imgs", n=4)
    several = tmp_path / "spike"
    several.mkdir()
    write_gray_png(several / "f0.png", np.full(SIZE, 0.5))
    run = _tiny_model(tmp_path / "run")
    base = ["select", "--model", str(run), "--region", "none", "--quiet"]
    for name, inputs in (("one", [str(tmp_path / "imgs")]), ("several", [str(tmp_path / "imgs"), str(several)])):
        out = tmp_path / name
        argv = [*base, "--input", *inputs, "--out", str(out)]
        assert main(argv) == 0, capsys.readouterr().err
        for record in out.rglob(OUTPUTS_RECORD):  # as a version before records left the folder
            record.unlink()
        (out / "notes.txt").write_text("mine")
        old = {p: p.read_bytes() for p in out.rglob("report.html")}
        assert main(argv) == 0, capsys.readouterr().err
        assert (out / "notes.txt").read_text() == "mine" and old and all(p.is_file() for p in old)
        assert all(OUTPUTS_RECORD in {q.name for q in p.parent.iterdir()} for p in old)  # recorded from now on
    # one scan's folder copied out of a several-scan run (its files are listed in the record above it, which stays
    # behind) is recognised by its selection.json too
    import shutil

    assert main([*base, "--input", str(tmp_path / "imgs"), str(several), "--out", str(tmp_path / "fresh")]) == 0
    shutil.copytree(tmp_path / "fresh" / "imgs", tmp_path / "copied")
    assert not (tmp_path / "copied" / OUTPUTS_RECORD).exists()
    assert main([*base, "--input", str(tmp_path / "imgs"), "--out", str(tmp_path / "copied")]) == 0
    capsys.readouterr()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my report")
    (mine / "selection.json").write_text(json.dumps({"scan": "x", "picks": []}))  # not select's keys
    _refused([*base, "--input", str(tmp_path / "imgs"), "--out", str(mine)], capsys, mine / "report.html",
             mine / "selection.json")


def test_an_earlier_select_folder_adopts_only_selects_files_and_a_refused_run_records_nothing(tmp_path, capsys):
    """Beside a `select` folder from before records (found by its summary.csv or selection.json), a user's own
    report.html or quality.png is still refused, nothing is recorded by the refused run, and a selection.json nested
    too deep to parse is a plain refusal, not an internal error."""
    from crl_uiqa.files import OUTPUTS_RECORD

    _images(tmp_path / "imgs", n=4)
    run = _tiny_model(tmp_path / "run")
    base = ["select", "--model", str(run), "--region", "none", "--quiet", "--input", str(tmp_path / "imgs")]
    out = tmp_path / "old"
    assert main([*base, "--no-report", "--out", str(out)]) == 0, capsys.readouterr().err
    (out / OUTPUTS_RECORD).unlink()  # as a version before records left it
    (out / "report.html").write_text("my notes")
    from PIL import Image

    Image.new("L", (4, 4)).save(out / "quality.png")  # a real PNG of the user's, named like select's plot
    _refused([*base, "--out", str(out)], capsys, out / "report.html", out / "quality.png")
    assert not (out / OUTPUTS_RECORD).exists()
    (out / "report.html").unlink()
    _refused([*base, "--out", str(out)], capsys, out / "quality.png")
    (out / "quality.png").unlink()
    assert main([*base, "--out", str(out)]) == 0, capsys.readouterr().err  # select's own files: rerun in place
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "selection.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "no crl-uiqa run wrote" in _refused([*base, "--out", str(deep)], capsys, deep / "selection.json")
