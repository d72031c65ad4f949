"""Tests of the fetal ultrasound sweep simulator (crl_uiqa.data)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from crl_uiqa.cli import main
from crl_uiqa.data import (
    PARAMETERS,
    REFERENCE_RANGES,
    SimulatedDataset,
    make_pairs,
    quality_factors,
    simulate_dataset,
    simulate_frame,
    simulate_polar,
    simulate_sweep,
    true_quality,
)
from crl_uiqa.data.anatomy import FLUID
from crl_uiqa.data.bmode import (
    RAYLEIGH_MEAN_OVER_STD,
    fan_geometry,
    sampled_gaussian_transfer,
    speckle_envelope,
)
from crl_uiqa.errors import ConfigError, OutputError
from crl_uiqa.files import read_csv

SMALL = (96, 120)
CLEAN = {k: (0.0, 0.0) for k in ("tilt", "gain", "focus_error", "noise", "shadow", "motion")}


# ----------------------------------------------------------------------------- frames

def test_frame_is_deterministic_for_a_seed():
    a, ta = simulate_frame("abdomen", offset=2.0, noise=0.3, motion=0.2, size=SMALL, seed=7)
    b, tb = simulate_frame("abdomen", offset=2.0, noise=0.3, motion=0.2, size=SMALL, seed=7)
    c, _ = simulate_frame("abdomen", offset=2.0, noise=0.3, motion=0.2, size=SMALL, seed=8)
    assert np.array_equal(a, b)
    assert ta == tb
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("plane", ["abdomen", "4ch", "head"])
def test_frame_range_dtype_and_black_outside_fan(plane):
    img, truth = simulate_frame(plane, size=(128, 160), seed=1, shadow=0.4, rotation=20.0)
    assert img.shape == (128, 160) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    fan = fan_geometry((128, 160)).fan_mask
    assert 0.3 < fan.mean() < 0.9
    assert np.all(img[~fan] == 0.0)
    assert img[fan].mean() > 0.05  # tissue is visible inside the fan
    # the corners of the image are outside the fan
    assert not fan[0, 0] and not fan[0, -1] and not fan[-1, 0] and not fan[-1, -1]
    assert truth["plane"] == plane and truth["seed"] == 1
    assert set(PARAMETERS) <= set(truth)


def test_generator_seed_and_validation():
    img, truth = simulate_frame("abdomen", size=SMALL, seed=np.random.default_rng(3))
    assert truth["seed"] is None and img.shape == SMALL
    with pytest.raises(ValueError, match="unknown plane"):
        simulate_frame("femur", size=SMALL)
    with pytest.raises(ValueError, match="noise"):
        simulate_frame("abdomen", noise=1.5, size=SMALL)
    with pytest.raises(ValueError, match="unknown simulate_frame parameter"):
        simulate_frame("abdomen", wobble=1.0, size=SMALL)
    with pytest.raises(ValueError, match="size"):
        simulate_frame("abdomen", size=(8, 8))
    with pytest.raises(ValueError, match="finite"):
        simulate_frame("abdomen", offset=float("nan"), size=SMALL)
    with pytest.raises(ValueError, match="flip"):
        simulate_frame("abdomen", flip="False", size=SMALL)
    mirrored, _ = simulate_frame("abdomen", flip=np.bool_(True), rotation=30.0, size=SMALL)
    assert not np.array_equal(mirrored, simulate_frame("abdomen", rotation=30.0, size=SMALL)[0])


# ----------------------------------------------------------------------------- ground truth

def test_true_quality_formula_hand_values():
    # each Gaussian penalty is 1/e at its tolerance
    assert true_quality("abdomen") == 1.0
    assert true_quality("abdomen", offset=5.0) == pytest.approx(math.exp(-1))
    assert true_quality("4ch", offset=4.0) == pytest.approx(math.exp(-1))
    assert true_quality("abdomen", gain=-9.0) == pytest.approx(math.exp(-1))
    assert true_quality("abdomen", focus_error=35.0) == pytest.approx(math.exp(-1))
    for name in ("noise", "shadow", "motion"):
        assert true_quality("abdomen", **{name: 0.5}) == pytest.approx(math.exp(-1))
    f = quality_factors("abdomen", offset=2.5, tilt=15.0, noise=0.25, motion=0.5)
    assert f["plane_closeness"] == pytest.approx(math.exp(-0.25 - 0.25))
    assert f["acquisition_factor"] == pytest.approx(math.exp(-0.25 - 1.0))
    assert f["true_quality"] == pytest.approx(math.exp(-0.5 - 1.25))


def test_quality_orders_frames_as_parameters_say():
    # heavier shadow / noise / motion, larger offset -> lower true quality
    q = [true_quality("abdomen", shadow=s) for s in (0.0, 0.3, 0.6, 0.9)]
    assert q == sorted(q, reverse=True) and len(set(q)) == 4
    q = [true_quality("4ch", noise=n) for n in (0.0, 0.2, 0.5)]
    assert q == sorted(q, reverse=True) and len(set(q)) == 3
    _, near = simulate_frame("abdomen", offset=0.5, size=SMALL)
    _, far = simulate_frame("abdomen", offset=15.0, size=SMALL)
    assert near["true_quality"] > 0.9 > 0.01 > far["true_quality"]


def _distance_to_ideal(plane: str, **degradation) -> float:
    """Mean |smoothed frame - smoothed ideal standard plane| inside the fan (same speckle seed)."""
    pose = dict(rotation=25.0, shadow_angle=2.0, motion_angle=30.0, size=(128, 160), seed=4)
    ideal, _ = simulate_frame(plane, **pose)
    img, _ = simulate_frame(plane, **pose, **degradation)
    fan = fan_geometry((128, 160)).fan_mask
    diff = np.abs(ndimage.gaussian_filter(img, 2.0) - ndimage.gaussian_filter(ideal, 2.0))
    return float(diff[fan].mean())


@pytest.mark.parametrize("name, levels", [
    ("offset", (3.0, 6.0, 12.0)),
    ("noise", (0.2, 0.5, 0.9)),
    ("shadow", (0.2, 0.5, 0.9)),
    ("motion", (0.2, 0.5, 0.9)),
    ("focus_error", (15.0, 30.0, 45.0)),
    ("gain", (4.0, 9.0, 14.0)),
])
def test_lower_true_quality_looks_further_from_the_standard_plane(name, levels):
    """The ground truth is meaningful: each degradation moves the image away from the ideal."""
    dist = [_distance_to_ideal("abdomen", **{name: v}) for v in levels]
    assert dist[0] > 1e-3
    assert dist == sorted(dist), (name, dist)
    assert dist[-1] > 1.3 * dist[0], (name, dist)


def test_standard_plane_frame_of_a_clean_sweep_beats_far_frames():
    frames, truths = simulate_sweep("abdomen", 16, seed=11, size=SMALL, **CLEAN)
    offsets = np.array([t["offset"] for t in truths])
    q = np.array([t["true_quality"] for t in truths])
    assert frames.shape == (16, *SMALL) and frames.dtype == np.float32
    # the sweep passes through the standard plane, monotonically
    assert offsets.min() < 0 < offsets.max()
    steps = np.diff(offsets)
    assert np.all(steps > 0) or np.all(steps < 0)
    best, worst = int(np.argmax(q)), int(np.argmax(np.abs(offsets)))
    assert best == int(np.argmin(np.abs(offsets)))
    assert q[best] > 0.8 and q[worst] < 0.01
    for t in truths:  # no acquisition degradation in a clean sweep
        assert t["acquisition_factor"] == 1.0


def test_sweep_deterministic_reproducible_and_varied():
    f1, t1 = simulate_sweep("4ch", 10, seed=5, size=SMALL)
    f2, t2 = simulate_sweep("4ch", 10, seed=5, size=SMALL)
    assert np.array_equal(f1, f2) and t1 == t2
    # every frame is reproduced by simulate_frame from its ground truth
    t = t1[6]
    again, _ = simulate_frame("4ch", size=SMALL, seed=t["seed"], **{k: t[k] for k in PARAMETERS})
    assert np.array_equal(again, f1[6])
    # acquisition factors vary smoothly but do vary; pose fixed per sweep
    gains = np.array([t["gain"] for t in t1])
    assert np.ptp(gains) > 0 and len({t["flip"] for t in t1}) == 1
    with pytest.raises(ValueError, match="unknown range"):
        simulate_sweep("4ch", 4, seed=0, size=SMALL, speed=(0, 1))
    with pytest.raises(ValueError, match="low <= high"):
        simulate_sweep("4ch", 4, seed=0, size=SMALL, gain=(3, -3))


# ----------------------------------------------------------------------------- speckle

def test_speckle_envelope_is_rayleigh():
    rng = np.random.default_rng(0)
    env = speckle_envelope(np.ones((256, 256)), rng=rng, axial_sigma=0.8, lateral_sigma=1.5)
    ratio = env.mean() / env.std()
    assert RAYLEIGH_MEAN_OVER_STD == pytest.approx(1.9131, abs=1e-4)
    assert ratio == pytest.approx(RAYLEIGH_MEAN_OVER_STD, rel=0.05)
    assert np.mean(env.astype(np.float64) ** 2) == pytest.approx(1.0, rel=0.05)  # unit-energy PSF
    # amplitude scales the envelope, not its statistics
    env3 = speckle_envelope(np.full((256, 256), 3.0), rng=np.random.default_rng(0),
                            axial_sigma=0.8, lateral_sigma=1.5)
    assert np.allclose(env3, 3.0 * env, rtol=1e-4, atol=1e-5)


def test_speckle_in_a_simulated_frame_is_fully_developed():
    """Uniform, unshadowed amniotic fluid of a noise-free frame: envelope mean/std ~ 1.91."""
    geo = fan_geometry((256, 320))
    alpha = 3.0 / (10.0 * 20.0 / math.log(10.0))  # the default attenuation, compensated by the TGC
    depth_gain = np.exp(alpha * (geo.radius - geo.r0))[:, None]
    ratios = []
    for seed in range(3):
        f = simulate_polar("abdomen", seed=seed)
        uniform = (f.echogenicity <= FLUID * 1.0001) & (f.transmission * depth_gain > 0.999)
        region = ndimage.binary_erosion(uniform, structure=np.ones((15, 31)))
        assert region.sum() > 3000
        env = f.envelope[region]
        ratios.append(env.mean() / env.std())
    assert np.mean(ratios) == pytest.approx(RAYLEIGH_MEAN_OVER_STD, rel=0.10)


def test_sampled_gaussian_kernel_has_no_ringing():
    n = 64
    h = sampled_gaussian_transfer(np.fft.fftfreq(n), np.array([0.6, 2.0]))
    kernels = np.fft.ifft(h.astype(np.float64), axis=1).real
    assert kernels.min() > -1e-6 * kernels.max()
    # a plain sampled exp(-2 pi^2 s^2 f^2) rings negative next to the peak
    plain = np.fft.ifft(np.exp(-2 * np.pi ** 2 * 0.6 ** 2 * np.fft.fftfreq(n) ** 2)).real
    assert plain.min() < -1e-3 * plain.max()
    x = np.minimum(np.arange(n), n - np.arange(n))
    for row, sigma in zip(kernels, (0.6, 2.0)):
        expected = np.exp(-x ** 2 / (2 * sigma ** 2))
        assert np.allclose(row / row[0], expected, atol=1e-6)


# ----------------------------------------------------------------------------- dataset

def _load(path):
    return np.asarray(Image.open(path))


def test_simulate_dataset_layout_manifest_and_pairs(tmp_path):
    ds = simulate_dataset(tmp_path / "sim", n_train_sweeps=2, n_reference_sweeps=2, n_test_sweeps=2,
                          n_frames=8, size=(64, 80), seed=3, progress=False, pair_margin=0.1)
    assert isinstance(ds, SimulatedDataset)
    root = ds.root
    assert ds.train_dir == root / "train" and ds.references_dir == root / "references"
    assert ds.test_dir == root / "test" and ds.manifest_csv == root / "manifest.csv"
    assert ds.pairs_csv == root / "pairs.csv"
    train_pngs = sorted(p.relative_to(root).as_posix() for p in ds.train_dir.rglob("*.png"))
    assert train_pngs[0] == "train/abdomen_s000/0000.png" and len(train_pngs) == 16
    assert sorted(p.name for p in ds.references_dir.glob("*.png")) == ["abdomen_s002.png",
                                                                       "abdomen_s003.png"]
    assert len(list(ds.test_dir.rglob("*.png"))) == 16
    assert (ds.n_train, ds.n_references, ds.n_test) == (16, 2, 16)

    rows = read_csv(ds.manifest_csv)
    assert len(rows) == 34
    assert {r["split"] for r in rows} == {"train", "reference", "test"}
    for r in rows:
        assert (root / r["path"]).is_file()
        assert r["plane"] == "abdomen" and r["sweep"].startswith("abdomen_s")
        assert 0.0 < float(r["true_quality"]) <= 1.0
    # a manifest row regenerates its PNG exactly
    r = rows[5]
    params = {k: float(r[k]) for k in PARAMETERS if k != "flip"}
    img, truth = simulate_frame("abdomen", size=(64, 80), seed=int(r["seed"]),
                                flip=r["flip"] == "True", **params)
    assert np.array_equal(np.round(img * 255).astype(np.uint8), _load(root / r["path"]))
    assert truth["true_quality"] == pytest.approx(float(r["true_quality"]))
    png = _load(root / r["path"])
    assert png.dtype == np.uint8 and png.shape == (64, 80)

    # references are the best frame of their (separate, carefully acquired) sweeps
    from crl_uiqa.data.simulate import _sweep_seed, sweep_parameters

    for ref in (r for r in rows if r["split"] == "reference"):
        k = int(ref["sweep"][-3:])
        params = sweep_parameters("abdomen", 8, seed=_sweep_seed(3, "abdomen", k), **REFERENCE_RANGES)
        qs = [true_quality("abdomen", **{n: p[n] for n in ("offset", "tilt", "gain", "focus_error",
                                                          "noise", "shadow", "motion")})
              for p in params]
        assert float(ref["true_quality"]) == pytest.approx(max(qs))
        assert int(ref["frame"]) == int(np.argmax(qs))
        assert not any(r["sweep"] == ref["sweep"] for r in rows if r["split"] != "reference")

    pairs = read_csv(ds.pairs_csv)
    assert pairs and set(pairs[0]) == {"better", "worse", "type"}
    q = {r["path"]: float(r["true_quality"]) for r in rows}
    sweep = {r["path"]: r["sweep"] for r in rows}
    split = {r["path"]: r["split"] for r in rows}
    for p in pairs:
        assert split[p["better"]] == split[p["worse"]] == "test"
        assert sweep[p["better"]] == sweep[p["worse"]]
        assert q[p["better"]] >= q[p["worse"]] + 0.1
        assert p["type"] in {"plane", "acquisition"}


def test_simulate_dataset_deterministic_and_rerunnable(tmp_path):
    kw = dict(n_train_sweeps=1, n_reference_sweeps=1, n_test_sweeps=1, n_frames=5, size=(48, 64),
              seed=9, progress=False)
    a = simulate_dataset(tmp_path / "a", **kw)
    b = simulate_dataset(tmp_path / "b", **kw)
    for name in ("manifest.csv", "pairs.csv", "references/abdomen_s001.png",
                 "test/abdomen_s002/0004.png"):
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()
    # rerunning into a previous simulation replaces it (no stale sweeps)
    simulate_dataset(tmp_path / "a", **{**kw, "n_frames": 3})
    assert not (a.root / "test/abdomen_s002/0004.png").exists()
    assert len(read_csv(a.manifest_csv)) == 3 + 1 + 3
    # a folder that holds foreign data is refused
    (tmp_path / "c" / "train").mkdir(parents=True)
    (tmp_path / "c" / "train" / "mine.png").write_text("mine")
    with pytest.raises(OutputError, match="c/train/mine.png: no crl-uiqa run wrote this file"):
        simulate_dataset(tmp_path / "c", **kw)
    with pytest.raises(ValueError, match="unknown plane"):
        simulate_dataset(tmp_path / "d", **{**kw, "planes": ("liver",)})


def test_a_rerun_never_deletes_what_no_simulation_wrote(tmp_path):
    """A rerun deleted train/, references/ and test/ whole, with the files a user had put there (trial 4)."""
    kw = dict(n_train_sweeps=1, n_reference_sweeps=1, n_test_sweeps=1, n_frames=3, size=(32, 40), progress=False)
    ds = simulate_dataset(tmp_path / "sim", planes=("abdomen", "head"), **kw)
    (ds.root / ".manifest.csv.crl-uiqa-99999-x.tmp.csv").write_text("a killed write's temporary")
    (ds.train_dir / ".0000.png.crl-uiqa-99999-y.tmp.png").write_text("one of ours too")
    simulate_dataset(ds.root, **kw)  # the simulation's own files alone: replaced
    mine = [ds.train_dir / "notes.txt", ds.test_dir / "abdomen_s002" / "my_frame.png", ds.references_dir / "x.png"]
    for p in mine:
        p.write_text("mine")
        before = sorted(q for q in ds.root.rglob("*"))
        with pytest.raises(OutputError, match=f"^{re.escape(str(p))}: no crl-uiqa run wrote this file"):
            simulate_dataset(ds.root, **{**kw, "n_frames": 4})
        assert sorted(q for q in ds.root.rglob("*")) == before and p.read_text() == "mine"
        p.unlink()
    (ds.test_dir / "outside").symlink_to(tmp_path)
    with pytest.raises(OutputError, match="test/outside: no crl-uiqa run wrote this file"):
        simulate_dataset(ds.root, **kw)


def test_make_pairs_rule_and_balance():
    rows = []
    for i, (pc, af) in enumerate([(1.0, 1.0), (1.0, 0.5), (0.1, 1.0), (0.9, 0.95), (0.05, 0.2)]):
        rows.append({"path": f"s/{i}.png", "sweep": "s", "plane_closeness": pc,
                     "acquisition_factor": af, "true_quality": pc * af})
    rows.append({"path": "t/0.png", "sweep": "t", "plane_closeness": 1.0,
                 "acquisition_factor": 0.1, "true_quality": 0.1})
    pairs = make_pairs(rows, margin=0.15, n_pairs=100)
    as_set = {(p["better"], p["worse"], p["type"]) for p in pairs}
    assert ("s/0.png", "s/1.png", "acquisition") in as_set   # 1.0 vs 0.5, same plane
    assert ("s/0.png", "s/2.png", "plane") in as_set         # 1.0 vs 0.1, off plane
    assert ("s/3.png", "s/1.png", "acquisition") in as_set   # 0.855 vs 0.5
    assert all(not (p["better"] == "s/0.png" and p["worse"] == "s/3.png") for p in pairs)  # < margin
    assert all("t/0.png" not in (p["better"], p["worse"]) for p in pairs)  # other sweep
    few = make_pairs(rows, margin=0.15, n_pairs=4, seed=1)
    assert len(few) == 4 and few == make_pairs(rows, margin=0.15, n_pairs=4, seed=1)
    assert {p["type"] for p in few} == {"plane", "acquisition"}


# ----------------------------------------------------------------------------- CLI

def test_cli_simulate_tiny(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["simulate", "--out", str(out), "--plane", "all", "--sweeps", "1",
               "--reference-sweeps", "1", "--test-sweeps", "1", "--frames", "4", "--size", "48", "64",
               "--seed", "2", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "abdomen, 4ch, head" in text and "manifest" in text and str(out) in text
    rows = read_csv(out / "manifest.csv")
    assert {r["plane"] for r in rows} == {"abdomen", "4ch", "head"}
    assert len(rows) == 3 * (4 + 1 + 4)
    assert (out / "references" / "4ch_s001.png").is_file()
    assert (out / "train" / "head_s000" / "0003.png").is_file()

    rc = main(["simulate", "--out", str(tmp_path / "bad"), "--frames", "1"])
    assert rc == 1
    assert "--frames" in capsys.readouterr().err


def test_bad_settings_cost_no_previous_simulation(tmp_path, capsys):
    """--seed, --pairs and --pair-margin are checked before the output folder is touched: a previous simulation
    there survives a refused run; NaN margins and an empty --out are refused."""
    from crl_uiqa.cli import main

    out = tmp_path / "prev"
    small = ["simulate", "--quiet", "--sweeps", "1", "--reference-sweeps", "1", "--test-sweeps", "1", "--frames", "3",
             "--size", "64", "64"]
    assert main([*small, "--out", str(out)]) == 0
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    capsys.readouterr()
    for bad, word in ((["--seed", "-3"], "--seed"), (["--pair-margin", "-1"], "--pair-margin"),
                      (["--pair-margin", "nan"], "--pair-margin"), (["--pairs", "-1"], "--pairs")):
        assert main([*small, "--out", str(out), *bad]) == 1
        err = capsys.readouterr().err
        assert word in err and len(err.strip().splitlines()) == 1, err
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    from crl_uiqa.data.simulate import simulate_dataset

    with pytest.raises(ConfigError, match="must not be empty"):
        simulate_dataset("", n_train_sweeps=1, n_reference_sweeps=0, n_test_sweeps=0, n_frames=2, size=(64, 64))


def test_counts_are_bounded_before_any_work(tmp_path, capsys):
    """--sweeps 99999999999 ran until stopped: every count is bounded by what it costs, in the API (one policy) and
    so on the command line, before the output folder is made."""
    from crl_uiqa.data.simulate import MAX_DATASET_FRAMES, MAX_FRAMES, MAX_SWEEP_PIXELS, sweep_parameters

    for bad, words in ((["--sweeps", "99999999999"], ("--sweeps", f"at most {MAX_DATASET_FRAMES}")),
                       (["--test-sweeps", str(2**31 - 1)], ("--test-sweeps", "fewer sweeps")),
                       (["--frames", str(MAX_FRAMES + 1)], ("--frames", f"<= {MAX_FRAMES}")),
                       (["--frames", "100", "--size", "4096", "4096"], ("--frames", "6.2 GiB", "at most 64 frames"))):
        out = tmp_path / "new"
        assert main(["simulate", "--quiet", "--out", str(out), *bad]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and all(w in err for w in words), err
        assert not out.exists()
    with pytest.raises(ConfigError, match=r"n_frames \(--frames\) must be <= "):
        sweep_parameters("abdomen", 2**31 - 1, seed=0)  # a parameter dict a frame, made up front
    with pytest.raises(ConfigError, match="GiB"):
        simulate_sweep("abdomen", MAX_SWEEP_PIXELS // (48 * 64) + 1, seed=0, size=(48, 64))  # one array up front
    with pytest.raises(ConfigError, match="must be an integer"):
        simulate_dataset(tmp_path / "d", n_train_sweeps=1.5)
    assert not (tmp_path / "d").exists()
