"""Tests for crl_uiqa.export and `crl-uiqa export`: ONNX / TorchScript export, checks and runtimes."""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from crl_uiqa.cli import main
from crl_uiqa.export import (
    ExportCheckError,
    OnnxRuntime,
    TorchRuntime,
    TorchScriptRuntime,
    compare_scores,
    default_export_path,
    export_model,
    format_from_path,
    load_runtime,
)
from crl_uiqa.model import ModelConfig, build_model
from crl_uiqa.training import load_model, save_model

torch.set_num_threads(1)
SIZE = (48, 64)
ATOL = 1e-4


def spread_model(seed: int):
    """A random-weight model whose scores vary across inputs like a trained model's.

    A freshly initialised deep net maps every input to almost the same score
    (activations shrink layer by layer), which would make a 1e-4 comparison
    meaningless. He-initialised convolutions and batch-norm statistics
    measured on random images (as training would set them) keep the
    activations at unit scale, so scores differ by ~0.1-1 between images.
    """
    torch.manual_seed(seed)
    m = build_model(ModelConfig(image_size=SIZE), pretrained=False).eval()
    g = torch.Generator().manual_seed(seed)
    bns = []
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu", generator=g)
            elif isinstance(mod, torch.nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None  # cumulative average
                mod.train()
                bns.append(mod)
        for _ in range(4):
            x = torch.rand(16, 1, *SIZE, generator=g) * torch.rand(16, 1, 1, 1, generator=g)
            m(x)
        for mod in bns:
            mod.eval()
    return m


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    save_model(spread_model(0), run)
    return run


@pytest.fixture(scope="module")
def onnx_export(run_dir):
    return export_model(run_dir, default_export_path(run_dir, "onnx"))


def real_images():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:90, 0:120]
    fan = np.hypot(y, x - 60) < 85
    return [np.where(fan, rng.rayleigh(0.15 * (k + 1), (90, 120)), 0).clip(0, 1).astype(np.float32) for k in range(4)]


def test_spread_model_scores_vary(run_dir):
    model, _ = load_model(run_dir)
    with torch.inference_mode():
        s = model(torch.rand(8, 1, *SIZE) * torch.linspace(0.1, 1, 8).view(-1, 1, 1, 1)).numpy()
    assert s.std() > 0.02  # scores differ by far more than the 1e-4 tolerance


def test_onnx_export_matches_pytorch(run_dir, onnx_export):
    res = onnx_export
    assert res.path == run_dir / "model.onnx" and res.path.is_file()
    assert res.format == "onnx" and res.image_size == SIZE and res.exporter in ("dynamo", "legacy")
    assert res.max_abs_diff is not None and res.max_abs_diff <= ATOL and res.n_checked == 6
    model, _ = load_model(run_dir)
    rt = load_runtime(res.path, "onnx")
    assert isinstance(rt, OnnxRuntime) and rt.image_size == SIZE and rt.threads >= 1
    import onnxruntime as ort

    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "images" and inp.shape[1:] == [1, *SIZE] and not isinstance(inp.shape[0], int)
    assert out.name == "scores" and len(out.shape) == 1
    # dynamic batch axis, random and real images
    for b in (1, 3, 7):
        x = torch.rand(b, 1, *SIZE, generator=torch.Generator().manual_seed(b))
        with torch.inference_mode():
            ref = model(x).numpy()
        got = rt(x)
        assert got.shape == (b,) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)
        np.testing.assert_allclose(rt(x.numpy()), ref, atol=ATOL, rtol=0)  # numpy input too
    diff, n = compare_scores(model, rt, n_random=0, images=real_images())
    assert n == 4 and diff <= ATOL
    assert rt.meta["source_sha256"] and rt.meta["model_config"]["image_size"] == list(SIZE)
    with pytest.raises(ValueError, match=r"expected a batch \(B, 1, 48, 64\)"):
        rt(torch.rand(2, 1, 32, 32))


def test_legacy_onnx_exporter_matches_pytorch(run_dir, tmp_path):
    res = export_model(run_dir, tmp_path / "legacy.onnx", exporter="legacy", check_images=real_images())
    assert res.exporter == "legacy" and res.max_abs_diff <= ATOL and res.n_checked == 10
    rt = load_runtime(res.path, "onnx")
    x = torch.rand(5, 1, *SIZE, generator=torch.Generator().manual_seed(7))
    model, _ = load_model(run_dir)
    with torch.inference_mode():
        np.testing.assert_allclose(rt(x), model(x).numpy(), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="exporter must be"):
        export_model(run_dir, tmp_path / "x.onnx", exporter="tf2onnx")


def test_torchscript_export_matches_pytorch(run_dir, tmp_path):
    out = tmp_path / "scorer.pt"
    res = export_model(run_dir, out, check_images=real_images())
    assert res.format == "torchscript" and res.exporter == "trace"
    assert res.max_abs_diff <= ATOL and res.n_checked == 10
    model, _ = load_model(run_dir)
    rt = load_runtime(out, "auto")
    assert isinstance(rt, TorchScriptRuntime) and rt.image_size == SIZE
    for b in (1, 5):
        x = torch.rand(b, 1, *SIZE, generator=torch.Generator().manual_seed(10 + b))
        with torch.inference_mode():
            ref = model(x).numpy()
        np.testing.assert_allclose(rt(x), ref, atol=ATOL, rtol=0)
    # the plain (unoptimised) module loads with torch.jit alone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        plain = torch.jit.load(str(out))
    with torch.inference_mode():
        np.testing.assert_allclose(plain(x).numpy(), ref, atol=ATOL, rtol=0)


def test_runtime_selection_and_cached_exports(run_dir, onnx_export, tmp_path):
    assert isinstance(load_runtime(run_dir, "torch"), TorchRuntime)
    assert isinstance(load_runtime(run_dir, "auto"), TorchRuntime)
    assert isinstance(load_runtime(onnx_export.path, "auto"), OnnxRuntime)
    # a run directory uses its up-to-date export
    rt = load_runtime(run_dir, "onnx")
    assert rt.source == str(onnx_export.path)
    # a stale export (the weights changed since) is not used: a fresh one is made from the new weights
    run2 = tmp_path / "run2"
    save_model(spread_model(0), run2)
    (run2 / "model.onnx").write_bytes(onnx_export.path.read_bytes())
    save_model(spread_model(5), run2)
    new_model, _ = load_model(run2)
    rt2 = load_runtime(run2, "onnx")
    assert rt2.source != str(run2 / "model.onnx")
    x = torch.rand(3, 1, *SIZE, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        np.testing.assert_allclose(rt2(x), new_model(x).numpy(), atol=ATOL, rtol=0)
    # an in-memory model through TorchScript
    rt3 = load_runtime(new_model, "torchscript")
    with torch.inference_mode():
        np.testing.assert_allclose(rt3(x), new_model(x).numpy(), atol=ATOL, rtol=0)
    # a mismatched runtime is caught by the comparison
    diff, _ = compare_scores(new_model, load_runtime(run_dir, "torch"), n_random=4)
    assert diff > 1e-2


def test_runtime_errors(run_dir, onnx_export, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_runtime(run_dir, "tensorrt")
    with pytest.raises(ValueError, match="is a onnx export; it cannot run with the torchscript runtime"):
        load_runtime(onnx_export.path, "torchscript")
    with pytest.raises(FileNotFoundError, match="no model at"):
        load_runtime(tmp_path / "nothing", "torch")
    with pytest.raises(ValueError, match="cannot tell the export format"):
        format_from_path("model.bin")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.onnx: not a readable ONNX model"):
        load_runtime(bad, "onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ValueError, match="pip install onnxruntime"):
        load_runtime(onnx_export.path, "onnx")
    with pytest.raises(ValueError, match="pip install onnxruntime"):
        load_runtime(run_dir, "onnx")


def test_runtimes_refuse_batches_that_are_not_0_to_1_floats(run_dir, onnx_export):
    # every engine casts to float32: a uint8 frame or 0-255 floats were scored as intensities up to 255
    pytest.importorskip("onnxruntime")
    x = np.random.default_rng(0).random((3, 1, *SIZE)).astype(np.float32)
    for rt in (load_runtime(run_dir, "torch"), load_runtime(onnx_export.path, "onnx")):
        ref = rt(x)
        np.testing.assert_allclose(rt(torch.from_numpy(x)), ref, atol=ATOL)  # tensors too
        np.testing.assert_allclose(rt(x.astype(np.float64)), ref, atol=ATOL)
        assert rt(x[:0]).shape == (0,)
        with pytest.raises(ValueError, match="expected a float batch in \\[0, 1\\], got uint8"):
            rt(np.round(x * 255).astype(np.uint8))
        with pytest.raises(ValueError, match="got values from .* to 25[0-9]"):
            rt(x * 255)
        with pytest.raises(ValueError, match="not finite"):
            rt(np.where(x > 0.5, np.nan, x).astype(np.float32))


def test_an_export_given_where_a_trained_model_is_needed_is_named_as_such(onnx_export, tmp_path, capsys):
    # `export --model run/model.onnx` and `score --model run/model.onnx` said "damaged or not a safetensors file"
    from crl_uiqa.errors import ModelError

    with pytest.raises(ModelError, match="model.onnx: an exported model .ONNX/TorchScript., not a trained one"):
        load_model(onnx_export.path)
    rc = main(["export", "--model", str(onnx_export.path), "--out", str(tmp_path / "again.onnx")])
    err = capsys.readouterr().err
    assert rc == 1 and "not a trained one: give the run directory" in err and "damaged" not in err
    junk = tmp_path / "junk.safetensors"  # a damaged trained model is still called damaged
    junk.write_bytes(onnx_export.path.read_bytes())
    with pytest.raises(ModelError, match="damaged or not a safetensors file"):
        load_model(junk)


def test_export_check_failure_writes_nothing(tmp_path):
    # Scores of magnitude ~1e6: float32 rounding differences between engines exceed an atol of 1e-4.
    model = spread_model(1)
    with torch.no_grad():
        model.fc.weight.mul_(1e6)
        model.fc.bias.fill_(1e6)
    out = tmp_path / "m.pt"
    with pytest.raises(ExportCheckError, match="differ from PyTorch's by up to") as info:
        export_model(model, out)
    from crl_uiqa.errors import CRLUIQAError

    assert isinstance(info.value, CRLUIQAError) and isinstance(info.value, ValueError)  # one line at the CLI
    assert not out.exists() and not list(tmp_path.iterdir())
    res = export_model(model, out, atol=10.0)  # a tolerance that fits the scale passes
    assert 0 < res.max_abs_diff <= 10.0 and out.is_file()


def test_cli_export_bounds_the_check_images_before_reading_them(tmp_path, capsys):
    # they are held at once and scored as one batch (validate.MAX_BATCH); checked before the model or any image
    rc = main(["export", "--model", str(tmp_path / "missing"), "--check-images", str(tmp_path / "none"),
               "--max-check-images", "100000000"])
    assert rc == 1
    assert capsys.readouterr().err.strip() == ("crl-uiqa export: error: max_check_images (--max-check-images) must be "
                                               "<= 4096, got 100000000")


def test_cli_export(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    assert main(["export", "--model", str(run_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "torchscript" in text and "max |torchscript - pytorch|" in text and "OK" in text
    assert out.is_file()
    assert main(["export", "--model", str(run_dir), "--out", str(tmp_path / "x.bin")]) == 1
    assert "cannot tell the export format" in capsys.readouterr().err


def test_select_scores_match_across_runtimes(run_dir, onnx_export, tmp_path):
    av = pytest.importorskip("av")
    from crl_uiqa.select import select_frames

    path = tmp_path / "clip.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
    rng = np.random.default_rng(0)
    for i in range(12):
        img = (rng.rayleigh(30 + 8 * i, (96, 128))).clip(0, 255).astype(np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="gray")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    export_model(run_dir, default_export_path(run_dir, "torchscript"))
    results = {kind: select_frames(run_dir, path, runtime=kind, region="none", batch_size=5)
               for kind in ("torch", "torchscript", "onnx")}
    assert results["onnx"].runtime == "onnx" and results["torchscript"].runtime == "torchscript"
    ref = results["torch"].quality
    assert ref.std() > 1e-3
    for kind in ("torchscript", "onnx"):
        np.testing.assert_allclose(results[kind].quality, ref, atol=ATOL, rtol=0)
        assert results[kind].best.frame == results["torch"].best.frame


# ----------------------------------------------------------------------------- bad settings, fallback, format
def test_bad_opset_and_atol_are_refused_before_any_work(tmp_path, capsys):
    from crl_uiqa.errors import ConfigError
    from crl_uiqa.export import check_opset, opset_range

    lo, hi = opset_range("legacy")
    dlo, dhi = opset_range("dynamo")
    assert 1 <= lo <= hi and dlo == lo and (dhi is None or dhi >= hi)
    assert check_opset(None) is None and check_opset(hi) == hi and check_opset(lo, "legacy") == lo
    nowhere = tmp_path / "nowhere"  # no model: a ConfigError, not a missing model, shows nothing was loaded first
    for opset in (0, -3, lo - 1, hi + 1, 2.5, True):
        with pytest.raises(ConfigError, match=rf"opset \(--opset\) must be an integer from {lo} to {hi}"):
            export_model(nowhere, tmp_path / "x.onnx", opset=opset)
    for atol in (float("nan"), -1.0, 0.0, float("inf")):
        with pytest.raises(ConfigError, match=r"atol \(--atol\) must be a finite number > 0"):
            export_model(nowhere, tmp_path / "x.onnx", atol=atol)
    # --max-check-images 0 used none of --check-images, and the check said OK over random images (trial 4)
    for extra in (["--opset", "0"], ["--atol", "nan"], ["--atol", "-1"], ["--max-check-images", "0"],
                  ["--check-images", str(nowhere), "--max-check-images", "-2"]):
        assert main(["export", "--model", str(nowhere), "--out", str(tmp_path / "x.onnx"), *extra]) == 1
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and any(o in err[0] for o in ("opset", "atol", "(--max-check-images) must be >= 1")), err
    assert not list(tmp_path.iterdir())


def test_highest_legacy_opset_is_written(run_dir, tmp_path):
    import onnx

    from crl_uiqa.export import opset_range

    hi = opset_range("legacy")[1]
    res = export_model(run_dir, tmp_path / "hi.onnx", exporter="legacy", opset=hi)
    assert res.max_abs_diff <= ATOL
    assert {o.version for o in onnx.load(str(res.path)).opset_import if o.domain in ("", "ai.onnx")} == {hi}


class _Branchy(type(spread_model(0))):
    """A model with a data-dependent branch, which torch.export cannot trace (like the anchored head's)."""

    def forward(self, x):
        s = super().forward(x)
        return s if float(s.sum()) > -1e30 else -s


def test_failed_dynamo_attempt_is_quiet_and_falls_back_to_legacy(tmp_path, capfd, caplog):
    import importlib.util
    import logging

    model = spread_model(2)
    model.__class__ = _Branchy
    caplog.set_level(logging.INFO, logger="crl_uiqa.export")
    res = export_model(model, tmp_path / "b.onnx")
    assert res.exporter == "legacy" and res.max_abs_diff <= ATOL
    out, err = capfd.readouterr()
    assert len((out + err).splitlines()) <= 2, (out + err)[:2000]  # was ~320 lines: the FX graph, the failure
    if importlib.util.find_spec("onnxscript") is not None:
        said = [r.getMessage() for r in caplog.records if "dynamo ONNX exporter" in r.getMessage()]
        assert len(said) == 1 and "using the legacy exporter" in said[0] and "\n" not in said[0]
        assert [r.levelno for r in caplog.records if "dynamo ONNX exporter" in r.getMessage()] == [logging.INFO]
        with pytest.raises(ValueError, match="the dynamo ONNX exporter failed") as info:
            export_model(model, tmp_path / "d.onnx", exporter="dynamo")
        assert "\n" not in str(info.value) and len(str(info.value)) < 400
        assert not (tmp_path / "d.onnx").exists()


def test_format_given_against_the_suffix_is_checked_in_that_format(run_dir, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", "--model", str(run_dir), "--format", "onnx", "--exporter", "legacy", "--out",
                 str(out)]) == 0
    assert "max |onnx - pytorch|" in capsys.readouterr().out
    rt = OnnxRuntime(out)
    x = torch.rand(2, 1, *SIZE, generator=torch.Generator().manual_seed(4))
    model, _ = load_model(run_dir)
    with torch.inference_mode():
        np.testing.assert_allclose(rt(x), model(x).numpy(), atol=ATOL, rtol=0)


def test_cli_export_skips_unreadable_check_images(run_dir, tmp_path, capsys):
    """One damaged file in a --check-images folder stopped the export; it is skipped and listed, as every command
    that reads images does, and only a folder with no readable image is refused (before any export)."""
    from PIL import Image

    folder = tmp_path / "check"
    folder.mkdir()
    for k, img in enumerate(real_images()[:2]):
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"f{k}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "checked.pt"
    assert main(["export", "--model", str(run_dir), "--out", str(out), "--check-images", str(folder)]) == 0
    cap = capsys.readouterr()
    assert "broken.png: not a readable image" in cap.err and "OK" in cap.out and out.is_file()
    none = tmp_path / "none.pt"
    assert main(["export", "--model", str(run_dir), "--out", str(none), "--check-images", str(folder / "broken.png")]) == 1
    assert "none of the 1 --check-images could be read" in capsys.readouterr().err and not none.exists()


def test_runtime_threads_and_foreign_metadata_are_user_errors(tmp_path):
    """--threads 99999999999999999999 was a TypeError from ONNX Runtime's options; an export whose crl-uiqa
    metadata is a JSON list (or nested past the recursion limit) was an AttributeError (a RecursionError)."""
    from pathlib import Path

    from crl_uiqa.errors import ConfigError, ModelError
    from crl_uiqa.runtime import _parse_meta

    for bad in (10**20, -1, 1.5):
        with pytest.raises(ConfigError, match=r"threads \(--threads\)"):
            load_runtime(tmp_path / "missing.onnx", "onnx", threads=bad)
    # a C int was no bound: ONNX Runtime starts every thread when it opens the model (100000 crashed it)
    with pytest.raises(ConfigError, match=r"threads \(--threads\) must be <= 1024, got 2147483647"):
        load_runtime(tmp_path / "missing.onnx", "onnx", threads=2**31 - 1)
    for text in ("[1, 2]", "7", "[" * 100_000 + "]" * 100_000):
        with pytest.raises(ModelError, match="x.onnx: not a crl-uiqa export"):
            _parse_meta(text, Path("x.onnx"))


def test_an_edited_export_description_is_one_line_before_any_frame(onnx_export, tmp_path):
    """An ONNX export whose crl_uiqa.json gives another image size than its graph takes failed inside ONNX Runtime at
    the first batch, and one of 100000 x 100000 asked for 40 GB while resizing the first frames (exit 3, trial 8)."""
    import json

    onnx = pytest.importorskip("onnx")
    from crl_uiqa.errors import ModelError
    from crl_uiqa.runtime import META_KEY

    for size, match in (([100000, 100000], "100000x100000 is not between 1 and 8192"),
                        ([96, 128], "does not take \\(batch, 1, 96, 128\\) images")):
        m = onnx.load(str(onnx_export.path))
        prop = next(p for p in m.metadata_props if p.key == META_KEY)
        prop.value = json.dumps({**json.loads(prop.value), "image_size": size})
        edited = tmp_path / f"edited-{size[0]}.onnx"
        onnx.save(m, str(edited))
        with pytest.raises(ModelError, match=match):
            load_runtime(edited, "onnx")
    assert load_runtime(onnx_export.path, "onnx").image_size == onnx_export.image_size


def test_a_model_that_is_no_path_is_an_argument_type_error(tmp_path):
    """select_frames(None, frames) was a TypeError from pathlib, not a CRLUIQAError (trial 8)."""
    from crl_uiqa.errors import ArgumentTypeError
    from crl_uiqa.video.select import select_frames

    for bad in (None, 3, ["run"]):
        with pytest.raises(ArgumentTypeError, match="model must be a run folder or exported file"):
            load_runtime(bad)
    with pytest.raises(ArgumentTypeError, match="got NoneType"):
        select_frames(None, np.zeros((3, 30, 30), np.uint8))
