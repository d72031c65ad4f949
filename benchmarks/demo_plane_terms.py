"""The demo's plane term: does acquisition normalisation or pose-augmented references let SonoNet-16 see the plane?

Issue 10, goal 4. ``demo_picks.py layers`` showed that the demo's picks lack a
plane estimate that holds when a standard plane is badly acquired: given the
simulator's exact plane closeness, SonoNet-16's untrained block2 distance score
is a good enough acquisition term (32 of 40 picks within 2 frames), but
SonoNet-16's own plane terms (the adaptation layer's distance to the reference
planes, its probability of the abdominal plane) follow the plane closeness
with a within-sweep Spearman correlation of about +0.45 only.

This script asks whether that is a matter of what the frames look like rather
than of what the network knows, with two untrained remedies, scored on the
demo's own held-out sweeps (``DemoSettings(seed=s)``'s simulated data) with the
packaged SonoNet-16 weights at 224x288:

* **acquisition normalisation at test time**: the plane term of each held-out
  frame is computed on variants of it - its in-fan grey levels shifted by
  +-0.075 and +-0.15 (a gain error of the simulator is an additive shift of the
  log-compressed grey level, 12 dB = 0.2), shifted so that its in-fan mean is
  the references' (``meanmatch``), or smoothed by a Gaussian of 1.5 or 3 pixels
  (speckle and electronic noise) - and, besides each variant alone, the best
  plane term over the grey-level shifts (``max shift``) or over every variant;
* **pose-augmented references**: the fetus lies at any in-plane rotation
  (-90 to 90 degrees for the abdomen) and either side up, and SonoNet-16's
  pooled features are not rotation invariant, so a frame's distance to 6
  references may measure pose more than plane. Each reference is also taken
  mirrored and rotated in steps of 15 degrees about the anatomy's centre
  (inside the fan; 288 references from 6), and the k nearest of them give the
  distance.
* **template matching against the posed references**: each held-out frame is
  smoothed (Gaussian, sigma ``NCC_SIGMA`` pixels) and averaged down 4 times,
  and compared with a square patch cut from the centre of every posed
  reference (half-width 8 or 10 pooled pixels, cut about the simulated
  anatomy's mean centre or about the image centre) by normalised cross
  correlation, at every shift; a frame's plane term is its best correlation
  (``top1``) or the mean of its 3 best templates' (``top3``). No network.

Each plane term is printed alone and with 0.5 x the block2 distance score as
acquisition term (all standardised on the training frames), with its mean
within-sweep Spearman correlation with the plane closeness and the frame
error of its picks (smoothed over +-3 frames, :func:`demo_picks.frame_error`).

Usage::

    python benchmarks/demo_plane_terms.py --seeds 0,1,2,3,4,5,6,7,8,9 --threads 2

About a minute a seed on 2 cores (no training). Results in BENCHMARKS.md
("Demo: acquisition normalisation and pose-augmented references").
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _run_info as run_info  # noqa: E402
from demo_picks import OUT, frame_error  # noqa: E402

LAYERS = ("block2", "block5", "adaptation")
SHIFTS = (-0.15, -0.075, 0.075, 0.15)
BLURS = (1.5, 3.0)
ROTATIONS = tuple(range(0, 360, 15))
ACQ_WEIGHT = 0.5  # the half-oracles' weight on block2 (demo_picks.HALF_ORACLES), chosen there on seeds 0-2
NCC_SIGMA, NCC_POOL = 2.0, 4
NCC = (("anatomy centre", 10, 1), ("anatomy centre", 8, 3), ("image centre", 10, 1), ("image centre", 8, 3))
#: the template term chosen on seeds 0-4 (2026-12-03, before seeds 5-9 were scored), with the adaptation layer's
#: distance score at this weight as the second term
NCC_CHOSEN, NCC_CHOSEN_ADAPTATION = "template NCC, anatomy centre, half 10, top1", 0.25


class _Net:
    """SonoNet-16 with the packaged weights: pooled embeddings of ``LAYERS`` and the logit of the abdominal plane
    from one forward pass."""

    def __init__(self):
        import torch

        from crl_uiqa.backbones import get_backbone
        from crl_uiqa.demo.pipeline import _find_sononet, _plane_class
        from crl_uiqa.embed import prepare_model

        weights = _find_sononet(None)
        if weights is None:
            raise SystemExit("needs the SonoNet-16 weights (the packaged copy or $CRL_UIQA_WEIGHTS_DIR)")
        self.net = prepare_model(get_backbone("sononet16", weights).eval(), torch.device("cpu"))
        self.cls = _plane_class(self.net)
        self.size = tuple(self.net.input_size)
        modules = {"block2": self.net.blocks[1], "block5": self.net.blocks[4], "adaptation": self.net.adaptation[0]}
        self._cur: dict = {}
        for name, m in modules.items():
            m.register_forward_hook(lambda _m, _i, out, name=name: self._cur.__setitem__(name, out.mean(dim=(2, 3))))

    def __call__(self, x) -> dict[str, np.ndarray]:
        import torch

        out: dict[str, list] = {}
        with torch.inference_mode():
            for i in range(0, len(x), 32):
                self._cur.clear()
                lp = self.net(x[i:i + 32].contiguous(memory_format=torch.channels_last)).log_softmax(1)[:, self.cls]
                for name in LAYERS:
                    out.setdefault(name, []).append(self._cur[name].float().numpy())
                out.setdefault("logit", []).append((lp - torch.log1p(-lp.exp().clamp(max=1 - 1e-7))).float().numpy())
        return {k: np.concatenate(v).astype(np.float64) for k, v in out.items()}


def _load(paths, size):
    import torch

    from crl_uiqa.io import iter_batches

    return torch.cat([b.images for b in iter_batches(paths, size=size, batch_size=64, num_workers=1)])


def _blur(x, sigma: float):
    import torch
    import torch.nn.functional as F

    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def test_variants(x, fan, ref_mean: float) -> dict:
    """The held-out frames ``x`` (N, 1, H, W) as they are and normalised for acquisition, inside the ``fan``."""
    import torch

    out = {"raw": x}
    for d in SHIFTS:
        out[f"shift {d:+g}"] = torch.where(fan, (x + d).clamp(0, 1), x)
    mean = (x * fan).sum(dim=(1, 2, 3), keepdim=True) / fan.sum()
    out["meanmatch"] = torch.where(fan, (x + (ref_mean - mean)).clamp(0, 1), x)
    for s in BLURS:
        out[f"blur {s:g}"] = torch.where(fan, _blur(x, s), x)
    return out


def _anatomy_centre(size) -> tuple[float, float]:
    """(row, col) of the simulated anatomy's mean centre (lateral 0, 60 mm deep) in an image of ``size``."""
    from crl_uiqa.data import bmode
    from crl_uiqa.data.simulate import _CENTER_DEPTH

    h0, w0 = 256, 320  # the demo's simulated frame size
    geo = bmode.fan_geometry((h0, w0))
    fan_height = geo.r1 - geo.r0 * math.cos(geo.half_angle)
    z_top = geo.r0 * math.cos(geo.half_angle) - (h0 * geo.pixel_mm - fan_height) / 2.0
    row = ((geo.r0 + _CENTER_DEPTH) - z_top) / geo.pixel_mm - 0.5
    return (row + 0.5) * size[0] / h0 - 0.5, (w0 / 2) * size[1] / w0 - 0.5


def posed_references(refs, fan, size, centre=None):
    """Each reference (N, 1, H, W) as it is and mirrored, rotated by every angle of ``ROTATIONS`` about ``centre``
    (row, col; default the anatomy's), cut to the fan: (N * 2 * len(ROTATIONS), 1, H, W)."""
    import torch
    from scipy import ndimage

    cr, cc = centre if centre is not None else _anatomy_centre(size)
    sy, sx = size[0] / 256, size[1] / 320  # square pixels in the simulated frame, not after the resize
    centre = np.array([cr, cc])
    fan_np = fan[0, 0].numpy().astype(np.float32)
    out = []
    for img in refs[:, 0].numpy():
        for mirror in (False, True):
            src = img  # mirrored about the anatomy's centre column:
            if mirror:
                src = ndimage.affine_transform(img, np.diag([1.0, -1.0]), offset=np.array([0.0, 2 * cc]), order=1)
            for deg in ROTATIONS:
                c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
                m = np.array([[c, -s * sy / sx], [s * sx / sy, c]])
                out.append(ndimage.affine_transform(src, m, offset=centre - m @ centre, order=1, cval=0.0) * fan_np)
    return torch.from_numpy(np.stack(out)[:, None]).float()


def template_scores(x, posed, centre, half: int, top: int):
    """Plane term of the frames ``x`` (N, 1, H, W): normalised cross-correlation with a (2 half)^2 patch of every
    posed reference cut about ``centre`` (row, col), after smoothing and pooling, at every shift; the mean of the
    ``top`` best templates' best correlations."""
    import torch
    import torch.nn.functional as F

    def prep(v):
        return F.avg_pool2d(_blur(v, NCC_SIGMA), NCC_POOL)

    a = prep(posed)
    r, c = int(centre[0] / NCC_POOL), int(centre[1] / NCC_POOL)
    tpl = a[:, :, r - half:r + half, c - half:c + half]
    tpl = tpl - tpl.mean(dim=(2, 3), keepdim=True)
    tpl = tpl / tpl.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clamp_min(1e-8)
    n, box, out = (2 * half) ** 2, torch.ones(1, 1, 2 * half, 2 * half), []
    for i in range(0, len(x), 64):
        t = prep(x[i:i + 64])
        s1, s2 = F.conv2d(t, box), F.conv2d(t * t, box)
        ncc = F.conv2d(t, tpl) / (s2 - s1 * s1 / n).clamp_min(1e-8).sqrt()  # the template is zero-mean
        out.append(ncc.flatten(2).max(dim=2).values)
    return torch.cat(out).topk(top, dim=1).values.mean(dim=1).double().numpy()


def seed_scores(net: _Net, seed: int) -> list[dict]:
    """Per held-out sweep of the demo data of ``seed``: frames, ground truth and every plane-term score."""
    from crl_uiqa.data.simulate import simulate_dataset
    from crl_uiqa.demo import DEMO_PLANE, DemoSettings
    from crl_uiqa.files import read_csv
    from crl_uiqa.io import list_images
    from crl_uiqa.pseudo_labels import topk_mean_distance

    st = DemoSettings(seed=seed)
    work = OUT / "work" / f"plane_terms_s{seed}"
    try:
        ds = simulate_dataset(work, planes=(DEMO_PLANE,), n_train_sweeps=st.n_train_sweeps,
                              n_reference_sweeps=st.n_reference_sweeps, n_test_sweeps=st.n_test_sweeps,
                              n_frames=st.n_frames, seed=seed, progress=False)
        ref_p, train_p, test_p = (list_images(d) for d in (ds.references_dir, ds.train_dir, ds.test_dir))
        refs, train, test = (_load(p, net.size) for p in (ref_p, train_p, test_p))
        truth = {str((Path(ds.root) / r["path"]).resolve()): r for r in read_csv(ds.manifest_csv)}
        rows = [truth[str(Path(p).resolve())] for p in test_p]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fan = (refs > 0).any(dim=0, keepdim=True) | (test > 0).any(dim=0, keepdim=True)
    ref_mean = float(((refs * fan).sum(dim=(1, 2, 3)) / fan.sum()).mean())
    k = min(st.k, len(ref_p))
    centres = {"anatomy centre": _anatomy_centre(net.size),
               "image centre": ((net.size[0] - 1) / 2, (net.size[1] - 1) / 2)}
    posed = {where: posed_references(refs, fan, net.size, centre=c) for where, c in centres.items()}
    R, A, T = net(refs), net(posed["anatomy centre"]), net(train)

    def dist(emb, layer, refs_emb=R, kk=k):
        return -topk_mean_distance(emb[layer], refs_emb[layer], kk, device="cpu")

    train_scores = {"block2": dist(T, "block2"), "adaptation": dist(T, "adaptation"), "block5": dist(T, "block5"),
                    "logit": T["logit"]}

    def z(v, kind):
        return (v - train_scores[kind].mean()) / train_scores[kind].std()

    scores: dict[str, np.ndarray] = {}
    variants = {name: net(x) for name, x in test_variants(test, fan, ref_mean).items()}
    for name, E in variants.items():
        scores[f"adaptation, {name}"] = z(dist(E, "adaptation"), "adaptation")
        scores[f"logit p(abdomen), {name}"] = z(E["logit"], "logit")
    shifts = ["raw"] + [f"shift {d:+g}" for d in SHIFTS]
    for kind in ("adaptation", "logit p(abdomen)"):
        scores[f"{kind}, max shift"] = np.max([scores[f"{kind}, {v}"] for v in shifts], axis=0)
        scores[f"{kind}, max all"] = np.max([scores[f"{kind}, {v}"] for v in variants], axis=0)
    raw = variants["raw"]
    for layer in ("adaptation", "block5"):
        for kk in (1, 3, 6):
            scores[f"{layer}, references k={kk}"] = z(dist(raw, layer, R, min(kk, len(ref_p))), layer)
            scores[f"{layer}, posed references k={kk}"] = z(dist(raw, layer, A, kk), layer)
    for where, half, top in NCC:
        tr = template_scores(train, posed[where], centres[where], half, top)
        scores[f"template NCC, {where}, half {half}, top{top}"] = (
            template_scores(test, posed[where], centres[where], half, top) - tr.mean()) / tr.std()
    acq = z(dist(raw, "block2"), "block2")
    scores[f"{NCC_CHOSEN} + {NCC_CHOSEN_ADAPTATION:g} adaptation"] = (
        scores[NCC_CHOSEN] + NCC_CHOSEN_ADAPTATION * scores["adaptation, references k=3"])
    for name in list(scores):
        scores[f"{name} + {ACQ_WEIGHT:g} block2"] = scores[name] + ACQ_WEIGHT * acq
    sweep = np.array([r["sweep"] for r in rows])
    frame = np.array([int(r["frame"]) for r in rows])
    out = []
    for sw in sorted(set(sweep)):
        m = np.flatnonzero(sweep == sw)
        m = m[np.argsort(frame[m])]
        out.append({"frame": frame[m], **{f: np.array([float(rows[i][f]) for i in m])
                                         for f in ("true_quality", "plane_closeness")},
                    **{name: v[m] for name, v in scores.items()}})
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from scipy.stats import spearmanr

    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    print(f"# {run_info.machine()}; {run_info.uptime()}", flush=True)
    net = _Net()
    sweeps = []
    for seed in seeds:
        t = time.perf_counter()
        sweeps += seed_scores(net, seed)
        print(f"seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
    print(f"# {run_info.uptime()}")
    summary = {}
    names = [n for n in sweeps[0] if n not in ("frame", "true_quality", "plane_closeness")]
    print(f"{'plane term':<52} {'rho plane':>9} {'mean err':>8} {'within 2':>8}  frame errors")
    for name in names:
        errs = np.array([frame_error(sw, name, 3.0) for sw in sweeps])
        rho = float(np.nanmean([spearmanr(sw[name], sw["plane_closeness"])[0] for sw in sweeps]))
        summary[name] = {"rho_plane": rho, "mean_error": float(errs.mean()), "within_2": int(np.sum(errs <= 2)),
                         "frame_errors": errs.tolist()}
        print(f"{name:<52} {rho:>+9.2f} {errs.mean():>8.2f} {np.sum(errs <= 2):>4}/{errs.size}  "
              f"{' '.join(map(str, errs))}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"plane_terms_{'-'.join(map(str, seeds))}.json").write_text(json.dumps(
        {"command": run_info.command("demo_plane_terms.py", argv), "machine": run_info.machine(), "seeds": seeds,
         "summary": summary}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return ap


if __name__ == "__main__":
    raise SystemExit(main())
