"""crl_uiqa.progress: log lines with elapsed time and ETA when output is not a terminal."""
from __future__ import annotations

import logging
import re

import pytest

from crl_uiqa.progress import LogProgress, eta, format_duration, progress


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_format_duration_and_eta():
    assert format_duration(4.4) == "4 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(3725) == "1 h 02 min"
    assert eta(10.0, 2, 10) == 40.0
    assert eta(10.0, 0, 10) is None and eta(10.0, 3, None) is None


def test_log_lines_every_interval_with_elapsed_and_eta(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="crl_uiqa.progress"):
        with progress(total=10, desc="embedding", unit="img", tty=False, interval=30, clock=clock) as bar:
            for _ in range(10):
                clock.t += 10  # 10 s per image
                bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    # at 30, 60, 90 s, then the closing line
    assert lines == [
        "embedding: 3/10 img (30%), 30 s elapsed, about 1 min 10 s left",
        "embedding: 6/10 img (60%), 1 min 00 s elapsed, about 40 s left",
        "embedding: 9/10 img (90%), 1 min 30 s elapsed, about 10 s left",
        "embedding: 10/10 img (100%), 1 min 40 s elapsed, done",
    ]


def test_short_work_stays_quiet_and_iteration_works(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="crl_uiqa.progress"):
        got = list(progress(range(5), desc="fast", tty=False, interval=30, clock=clock))
    assert got == [0, 1, 2, 3, 4] and caplog.records == []


def test_disabled_shows_nothing_and_tty_gets_tqdm(caplog):
    from tqdm import tqdm

    with caplog.at_level(logging.INFO, logger="crl_uiqa.progress"):
        assert list(progress([1, 2], enabled=False)) == [1, 2]
        bar = progress(total=3, enabled=False)
        bar.update(3)
        bar.close()
    assert caplog.records == []
    bar = progress(total=2, desc="x", tty=True, disable=True)
    assert isinstance(bar, tqdm)
    bar.close()


def test_postfix_and_unknown_total(caplog):
    clock = Clock()
    p = LogProgress(desc="frames", unit="frame", interval=0, clock=clock)
    p.set_postfix(loss="0.1234")
    with caplog.at_level(logging.INFO, logger="crl_uiqa.progress"):
        clock.t += 5
        p.update(7)
        p.close()
        p.close()  # once only
    assert [r.getMessage() for r in caplog.records] == [
        "frames: 7 frame, 5 s elapsed [loss=0.1234]",
        "frames: 7 frame, 5 s elapsed, done [loss=0.1234]",
    ]


def test_reading_images_logs_progress_when_not_a_terminal(tmp_path, monkeypatch, caplog):
    import numpy as np

    from crl_uiqa.io import iter_batches, write_gray_png

    paths = [str(write_gray_png(tmp_path / f"{i}.png", np.full((8, 8), i / 10))) for i in range(6)]
    monkeypatch.setenv("CRL_UIQA_PROGRESS_SECONDS", "0")  # a line at every update
    with caplog.at_level(logging.INFO, logger="crl_uiqa.progress"):
        n = sum(len(b.indices) for b in iter_batches(paths, size=(8, 8), batch_size=4, num_workers=0,
                                                     progress="embedding"))
    assert n == 6
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("embedding: 4/6 img (67%), ") and "left" in lines[0]
    assert lines[-1].startswith("embedding: 6/6 img (100%), ") and lines[-1].endswith("done")


def test_training_logs_each_epoch_with_elapsed_and_eta(tmp_path, caplog):
    import numpy as np
    import torch

    from crl_uiqa.io import write_gray_png
    from crl_uiqa.model import ModelConfig
    from crl_uiqa.training import TrainConfig, train

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    paths = [str(write_gray_png(tmp_path / f"{i}.png", rng.random((24, 32)))) for i in range(6)]
    with caplog.at_level(logging.INFO, logger="crl_uiqa"):
        train(paths, np.linspace(0, 1, 6), config=TrainConfig(epochs=2, batch_size=4, val_fraction=0.34),
              model_config=ModelConfig(image_size=(24, 32)), num_workers=0, progress=True)
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 2
    assert epochs[0].startswith("epoch 1/2 ") and re.search(r"\(\d+ s elapsed, about \d+ s left\)$", epochs[0])
    assert epochs[1].startswith("epoch 2/2 ") and epochs[1].endswith("about 0 s left)")


def test_baselines_log_progress_when_not_a_terminal(monkeypatch, caplog):
    """BRISQUE, NIQE and MSSIM used their own tqdm bars, silent in a log file; they share the policy now."""
    import numpy as np

    from crl_uiqa.baselines import run_baseline

    rng = np.random.default_rng(0)
    imgs = [rng.random((200, 200)) for _ in range(3)]  # NIQE needs 96-px patches
    monkeypatch.setenv("CRL_UIQA_PROGRESS_SECONDS", "0")
    with caplog.at_level(logging.INFO, logger="crl_uiqa.progress"):
        for name in ("brisque", "niqe"):
            scores = run_baseline(name, imgs)
            assert np.isfinite(scores).all()
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("BRISQUE: 3/3 img (100%)") and m.endswith("done") for m in lines), lines
    assert any(m.startswith("NIQE: 3/3 img (100%)") and m.endswith("done") for m in lines), lines


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "inf"])
def test_a_bad_progress_interval_in_the_environment_is_refused_before_any_work(value, monkeypatch, tmp_path, capsys):
    """$CRL_UIQA_PROGRESS_SECONDS=abc fell back to 15 s and nan printed a line at every update, silently; like
    $CRL_UIQA_MAX_PIXELS it is now checked when a command starts, one line, exit 1, nothing written."""
    from crl_uiqa.cli import main
    from crl_uiqa.progress import log_interval

    monkeypatch.setenv("CRL_UIQA_PROGRESS_SECONDS", value)
    with pytest.raises(ValueError, match="CRL_UIQA_PROGRESS_SECONDS"):
        log_interval()
    out = tmp_path / "labels.csv"
    rc = main(["pseudo-label", "--images", str(tmp_path), "--references", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "CRL_UIQA_PROGRESS_SECONDS" in err and err.count("\n") == 1 and not out.exists()
    monkeypatch.setenv("CRL_UIQA_PROGRESS_SECONDS", " 2.5 ")
    assert log_interval() == 2.5
