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
