"""The SonoNet-16 and SmallNet weights shipped inside the package (crl_uiqa/backbones/weights/).

Needs no shared data: the files are part of the install. Where the published ``.npz`` files are
present (../shared), the packaged copies must give exactly the same arrays and outputs.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from crl_uiqa import weights
from crl_uiqa.backbones import CLASS_NAMES, get_backbone
from crl_uiqa.backbones.sononet import SmallNet, SonoNet, _read_lasagne, smallnet, sononet16
from crl_uiqa.weights import PACKAGED_DIR, PACKAGED_WEIGHTS, packaged_weights, resolve_weights

torch.set_num_threads(1)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(weights.ENV_DIR, raising=False)


@pytest.mark.parametrize("name", ["SonoNet16.npz", "SmallNet.npz"])
def test_packaged_files_are_installed_and_intact(name):
    shipped, sha = PACKAGED_WEIGHTS[name]
    path = PACKAGED_DIR / shipped
    assert path.is_file(), f"{path} missing: is package data installed?"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert 0.5e6 < path.stat().st_size < 5e6  # a few MB
    licence = (PACKAGED_DIR / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0" in licence
    notice = (PACKAGED_DIR / "README.md").read_text(encoding="utf-8")
    assert "Baumgartner" in notice and "Apache-2.0" in notice and shipped in notice


def test_resolution_order_package_after_explicit_and_env(no_env, tmp_path, monkeypatch):
    # nothing given: the packaged copy, offline
    assert resolve_weights("SonoNet16.npz") == PACKAGED_DIR / "SonoNet16.safetensors"
    assert resolve_weights("SmallNet.npz", download=False) == PACKAGED_DIR / "SmallNet.safetensors"
    # --weights and $CRL_UIQA_WEIGHTS_DIR still come first
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "SonoNet16.npz").write_bytes(b"x")
    assert resolve_weights("SonoNet16.npz", mine) == mine / "SonoNet16.npz"
    monkeypatch.setenv(weights.ENV_DIR, str(mine))
    assert resolve_weights("SonoNet16.npz") == mine / "SonoNet16.npz"


def test_damaged_packaged_file_is_refused(no_env, tmp_path, monkeypatch, caplog):
    bad = tmp_path / "pkg"
    bad.mkdir()
    data = bytearray((PACKAGED_DIR / "SmallNet.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in a weight
    (bad / "SmallNet.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(weights, "PACKAGED_DIR", bad)
    assert packaged_weights("SmallNet.npz") is None
    assert "damaged" in caplog.text and "reinstall" in caplog.text
    with pytest.raises(FileNotFoundError, match="missing or damaged"):
        resolve_weights("SmallNet.npz")
    assert packaged_weights("SonoNet16.npz") is None  # absent: no warning needed, just not there


def test_packaged_sononet16_forward_pass(no_env):
    net = sononet16()  # no path, no network: the packaged weights
    assert isinstance(net, SonoNet)
    ref = SonoNet(16)  # random init: the packaged weights must have replaced it
    assert not torch.equal(net.blocks[0][0][0].weight, ref.blocks[0][0][0].weight)
    # batch norm running variance was restored from Lasagne's inverse std: positive, finite
    var = net.blocks[0][0][1].running_var
    assert torch.isfinite(var).all() and (var > 0).all()
    x = torch.rand(2, 1, 224, 288, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits = net(x)
        emb = net.embed(x, "block4")
    assert logits.shape == (2, len(CLASS_NAMES)) and torch.isfinite(logits).all()
    assert emb.shape == (2, 128) and torch.isfinite(emb).all()
    assert logits.std() > 0.1  # a trained classifier is not flat on noise


def test_packaged_smallnet_forward_pass_and_backbone_registry(no_env):
    net = smallnet()
    assert isinstance(net, SmallNet)
    with torch.inference_mode():
        out = net(torch.rand(1, 1, 224, 288, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (1, 14) and torch.isfinite(out).all()
    trunk = get_backbone("sononet16")  # what fit / select --plane use when no --weights is given
    assert torch.equal(trunk.blocks[0][0][0].weight, sononet16().blocks[0][0][0].weight)


def test_packaged_safetensors_given_with_weights_loads_as_lasagne(no_env):
    # --weights pointing at the shipped file (or a copy of it) loads it as the published model
    net = sononet16(PACKAGED_DIR / "SonoNet16.safetensors")
    assert torch.equal(net.blocks[0][0][0].weight, sononet16().blocks[0][0][0].weight)


@pytest.mark.parametrize("name", ["SonoNet16.npz", "SmallNet.npz"])
def test_packaged_arrays_equal_the_published_npz(name, sononet16_path):
    npz = sononet16_path.parent / name
    if not npz.is_file():
        pytest.skip(f"{npz} absent")
    ours = _read_lasagne(PACKAGED_DIR / PACKAGED_WEIGHTS[name][0])
    theirs = _read_lasagne(npz)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):  # a lossless copy: bit-identical arrays
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    # the same arrays through the same code on one machine: the same outputs, bit for bit
    x = torch.rand(2, 1, 224, 288, generator=torch.Generator().manual_seed(2))
    build = sononet16 if name.startswith("SonoNet") else smallnet
    with torch.inference_mode():
        assert torch.equal(build(npz)(x), build()(x))


def test_packaged_sononet16_classifies_13_of_13_examples(no_env, examples_dir):
    from crl_uiqa.classify import classify_images, plane_index

    res = classify_images(examples_dir, backbone=get_backbone("sononet16"), crop=(115, 81, 620, 794),
                          device="cpu", num_workers=0, progress=False, batch_size=13)
    assert len(res.paths) == 13 and not res.failures
    for p, plane in zip(res.paths, res.planes):
        stem = p.rsplit("/", 1)[-1].removesuffix(".png")
        assert plane == CLASS_NAMES[plane_index(stem)], stem


def test_pyproject_ships_the_weight_files():
    """A wheel or a non-editable install carries the files only if package-data names them."""
    import fnmatch
    import sys
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")  # tomli: pytest's, on 3.10

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = globs["crl_uiqa.backbones"]
    for f in ("SonoNet16.safetensors", "SmallNet.safetensors", "LICENSE", "README.md"):
        assert any(fnmatch.fnmatch(f"weights/{f}", g) for g in globs), f
