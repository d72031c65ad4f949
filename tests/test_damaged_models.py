"""Models are data, checked when loaded (issue 12, items 2 and 6).

Each damaged model is made here from a small saved one: NaN weights, flipped
bytes, an edited image_size, truncated and random safetensors, JSON that is
not an object or not JSON, a missing model_config, and a model.json naming a
``python:module:function`` backbone (never imported without the explicit option).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from crl_uiqa import errors
from crl_uiqa.checkpoint import load_tensors, save_tensors
from crl_uiqa.cli import main
from crl_uiqa.errors import ModelError
from crl_uiqa.io import write_gray_png
from crl_uiqa.model import ModelConfig, build_model
from crl_uiqa.training import load_model, save_model

SIZE = (32, 40)


@pytest.fixture
def run(tmp_path) -> Path:
    torch.manual_seed(0)
    d = tmp_path / "run"
    save_model(build_model(ModelConfig(image_size=SIZE), pretrained=False).eval(), d)
    return d


@pytest.fixture
def images(tmp_path) -> list[str]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        p = tmp_path / "imgs" / f"{i}.png"
        write_gray_png(p, rng.uniform(0, 1, (36, 44)))
        out.append(str(p))
    return out


def _score(run, images, tmp_path, capsys) -> tuple[int, list[str]]:
    rc = main(["score", "--model", str(run), "--images", *images, "--out", str(tmp_path / "s.csv"), "--workers", "0",
               "--quiet", "--device", "cpu"])
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_intact_model_loads_and_scores(run, images, tmp_path, capsys):
    rc, err = _score(run, images, tmp_path, capsys)
    assert rc == 0 and not err and (tmp_path / "s.csv").exists()


def test_a_model_json_given_as_the_model_says_to_give_its_run(run, images, tmp_path, capsys):
    """`--model run/model.json` was read as a safetensors: "damaged ... header too large" (trial 4)."""
    rc, err = _score(run / "model.json", images, tmp_path, capsys)
    assert rc == errors.EXIT_USER and len(err) == 1, err
    assert f"{run / 'model.json'}: the JSON description of a model, not the model; give its run folder {run}" in err[0]
    with pytest.raises(ModelError, match="give its run folder"):
        load_model(run / "model.json")


def _rewrite_tensor(run: Path, fn) -> None:
    """Change one weight and re-save it with the *original* header (as a damaged copy would be)."""
    from safetensors import safe_open

    p = run / "model.safetensors"
    with safe_open(str(p), "pt") as fh:
        header = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    name = "fc.weight"
    tensors[name] = fn(tensors[name].clone())
    save_file(tensors, str(p), metadata=header)


def test_nan_weights_are_refused(run, images, tmp_path, capsys):
    _rewrite_tensor(run, lambda t: t.fill_(float("nan")))
    with pytest.raises(ModelError, match="NaN or inf|checksum"):
        load_model(run)


def test_nan_weights_with_a_matching_checksum_are_refused(tmp_path):
    """Even a model saved with NaN in it (a diverged run) does not load: no all-NaN score table."""
    m = build_model(ModelConfig(image_size=SIZE), pretrained=False)
    with torch.no_grad():
        m.fc.bias.fill_(float("inf"))
    save_model(m, tmp_path / "nan")
    with pytest.raises(ModelError, match="fc.bias holds NaN or inf"):
        load_model(tmp_path / "nan")


def test_flipped_bytes_fail_the_checksum(run, images, tmp_path, capsys):
    p = run / "model.safetensors"
    raw = bytearray(p.read_bytes())
    raw[-5] ^= 0x10  # one bit of the last weight
    p.write_bytes(bytes(raw))
    rc, err = _score(run, images, tmp_path, capsys)
    assert rc == errors.EXIT_USER and len(err) == 1 and "checksum mismatch" in err[0] and str(p) in err[0]
    assert not (tmp_path / "s.csv").exists()


def test_edited_image_size_is_refused(run, images, tmp_path, capsys):
    side = run / "model.json"
    meta = json.loads(side.read_text())
    meta["model_config"]["image_size"] = [64, 64]
    side.write_text(json.dumps(meta))
    rc, err = _score(run, images, tmp_path, capsys)
    assert rc == errors.EXIT_USER and len(err) == 1 and "model.json" in err[0] and "image_size" in err[0]


def test_edited_embedded_description_fails_the_checksum(run):
    from safetensors import safe_open

    p = run / "model.safetensors"
    with safe_open(str(p), "pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    header["crl_uiqa"] = header["crl_uiqa"].replace('"image_size": [32, 40]', '"image_size": [64, 64]')
    save_file(tensors, str(p), metadata=header)
    (run / "model.json").unlink()
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_model(run)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "header-only"])
def test_damaged_safetensors_are_one_line(run, images, tmp_path, capsys, damage):
    p = run / "model.safetensors"
    raw = p.read_bytes()
    data = {"truncated": raw[: len(raw) // 2], "random": os.urandom(4096), "empty": b"",
            "header-only": raw[:8]}[damage]
    p.write_bytes(data)
    rc, err = _score(run, images, tmp_path, capsys)
    assert rc == errors.EXIT_USER and len(err) == 1 and str(p) in err[0], err


@pytest.mark.parametrize("text, match", [
    ("[1, 2, 3]", "must hold a JSON object, found list"), ("{not json", "invalid JSON"), ('"x"', "found str"),
])
def test_bad_json_in_a_format_1_model_names_the_file(tmp_path, text, match):
    """Format 1 (description only in model.json): its JSON problems name the file."""
    d = tmp_path / "old"
    d.mkdir()
    save_file({"w": torch.zeros(2)}, str(d / "model.safetensors"))
    (d / "model.json").write_text(text)
    with pytest.raises(ModelError, match=match) as ei:
        load_model(d)
    assert str(d / "model.json") in str(ei.value)


def test_bad_json_beside_a_format_2_model_names_the_file(run):
    (run / "model.json").write_text("{oops")
    with pytest.raises(ModelError, match="invalid JSON") as ei:
        load_model(run)
    assert "model.json" in str(ei.value)


def test_deeply_nested_json_beside_a_model_is_one_line(run, images, tmp_path, capsys):
    """json's decoder recurses once per bracket: 100000 of them were a RecursionError, reported as a crl-uiqa bug."""
    (run / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelError, match="nested too deeply"):
        load_model(run)
    rc, err = _score(run, images, tmp_path, capsys)
    assert rc == errors.EXIT_USER and len(err) == 1 and str(run / "model.json") in err[0], err


def test_deeply_nested_embedded_description_is_a_damaged_model(tmp_path):
    d = tmp_path / "deep"
    d.mkdir()
    text = "[" * 100_000 + "]" * 100_000
    save_file({"w": torch.zeros(2)}, str(d / "model.safetensors"), metadata={"crl_uiqa": text})
    with pytest.raises(ModelError, match="not valid JSON"):
        load_tensors(d / "model.safetensors")


def test_missing_model_config_is_one_line(tmp_path, images, capsys):
    d = tmp_path / "nocfg"
    save_tensors(d / "model.safetensors", {"w": torch.zeros(2)}, {"history": []})
    rc, err = _score(d, images, tmp_path, capsys)
    assert rc == errors.EXIT_USER and len(err) == 1 and "no model_config" in err[0]


def test_model_config_with_wrong_values_is_one_line(tmp_path):
    d = tmp_path / "badcfg"
    save_tensors(d / "model.safetensors", {"w": torch.zeros(2)}, {"model_config": {"image_size": [0, 0]}})
    with pytest.raises(ModelError, match="invalid model_config.*image-size"):
        load_model(d)


@pytest.mark.parametrize("edit, match", [
    ({"proj_channels": 10**9}, "proj_channels must be <= 4096"),
    ({"head": "anchored", "anchor": {"layer": "block4", "k": 2, "n_references": 10**9, "dim": 64}}, "more than"),
    ({"head": "anchored", "anchor": {"layer": "block4", "k": 2, "n_references": 4, "dim": 10**8}}, "more than"),
    ({"head": "anchored", "anchor": {"layer": "block4", "k": "abc", "n_references": 4, "dim": 64}}, "anchor k must"),
    ({"head": "anchored", "anchor": {"layer": "block4", "k": None, "n_references": 4, "dim": 64}}, "anchor k must"),
    ({"head": "anchored", "anchor": {"layer": "block4", "k": 2.7, "n_references": 4, "dim": 64}}, "anchor k must"),
    ({"head": "anchored", "anchor": {"layer": "block4", "k": 2, "n_references": 4, "dim": 64, "smoothing": "no"}},
     "anchor smoothing"),
])
def test_model_config_sizes_and_anchor_values_are_checked_before_building(tmp_path, images, capsys, edit, match):
    """A description with a valid checksum (or a format-1 sidecar, which has none) is still data: sizes that would
    allocate hundreds of GB before the tensors are compared, and anchor values int() cannot read, were exit 3
    (trial 8: 'can't allocate memory: you tried to allocate 512000000000 bytes', 'invalid literal for int()')."""
    d = tmp_path / "edited"
    save_tensors(d / "model.safetensors", {"w": torch.zeros(2)}, {"model_config": {"image_size": list(SIZE), **edit}})
    rc, err = _score(d, images, tmp_path, capsys)
    assert rc == errors.EXIT_USER and len(err) == 1 and "invalid model_config" in err[0] and match in err[0]


def test_a_foreign_safetensors_is_refused(tmp_path):
    d = tmp_path / "foreign"
    d.mkdir()
    save_file({"w": torch.zeros(2)}, str(d / "model.safetensors"))
    with pytest.raises(ModelError, match="no crl-uiqa description"):
        load_model(d)


PLUGIN_MODULE = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")

def build(weights=None):
    from crl_uiqa.backbones import smallnet
    return smallnet(pretrained=False)
'''


def test_model_files_never_import_code(run, images, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "ran.txt"
    (tmp_path / "evil_backbone.py").write_text(PLUGIN_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    # a model whose description names the plug-in, with a valid checksum (as an attacker would make it)
    m = build_model(ModelConfig(backbone="smallnet", image_size=(40, 48)), pretrained=False)
    m.config.backbone = "python:evil_backbone:build"
    save_model(m, tmp_path / "evil")
    rc, err = _score(tmp_path / "evil", images, tmp_path, capsys)
    assert rc == errors.EXIT_USER and len(err) == 1 and "--allow-plugin-backbones" in err[0]
    assert not marker.exists() and "evil_backbone" not in sys.modules
    # the explicit option loads it
    rc = main(["--allow-plugin-backbones", "score", "--model", str(tmp_path / "evil"), "--images", *images, "--out",
               str(tmp_path / "s.csv"), "--workers", "0", "--quiet", "--device", "cpu"])
    assert rc == 0 and marker.exists()
    # and the permission does not outlive the command
    from crl_uiqa.backbones import plugins_allowed

    main(["score", "--model", str(run), "--images", *images, "--out", str(tmp_path / "t.csv"), "--workers", "0",
          "--quiet"])
    assert not plugins_allowed()


def test_checkpoint_description_and_checksum_live_in_one_file(tmp_path):
    p = save_tensors(tmp_path / "c.safetensors", {"a": torch.arange(6.0)}, {"epoch": 3})
    (tmp_path / "c.json").unlink()  # the readable copy is not needed
    tensors, meta = load_tensors(p)
    assert meta["epoch"] == 3 and meta["format_version"] == 2 and torch.equal(tensors["a"], torch.arange(6.0))


def test_a_run_folder_with_only_its_checkpoint_says_how_to_write_its_model(tmp_path):
    """A finished run whose model.safetensors was removed was called 'unfinished'; either way --resume writes it."""
    from crl_uiqa.model import load_model

    (tmp_path / "last.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="only the checkpoint last.safetensors .* write its model with --resume"):
        load_model(tmp_path)
