"""What every command shares must agree: option defaults, messages for a missing model."""
from __future__ import annotations

import argparse

from crl_uiqa.cli import build_parser, main


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_device_default_is_the_same_in_every_command():
    defaults = {}
    for name, sub in _subparsers().items():
        for a in sub._actions:
            if "--device" in a.option_strings:
                defaults[name] = a.default
    assert {"demo", "fit", "score", "select", "live", "baseline", "compare"} <= set(defaults)
    assert set(defaults.values()) == {"auto"}, defaults


def test_score_with_no_model_folder_says_so(tmp_path, capsys):
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("L", (8, 8)).save(img)
    rc = main(["score", "--model", str(tmp_path / "norun"), "--images", str(img),
               "--out", str(tmp_path / "s.csv"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"no model at {tmp_path / 'norun'}" in err and "norun.json" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    main(["score", "--model", str(empty), "--images", str(img), "--out", str(tmp_path / "s.csv"), "--quiet"])
    err = capsys.readouterr().err
    assert f"no model at {empty}" in err and "model.safetensors" in err


def test_score_terminal_csv_and_report_agree(tmp_path, capsys):
    """What `score` prints (best, worst, median, the next command) matches its CSV and `report`'s page."""
    import csv
    import shlex

    import numpy as np
    from PIL import Image

    from _helpers import tiny_run

    folder = tmp_path / "my frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((40, 52)) * (60 + 40 * i)).astype(np.uint8)).save(folder / f"f{i}.png")
    out = tmp_path / "my scores.csv"
    rc = main(["score", "--model", str(tiny_run(tmp_path / "run")), "--images", str(folder), "--out", str(out),
               "--workers", "0", "--quiet"])
    printed = capsys.readouterr().out.splitlines()
    assert rc == 0
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    scores = np.array([float(r["score"]) for r in rows])
    hi, lo = rows[int(np.argmax(scores))], rows[int(np.argmin(scores))]
    assert printed[0] == f"wrote 5 scores to {out}"
    assert printed[1] == (f"highest {float(hi['score']):.3f} ({hi['path']}), lowest {float(lo['score']):.3f} "
                          f"({lo['path']}), median {np.median(scores):.3f}; higher = better")
    hint = printed[2].split(": ", 1)[1]
    assert hint == f"crl-uiqa report --scores {shlex.quote(str(out))} --out report.html"
    # the hinted command works as printed, and its page shows the same numbers
    args = shlex.split(hint)[1:]
    args[-1] = str(tmp_path / "report.html")
    assert main(args) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"<th>highest score (best image)</th><td>{float(hi['score']):.3f}  {hi['path']}</td>" in page
    assert f"<th>median score</th><td>{np.median(scores):.3f}</td>" in page
    assert "How to read the scores" in page
