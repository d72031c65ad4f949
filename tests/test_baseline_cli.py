"""The baseline registry and the ``crl-uiqa baseline`` command."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from crl_uiqa import baselines
from crl_uiqa.baselines import BASELINES, BaselineSpec, get_baseline, get_spec, run_baseline
from crl_uiqa.baselines.mssim import mssim_score
from crl_uiqa.cli import main
from crl_uiqa.commands.baseline import parse_options
from crl_uiqa.files import read_csv
from crl_uiqa.io import read_gray, write_gray_png

torch.set_num_threads(1)


def _pngs(folder, n, seed, shape=(120, 150)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    paths = []
    for i in range(n):
        img = 100 + 60 * np.sin(xx / (8 + i)) * np.cos(yy / 11) + rng.normal(0, 5 + 10 * i, shape)
        p = folder / f"img{i}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(p)
        paths.append(str(p))
    return paths


# ----------------------------------------------------------------------------- registry
def test_registry_contents_and_lookup():
    assert {"brisque", "niqe", "niqe-ref", "mssim"} <= set(BASELINES)
    assert get_baseline("MSSIM") is mssim_score
    assert get_spec("mssim").references == "required" and get_spec("brisque").references == "none"
    with pytest.raises(ValueError, match="unknown baseline 'ssim'; valid names: brisque, mssim, niqe, niqe-ref"):
        get_baseline("ssim")


def test_run_baseline_checks_declarations():
    rng = np.random.default_rng(0)
    imgs = [rng.random((40, 50)).astype(np.float32) for _ in range(3)]
    np.testing.assert_allclose(
        run_baseline("mssim", imgs, references=imgs[:2], reduction="max", size=None),
        mssim_score(imgs, imgs[:2], reduction="max", size=None),
    )
    with pytest.raises(ValueError, match="'mssim' needs reference images"):
        run_baseline("mssim", imgs)
    with pytest.raises(ValueError, match="'brisque' does not use reference images"):
        run_baseline("brisque", imgs, references=imgs)
    with pytest.raises(ValueError, match="'niqe' does not use a model file"):
        run_baseline("niqe", imgs, weights="w.pt")
    with pytest.raises(ValueError, match="has no option window; its options: reduction, size"):
        run_baseline("mssim", imgs, references=imgs, window=7)


def test_registering_a_method_that_takes_weights_and_device(monkeypatch):
    calls = {}

    def fake(images, weights=None, device=None, scale=1.0):
        calls.update(weights=weights, device=device, scale=scale)
        return np.arange(len(images), dtype=float) * scale

    monkeypatch.setattr(baselines, "SPECS", dict(baselines.SPECS))
    monkeypatch.setattr(baselines, "BASELINES", dict(baselines.BASELINES))
    baselines.register_baseline("toy", BaselineSpec(fake, "toy", weights="optional", device=True))
    out = run_baseline("toy", [np.zeros((4, 4))] * 3, weights="m.pt", device="cpu", scale=2.0)
    assert out.tolist() == [0.0, 2.0, 4.0] and calls == {"weights": "m.pt", "device": "cpu", "scale": 2.0}
    with pytest.raises(ValueError, match="lower case"):
        baselines.register_baseline("Toy Method", BaselineSpec(fake, "toy"))
    with pytest.raises(ValueError, match="references must be one of"):
        BaselineSpec(fake, "toy", references="yes")


def test_parse_options():
    assert parse_options(["reduction=max", "size=[224, 288]", "patch-size=64", "flag=true"]) == {
        "reduction": "max", "size": (224, 288), "patch_size": 64, "flag": True}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["reduction"])


# ----------------------------------------------------------------------------- command
def test_cli_mssim_writes_path_score(tmp_path, capsys):
    imgs = _pngs(tmp_path / "imgs", 3, seed=0)
    refs = _pngs(tmp_path / "refs", 2, seed=1)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "scores.csv"
    rc = main(["baseline", "mssim", "--images", str(tmp_path / "imgs"), "--references", str(tmp_path / "refs"),
               "--option", "reduction=max", "--out", str(out)])
    assert rc == 0
    rows = read_csv(out)
    assert [r["path"] for r in rows] == imgs  # the unreadable file is skipped...
    want = mssim_score([read_gray(p) for p in imgs], [read_gray(p) for p in refs], reduction="max")
    np.testing.assert_allclose([float(r["score"]) for r in rows], want, rtol=1e-12)
    assert "broken.png" in capsys.readouterr().err  # ...and listed
    assert read_csv(str(out) + ".skipped.csv")[0]["path"].endswith("broken.png")


def test_cli_errors_name_the_file(tmp_path, capsys):
    imgs = _pngs(tmp_path / "imgs", 2, seed=0, shape=(120, 150))
    big = _pngs(tmp_path / "big", 2, seed=0, shape=(200, 200))
    out = tmp_path / "s.csv"
    assert main(["baseline", "niqe-ref", "--images", big[0], imgs[1], "--references", *big, "--out", str(out)]) == 1
    assert f"error: {imgs[1]}: NIQE needs at least two 96x96 patches" in capsys.readouterr().err
    assert main(["baseline", "niqe-ref", "--images", *big, "--references", big[0], imgs[0], "--out", str(out)]) == 1
    assert f"error: {imgs[0]}: NIQE needs at least two 96x96 patches" in capsys.readouterr().err
    assert main(["baseline", "niqe-ref", "--images", *imgs, "--references", *imgs, "--option", "patch_size=48",
                 "--option", "sharpness=0", "--out", str(out)]) == 0
    assert len(read_csv(out)) == 2
    out.unlink()
    assert main(["baseline", "mssim", "--images", imgs[0], "--out", str(out)]) == 1
    assert "needs --references" in capsys.readouterr().err
    assert main(["baseline", "nope", "--images", imgs[0], "--out", str(out)]) == 1
    assert "valid names: brisque, mssim, niqe, niqe-ref" in capsys.readouterr().err
    assert not out.exists()


def test_cli_list(capsys):
    assert main(["baseline", "--list"]) == 0
    text = capsys.readouterr().out
    assert "niqe-ref" in text and "references: required" in text


def test_cli_brisque_matches_function(tmp_path):
    imgs = _pngs(tmp_path / "imgs", 2, seed=3)
    out = tmp_path / "b.csv"
    assert main(["baseline", "brisque", "--images", *imgs, "--out", str(out), "--crop", "10", "10", "100", "120"]) == 0
    got = [float(r["score"]) for r in read_csv(out)]
    want = baselines.brisque_score([read_gray(p, (10, 10, 100, 120)) for p in imgs])
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("method", ["brisque", "niqe"])
def test_cli_skips_and_lists_a_blank_frame_the_method_is_undefined_on(tmp_path, capsys, method):
    """One blank frame in a pool stopped the whole BRISQUE/NIQE run ("constant image; ... undefined"); it is now
    skipped and listed like an unreadable file, the others scored as alone; with --strict it still stops."""
    imgs = _pngs(tmp_path / "imgs", 2, seed=3, shape=(200, 220))
    blank = tmp_path / "imgs" / "blank.png"
    write_gray_png(blank, np.full((200, 220), 0.0))
    out = tmp_path / "b.csv"
    assert main(["baseline", method, "--images", str(tmp_path / "imgs"), "--out", str(out)]) == 0
    rows = read_csv(out)
    assert [r["path"] for r in rows] == imgs
    want = baselines.run_baseline(method, [read_gray(p) for p in imgs])
    np.testing.assert_allclose([float(r["score"]) for r in rows], want, rtol=1e-12)
    skipped = read_csv(str(out) + ".skipped.csv")
    assert skipped[0]["path"] == str(blank) and "constant image" in skipped[0]["reason"]
    capsys.readouterr()
    assert main(["baseline", method, "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "s.csv"),
                 "--strict"]) == 1
    assert "constant image" in capsys.readouterr().err


def test_run_baseline_takes_one_array_or_a_stack_and_raises_crl_uiqa_errors():
    """One (H, W) array is one image, as the methods themselves take it (run_baseline counted its rows and raised
    'returned shape (1,) for 40 images'); bad names and inputs are CRLUIQAErrors (still ValueError)."""
    from crl_uiqa.errors import ConfigError, InputError

    rng = np.random.default_rng(0)
    imgs = [rng.random((40, 50)).astype(np.float32) for _ in range(2)]
    both = run_baseline("mssim", imgs, references=imgs[:1])
    np.testing.assert_allclose(run_baseline("mssim", imgs[1], references=imgs[:1]), both[1:], atol=1e-12)
    np.testing.assert_allclose(run_baseline("mssim", np.stack(imgs), references=imgs[0]), both, atol=1e-12)
    with pytest.raises(ConfigError, match="unknown baseline"):
        run_baseline("ssim", imgs)
    with pytest.raises(ConfigError, match="needs reference images"):
        run_baseline("mssim", imgs)
    with pytest.raises(InputError, match=r"images\[0\]: values must lie in \[0, 1\]"):
        run_baseline("brisque", [imgs[0] * 255])
    with pytest.raises(InputError, match="empty"):
        run_baseline("brisque", [])


def test_an_option_value_nested_too_deeply_for_json_is_kept_as_text():
    """json.loads recursed past Python's limit on ``--option size=[[[[...`` (a RecursionError, reported as a bug);
    such a value is kept as the text given, which the method then refuses as it refuses any wrong value."""
    deep = "[" * 100_000 + "]" * 100_000
    assert parse_options([f"size={deep}"]) == {"size": deep}
