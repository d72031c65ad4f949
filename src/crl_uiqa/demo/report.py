"""What the demo shows: its HTML report (figures, tables, the paper's Fig. 2 views) and the summary it prints.

The demo's pipeline (:mod:`crl_uiqa.demo.pipeline`) computes; this module only presents, with the project's
report writer (:mod:`crl_uiqa.reporting`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .pipeline import DemoSettings


def model_views_figure(model, image: np.ndarray, size):
    """The paper's Fig. 2 for one image: weak views and strong views of rising degree, with scores;
    returns the figure and a caption computed from the scores it shows."""
    from kornia.geometry.transform import rotate

    from ..corruptions import corrupt
    from ..io import to_tensor
    from ..reporting.figures import views_caption, views_figure

    # antialiased resizing can overshoot [0, 1] by a rounding error, which the corruptions refuse
    x = to_tensor(image, size)[None].clamp_(0.0, 1.0)
    g = torch.Generator().manual_seed(0)
    weak = [(x.flip(-1), "h-flip"), (x.flip(-2), "v-flip"), (rotate(x, torch.tensor([12.0])), "rot 12°"),
            (rotate(x.flip(-1), torch.tensor([-10.0])), "h-flip + rot -10°")]
    strong = []  # one row per family, degree rising to the right
    for fam in ("gaussian_blur", "motion_blur"):
        for d in (0.25, 0.5, 0.75, 1.0):
            strong.append((corrupt(x, fam, d, generator=g), fam.replace("_", " "), d))
    with torch.inference_mode():
        batch = torch.cat([x] + [v for v, _ in weak] + [v for v, _, _ in strong])
        s = model.eval()(batch).float().numpy()
    s_weak, s_strong = s[1:1 + len(weak)], s[1 + len(weak):]

    def arr(t):
        return t[0, 0].numpy()

    fig = views_figure(arr(x), float(s[0]),
                       [(arr(v), float(sc), c) for (v, c), sc in zip(weak, s_weak)],
                       [(arr(v), float(sc), f"{fam} {d:.2f}") for (v, fam, d), sc in zip(strong, s_strong)],
                       columns=4)
    caption = views_caption(float(s[0]), [(c, float(sc)) for (_, c), sc in zip(weak, s_weak)],
                            [(fam, d, float(sc)) for (_, fam, d), sc in zip(strong, s_strong)])
    return fig, caption



def write_report(out, encoder, st, head, labels, res, table, picks, truth, scores, timings) -> Path:
    """The demo's HTML report; ``truth`` maps test-frame path keys (:func:`~crl_uiqa.tables.path_key`) to their
    manifest rows."""
    from ..io import read_gray
    from ..reporting.figures import quality_curve, ranked_strip, score_scatter, shade_ineligible, training_curves
    from ..reporting.html import Report
    from ..tables import path_key

    size = tuple(res.model.config.image_size)
    rep = Report("crl-uiqa demo — simulated fetal abdomen sweeps")
    rep.add_text("Everything here was produced offline by `crl-uiqa demo`: simulated B-mode sweeps, quality "
                 "pseudo-labels from the distance to reference standard planes (paper Eq. 1-3), and a quality model "
                 "trained with score consistency and relativity co-learning (Eq. 4-7). Ground truth comes from the "
                 "simulator, so accuracies are measured, not assumed.")
    rep.add_key_values({"embedding network P(·)": encoder, "training frames": len(res.train_paths) + len(res.val_paths),
                        "k": st.k, "Yeo-Johnson λ": labels.lmbda, "head": head, "epochs": max(int(r["epoch"]) for r in res.history),
                        "kept epoch": res.kept_epoch, "image size": "x".join(map(str, size)),
                        "best frame": _pick_rule_text(st), "time": _timings_text(timings)})
    rep.add_text(_encoder_meaning(encoder))
    rep.add_text("Terms used in this report:\n\n"
                 "- **P(·)**: the pretrained ultrasound plane classifier whose features define how close a frame is "
                 "to a good standard plane (paper Eq. 1).\n"
                 "- **k**: how many of the nearest reference planes are averaged in that distance (Eq. 1).\n"
                 "- **Yeo-Johnson λ**: the exponent of the power transform, fitted by maximum likelihood, that makes "
                 "the distances closer to Gaussian before they are scaled to pseudo-labels in [0, 1] (Eq. 2-3).\n"
                 "- **val_srcc**: Spearman rank correlation between the model's scores and the pseudo-labels on the "
                 "validation frames held out from training (1 = same order).\n"
                 "- **val_strong_accuracy**: how often a validation frame scores above its strongly corrupted view.\n"
                 "- **Pairwise accuracy**: the share of pairs with a known better frame that the scores put in the "
                 "right order (ties count half; 0.5 is chance).")
    rep.add_heading("Pairwise accuracy on held-out sweeps")
    rep.add_table(table, caption="Accuracy T/(T+F) on simulated pairs (ties 0.5) with bootstrap 95% interval; "
                  "columns after 'pairs' split by what differs in the pair.")
    rep.add_heading("Best frame of each held-out sweep")
    rep.add_table([{k: v for k, v in p.items() if not k.startswith("_")} for p in picks])
    for p in picks:
        best = p["_picked"]
        what = (f"CRL-UIQA score along the sweep, smoothed over ±{p['smooth']:g} frames (Gaussian, as `select "
                f"--smooth`)" if p["smooth"] else "CRL-UIQA score along the sweep")
        fig = quality_curve(p["_smoothed"], best=best, title=f"{p['sweep']}: predicted quality "
                            f"(true best frame {p['true_best_frame']})", thumbnails={best: read_gray(p["_paths"][best])})
        if p["eligible_frames"] and not p["_eligible"].all():
            shade_ineligible(fig.axes[0], np.arange(len(p["_eligible"])), p["_eligible"])
            fig.axes[0].legend(loc="best", fontsize=8, framealpha=0.85)
        rep.add_figure(fig, caption=f"{p['sweep']}: {what}; the pick is marked. {_plane_check_text(p, st)}")
    order = np.argsort(-scores.scores)
    ranked = [order[i] for i in np.linspace(0, len(order) - 1, 8).round().astype(int)]
    rep.add_heading("Frames ranked best to worst")
    rep.add_figure(ranked_strip([read_gray(scores.paths[i]) for i in ranked], [scores.scores[i] for i in ranked]),
                   caption="Eight held-out frames spread over the ranking, best first.")
    tq = [float(truth[path_key(p)]["true_quality"]) for p in scores.paths]
    rep.add_figure(score_scatter(tq, scores.scores, xlabel="simulator true quality", ylabel="CRL-UIQA score"),
                   caption="Predicted score against the simulator's ground truth on held-out frames.")
    rep.add_heading("Views (as the paper's Fig. 2)")
    src = read_gray(scores.paths[int(order[0])])
    fig, caption = model_views_figure(res.model, src, size)
    rep.add_figure(fig, caption="The best-scored held-out frame with its weak and strong views. " + caption)
    rep.add_heading("Training")
    rep.add_figure(training_curves(res.history), caption="Per-epoch losses and validation metrics.")
    return rep.write(Path(out) / "report.html")


def _pick_rule_text(st: DemoSettings) -> str:
    """How the demo picks the best frame of a sweep, in one line (the report's settings table)."""
    rule = f"top score smoothed over ±{st.smooth:g} frames" if st.smooth else "top raw score"
    if st.plane_threshold > 0:
        rule += f", among frames with p(abdominal plane) ≥ {st.plane_threshold:g} (all frames where none)"
    return rule


def _plane_check_text(pick: dict, st: DemoSettings) -> str:
    """What the plane check left to pick from in one held-out sweep (a sentence for the report)."""
    if st.plane_threshold <= 0:
        return "No plane check (--plane-threshold 0): every frame could be picked."
    n, total = pick["eligible_frames"], len(pick["_eligible"])
    if n == 0:
        return (f"Plane check: no frame had a probability of the abdominal plane of at least "
                f"{st.plane_threshold:g}, so the pick was made among all frames.")
    return (f"Plane check: {n} of {total} frames had a probability of the abdominal plane of at least "
            f"{st.plane_threshold:g} and could be picked" + (" (the others shaded)." if n < total else "."))


def _timings_text(timings: dict[str, float]) -> str:
    """``simulate 12 s · encoder 0 s · ... · total 171 s``."""
    names = {"pseudo_labels": "pseudo-labels"}
    parts = [f"{names.get(k, k)} {v:.0f} s" for k, v in timings.items()]
    return " · ".join(parts + [f"total {sum(timings.values()):.0f} s"])


def _encoder_meaning(encoder: str) -> str:
    """One paragraph on what the encoder used means for the numbers in the report."""
    if encoder.startswith("FALLBACK"):
        return ("**Encoder: fallback.** No SonoNet-16 weights were found (or `--encoder fallback` asked for this), so "
                "P(·) is a SonoNet-16 trained here, in under a minute, to tell simulated abdomen, four-chamber heart "
                "and head standard planes (within about 3 mm of the plane) from a background class holding every "
                "other view, near-plane views included, as SonoNet's own background class does. The pseudo-labels and "
                "the trained model inherit its crude features: the numbers below show that the pipeline runs, not "
                "what the method achieves with a real ultrasound classifier. The packaged weights (or --weights) "
                "give the real SonoNet-16.")
    return ("**Encoder: SonoNet-16 with its published weights** (trained on real fetal standard planes; Apache-2.0). "
            "P(·) is the network the method asks for, so the pseudo-labels measure closeness to the reference planes "
            "in the features of a real ultrasound classifier. The images are simulated, so the accuracies measure the "
            "method on this simulator, not on patients.")


def print_summary(table, picks, encoder, report, total, cpu_total=None, plane_threshold=0.0) -> None:
    types = [k for k in table[0] if k not in ("method", "accuracy", "ci_low", "ci_high", "pairs")]
    print()
    print(f"P(.): {encoder}")
    head = f"{'method':<30}{'accuracy':>9}  {'95% CI':<15}" + "".join(f"{t:>13}" for t in types)
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['method']:<30}{r['accuracy']:>9.3f}  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
              + "".join(f"{r.get(t, float('nan')):>13.3f}" for t in types))
    print()
    print(f"{'held-out sweep':<20}{'picked':>8}{'true best':>11}{'error (frames)':>16}{'true quality picked/best':>27}")
    for p in picks:
        print(f"{p['sweep']:<20}{p['picked_frame']:>8}{p['true_best_frame']:>11}{p['frame_error']:>16}"
              f"{p['picked_true_quality']:>16.3f} / {p['best_true_quality']:.3f}")
    if picks and picks[0]["smooth"]:
        print(f"(picked on the CRL-UIQA scores smoothed over +-{picks[0]['smooth']:g} frames; --smooth 0: the top raw score)")
    if picks and plane_threshold:
        print(f"(only frames with p(abdominal plane) >= {plane_threshold:g} could be picked: "
              + ", ".join(f"{p['eligible_frames']} of {len(p['_eligible'])}" for p in picks)
              + " per sweep, every frame where none did; --plane-threshold 0 turns the check off)")
    print()
    print(f"report: {report}")
    print(f"done in {total:.0f} s" + (f" ({cpu_total:.0f} CPU seconds)" if cpu_total is not None else ""))
