"""`crl-uiqa ablate` (the paper's Table 1) with the default anchored head."""
from __future__ import annotations

import csv

import numpy as np

from crl_uiqa.cli import main
from crl_uiqa.io import write_gray_png


def _frames(folder, n, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    yy, xx = np.mgrid[0:60, 0:80]
    clean = 0.5 + 0.3 * np.sin(xx / 4.0) * np.cos(yy / 5.0)
    for i in range(n):
        q = i / max(n - 1, 1)
        write_gray_png(folder / f"f{i:02d}.png", clean * q + (1 - q) * rng.uniform(0, 1, clean.shape))
    return folder


def test_ablate_with_the_anchored_head_trains_every_row(tmp_path, sononet16_path, capsys):
    """The README's `ablate --images --references --pairs` failed on its first row, after the labelling, with
    'the anchored head needs the reference planes': the rows were trained without the references."""
    pool = _frames(tmp_path / "pool", 8, 0)
    refs = _frames(tmp_path / "refs", 3, 1)
    (tmp_path / "pairs.csv").write_text("better,worse\npool/f07.png,pool/f00.png\npool/f06.png,pool/f01.png\n")
    args = ["ablate", "--images", str(pool), "--references", str(refs), "--pairs", str(tmp_path / "pairs.csv"),
            "--out", str(tmp_path / "abl"), "--k", "2", "--epochs", "1", "--min-steps", "0", "--batch-size", "4",
            "--image-size", "48", "64", "--min-val-pairs", "0", "--weights", str(sononet16_path), "--workers", "0",
            "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "abl" / "ablation.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    trained = [r for r in rows if "no training" not in r["configuration"]]
    assert len(trained) == 5 and all(r["n_pairs"] == "2" for r in rows)
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert "| + smoothing + L_c + L_r (CRL-UIQA) |" in out
    for name in ("pseudo_label", "smoothing_l_c_l_r_crl_uiqa"):
        assert (tmp_path / "abl" / name / "model.safetensors").is_file()
