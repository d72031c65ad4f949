"""Nothing a user feeds crl-uiqa crashes it (issue 12): one error model, settings checked before any work.

The bad inputs are generated here at test time (no binary fixtures). Each test
names the case of the issue it covers.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from crl_uiqa import errors
from crl_uiqa.cli import main
from crl_uiqa.errors import ConfigError, CRLUIQAError, MissingDependencyError, optional_import
from crl_uiqa.estimator import CRLUIQA, PseudoLabelConfig
from crl_uiqa.io import ImageReadError, write_gray_png
from crl_uiqa.model import ModelConfig
from crl_uiqa.training import TrainConfig
from crl_uiqa.video.scan import ScanReadError


def _imgs(folder: Path, n: int = 6, size=(40, 48)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = folder / f"im{i}.png"
        write_gray_png(p, rng.uniform(0, 1, size) * (i + 1) / n)
        out.append(str(p))
    return out


def _err_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


# ----------------------------------------------------------------------------- the error model
def test_error_classes_keep_their_names_and_builtin_bases():
    assert issubclass(ImageReadError, errors.ImageError) and issubclass(ImageReadError, CRLUIQAError)
    assert issubclass(ScanReadError, errors.ScanError) and issubclass(ScanReadError, ValueError)
    assert issubclass(errors.OutputError, OSError) and issubclass(errors.ModelError, ValueError)
    assert issubclass(MissingDependencyError, ImportError)


def test_optional_import_names_the_extra(monkeypatch):
    import sys

    assert optional_import("json", "all").dumps([1]) == "[1]"
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(MissingDependencyError, match=r"crl-uiqa\[video\]"):
        optional_import("av", "video", purpose="reading videos")


def test_cli_user_error_is_one_line_exit_1(tmp_path, capsys):
    rc = main(["score", "--model", str(tmp_path / "nope"), "--images", str(tmp_path), "--out", str(tmp_path / "s.csv")])
    lines = _err_lines(capsys)
    assert rc == errors.EXIT_USER and len(lines) == 1 and lines[0].startswith("crl-uiqa score: error:")
    assert "Traceback" not in capsys.readouterr().err


def test_cli_bug_asks_for_a_report_and_v_gives_the_traceback(monkeypatch, tmp_path, capsys):
    from crl_uiqa.commands import score

    def boom(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(score, "run", boom)
    argv = ["score", "--model", "m", "--images", "i", "--out", str(tmp_path / "s.csv")]
    assert main(argv) == errors.EXIT_BUG
    err = capsys.readouterr().err
    assert "internal error" in err and "please report" in err and "-v" in err and "Traceback" not in err
    assert main(["-v", *argv]) == errors.EXIT_BUG
    assert "Traceback" in capsys.readouterr().err


def test_cli_a_user_error_raised_in_a_command_is_one_line_exit_1(monkeypatch, tmp_path, capsys):
    from crl_uiqa.commands import score

    def refuse(args):
        raise errors.InputError(f"{tmp_path / 'x.csv'}: no rows")

    monkeypatch.setattr(score, "run", refuse)
    assert main(["score", "--model", "m", "--images", "i", "--out", str(tmp_path / "s.csv")]) == errors.EXIT_USER
    assert _err_lines(capsys) == [f"crl-uiqa score: error: {tmp_path / 'x.csv'}: no rows"]


def test_cli_a_plain_value_error_from_a_library_is_a_bug_exit_3(monkeypatch, tmp_path, capsys):
    """crl-uiqa raises CRLUIQAError for what the user gave (test_error_policy); a bare ValueError that reaches the
    command line comes from a library (numpy, torch, PIL...) that was handed something crl-uiqa did not check: a
    bug to report, not the user's fault. It used to be printed as a user error with exit 1."""
    from crl_uiqa.commands import score

    def library(args):
        import numpy as np

        np.zeros(2).reshape(3)  # ValueError: cannot reshape array of size 2 into shape (3,)

    monkeypatch.setattr(score, "run", library)
    argv = ["score", "--model", "m", "--images", "i", "--out", str(tmp_path / "s.csv")]
    assert main(argv) == errors.EXIT_BUG
    err = capsys.readouterr().err
    assert "crl-uiqa score: internal error at " in err and "ValueError: cannot reshape array of size 2" in err
    assert "This is a bug in crl-uiqa" in err and "please report" in err and "Traceback" not in err
    assert not isinstance(ValueError(), CRLUIQAError)  # the user errors stay ValueErrors for Python callers:
    assert issubclass(errors.InputError, ValueError) and issubclass(errors.ConfigError, ValueError)


def test_cli_out_of_memory_is_one_line_exit_1_with_what_to_lower(monkeypatch, tmp_path, capsys):
    """Running out of memory is neither bad input nor a bug: one line saying so and which settings ask for less."""
    from crl_uiqa.commands import score

    def hungry(args):
        import numpy as np

        np.empty(2**62, dtype=np.uint8)  # MemoryError: Unable to allocate 4.00 EiB ...

    monkeypatch.setattr(score, "run", hungry)
    assert main(["score", "--model", "m", "--images", "i", "--out", str(tmp_path / "s.csv")]) == errors.EXIT_USER
    (line,) = _err_lines(capsys)
    assert line.startswith("crl-uiqa score: error: out of memory: Unable to allocate") and "--batch-size" in line


def test_cli_a_very_long_message_is_cut_in_its_middle(monkeypatch, tmp_path, capsys):
    """A pasted value of 10000 characters in an error does not flood the terminal: start and end kept."""
    from crl_uiqa.commands import score

    message = "--option size=" + "[" * 10000 + " is nested too deeply"

    def refuse(args):
        raise errors.ConfigError(message)

    monkeypatch.setattr(score, "run", refuse)
    assert main(["score", "--model", "m", "--images", "i", "--out", str(tmp_path / "s.csv")]) == errors.EXIT_USER
    (line,) = _err_lines(capsys)
    assert line.startswith("crl-uiqa score: error: --option size=[[[") and line.endswith("[[ is nested too deeply")
    assert "characters ...]" in line and len(line) <= errors.MAX_MESSAGE + len("crl-uiqa score: error: ")
    assert line.endswith(errors.one_line(message))


@pytest.mark.parametrize("limit", [500, 1000])
def test_one_line_is_the_one_shortening_policy(limit):
    """One line of at most ``limit`` characters; a long text keeps its start and its end, and says how much of its
    middle is cut (the command line's errors at 1000, the server's details at 500)."""
    assert errors.one_line("short  message") == "short  message"  # a line is kept as it is, spaces and all
    assert errors.one_line("a\n  b\r\nc\n", limit) == "a b c"
    text = "start " + "x" * 10_000 + "\nthe end"
    out = errors.one_line(text, limit)
    assert len(out) <= limit and "\n" not in out
    assert out.startswith("start xxx") and out.endswith("xxx the end")
    head, _, rest = out.partition(" [... ")
    cut, _, end = rest.partition(" characters ...] ")
    assert len(head) + int(cut) + len(end) == len(" ".join(text.split()))  # what is cut is counted right


def test_cli_oserror_names_the_path(monkeypatch, tmp_path, capsys):
    import errno
    import os

    from crl_uiqa.commands import score

    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "s.csv"))

    monkeypatch.setattr(score, "run", full)
    assert main(["score", "--model", "m", "--images", "i", "--out", str(tmp_path / "s.csv")]) == errors.EXIT_USER
    (line,) = _err_lines(capsys)
    assert str(tmp_path / "s.csv") in line and "No space left" in line


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "batch-size"), (dict(epochs=0), "epochs"), (dict(lr=math.nan), "lr"),
    (dict(lr=math.inf), "lr"), (dict(lr=-1e-3), "lr"), (dict(lr=0.0), "lr"), (dict(momentum=1.0), "momentum"),
    (dict(strong_views="blurr"), "strong-views"), (dict(val_fraction=1.0), "val-fraction"),
    (dict(lr_schedule="cosine"), "lr-schedule"), (dict(alpha=-1), "alpha"), (dict(seed=-1), "seed"),
    (dict(degree_range=(0.5, 0.2)), "degree_range"), (dict(max_rotation=math.nan), "max-rotation"),
    (dict(epochs=2.5), "epochs"), (dict(batch_size=True), "batch-size"),
])
def test_train_config_refuses_bad_settings(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


@pytest.mark.parametrize("kw, match", [
    (dict(image_size=(0, 0)), "image-size"), (dict(image_size=(15, 17)), "between 16"),
    (dict(image_size=(224,)), "two integers"), (dict(image_size=(100_000, 100_000)), "8192"),
    (dict(backbone="smallnet", image_size=(32, 64)), "between 33"), (dict(activation="relu"), "activation"),
    (dict(backbone="resnet"), "unknown backbone"), (dict(train_from="block0"), "train-from"),
    (dict(proj_channels=0), "proj_channels"), (dict(train_from="block6"), "block1..block5"),
    (dict(backbone="smallnet", image_size=(40, 40), train_from="block5"), "block1..block4"),
])
def test_model_config_refuses_bad_settings(kw, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kw)


def test_accepted_sizes_run_through_the_network():
    import torch

    from crl_uiqa.model import build_model

    for backbone, size in (("sononet16", (16, 17)), ("smallnet", (33, 40))):
        m = build_model(ModelConfig(backbone=backbone, image_size=size), pretrained=False).eval()
        with torch.no_grad():
            assert m(torch.rand(2, 1, *size)).shape == (2,)


def test_estimator_refuses_device_k_workers():
    with pytest.raises(ConfigError, match="tpu"):
        CRLUIQA(device="tpu")
    with pytest.raises(ConfigError, match="k"):
        PseudoLabelConfig(k=0)
    with pytest.raises(ConfigError, match="workers"):
        CRLUIQA(num_workers=-1)


@pytest.mark.parametrize("extra, match", [
    (["--batch-size", "0"], "batch-size"), (["--image-size", "0", "0"], "image-size"),
    (["--image-size", "15", "17"], "image-size"), (["--lr", "nan"], "lr"), (["--lr", "inf"], "lr"),
    (["--device", "tpu"], "tpu"), (["--epochs", "0"], "epochs"), (["--strong-views", "nope"], "strong-views"),
    (["--k", "0"], "k"), (["--crop", "-1", "0", "10", "10"], "crop box"), (["--reference-crop", "0", "0", "0", "5"], "crop box"),
    (["--train-from", "block99"], "train-from"),
    # bounded by what they cost (validate.MAX_EPOCHS, MAX_MIN_STEPS, MAX_BATCH): a run that ran, in effect, forever,
    # and a batch held whole
    (["--epochs", "1000000000"], "epochs (--epochs) must be <= 10000, got 1000000000"),
    (["--min-steps", "1000000000"], "min_steps (--min-steps) must be <= 10000, got 1000000000"),
    (["--batch-size", "100000000"], "batch_size (--batch-size) must be <= 4096, got 100000000"),
])
def test_fit_checks_settings_before_any_work(tmp_path, capsys, extra, match):
    imgs = _imgs(tmp_path / "imgs")
    out = tmp_path / "run"
    # --weights points nowhere: a check made after the settings would fail on it instead
    rc = main(["fit", "--images", str(tmp_path / "imgs"), "--references", imgs[0], "--out", str(out),
               "--weights", str(tmp_path / "no-weights.npz"), "--workers", "0", "--quiet", *extra])
    (line,) = _err_lines(capsys)
    assert rc == errors.EXIT_USER and match in line and "weights" not in line
    assert not (out / "labels.csv").exists()


def test_train_and_demo_refuse_epochs_beyond_the_bound_before_any_work(tmp_path, capsys):
    from crl_uiqa.validate import MAX_EPOCHS

    assert TrainConfig(epochs=MAX_EPOCHS).epochs == MAX_EPOCHS
    labels = tmp_path / "labels.csv"
    labels.write_text("path,pseudo_label\n" + "".join(f"{p},0.5\n" for p in _imgs(tmp_path / "imgs")))
    for cmd in (["train", "--labels", str(labels)], ["demo", "--quick"]):
        rc = main([*cmd, "--out", str(tmp_path / "out"), "--epochs", str(MAX_EPOCHS + 1), "--quiet"])
        (line,) = _err_lines(capsys)
        assert rc == errors.EXIT_USER and "--epochs" in line
        assert line.endswith(f" must be <= {MAX_EPOCHS}, got {MAX_EPOCHS + 1}")
        assert not (tmp_path / "out").exists()


def test_fit_k_larger_than_references_before_embedding(tmp_path, capsys):
    imgs = _imgs(tmp_path / "imgs")
    rc = main(["fit", "--images", str(tmp_path / "imgs"), "--references", *imgs[:2], "--out", str(tmp_path / "run"),
               "--k", "3", "--weights", str(tmp_path / "no-weights.npz"), "--workers", "0", "--quiet"])
    (line,) = _err_lines(capsys)
    assert rc == errors.EXIT_USER and "k=3" in line and "n=2" in line


@pytest.mark.parametrize("extra, match", [
    (["--batch-size", "0"], "batch-size"), (["--device", "tpu"], "tpu"), (["--workers", "-1"], "workers"),
    (["--layer", "block9"], "layer"),
])
def test_pseudo_label_checks_settings(tmp_path, capsys, sononet16_path, extra, match):
    imgs = _imgs(tmp_path / "imgs")
    rc = main(["pseudo-label", "--images", *imgs, "--references", *imgs[:3], "--out", str(tmp_path / "pl.csv"),
               "--k", "2", "--weights", str(sononet16_path), "--workers", "0", "--quiet", *extra])
    (line,) = _err_lines(capsys)
    assert rc == errors.EXIT_USER and match in line
    assert not (tmp_path / "pl.csv").exists()


@pytest.mark.parametrize("command", ["fit", "train"])
def test_resume_and_overwrite_together_is_a_usage_error(tmp_path, capsys, command):
    # with both, --resume won and --overwrite was silently ignored
    inputs = ["--images", "i", "--references", "r"] if command == "fit" else ["--labels", "l.csv"]
    with pytest.raises(SystemExit) as exc:
        main([command, *inputs, "--out", str(tmp_path / "run"), "--resume", "--overwrite"])
    assert exc.value.code == errors.EXIT_USAGE
    assert "--overwrite: not allowed with argument --resume" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
