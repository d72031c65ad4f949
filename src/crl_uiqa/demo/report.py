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

    x = to_tensor(image, size)[None]
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



def write_report(out, encoder, st, head, labels, res, table, picks, truth, scores, timings, cpu=None) -> Path:
    """The demo's HTML report, for someone who just installed crl-uiqa: what the demo did and found, the pictures,
    what to run on their own images, and the developer details (settings, times, seeds, files) collapsed at the
    end. ``truth`` maps test-frame path keys (:func:`~crl_uiqa.tables.path_key`) to their manifest rows; ``cpu``
    the CPU seconds per stage."""
    from ..io import read_gray
    from ..reporting.figures import quality_curve, score_scatter, shade_ineligible, training_curves
    from ..reporting.html import SCORE_SCALE, Report
    from ..tables import path_key

    size = tuple(res.model.config.image_size)
    out = Path(out)
    n_train = len(res.train_paths) + len(res.val_paths)
    rep = Report("crl-uiqa demo — simulated fetal abdomen sweeps")
    rep.add_text(
        f"The demo simulated ultrasound sweeps of a fetal abdomen, rated the {n_train} frames of "
        f"{st.n_train_sweeps} of them by how much each resembles reference standard planes (no one labelled anything) and "
        f"trained a quality model on those ratings. It then scored {len(picks)} sweeps the model had never seen, whose "
        "true quality the simulator knows frame by frame, to check how well the model ranks frames and picks the "
        "best one.")

    rep.add_heading("What it found")
    rep.add_text(_findings_text(table, picks))
    rep.add_text(_encoder_meaning(encoder))
    rep.add_heading("Best frame of each held-out sweep", level=3)
    rep.add_text(f"Picked by {_pick_rule_text(st)}. True quality is the simulator's (higher = better).")
    rep.add_table([{"sweep": p["sweep"], "frame picked": p["picked_frame"], "true best frame": p["true_best_frame"],
                    "frames apart": p["frame_error"], "true quality picked": p["picked_true_quality"],
                    "true quality best": p["best_true_quality"],
                    **({"eligible frames": p["eligible_frames"]} if st.plane_threshold > 0 else {})}
                   for p in picks])
    rep.add_heading("Pairwise accuracy on held-out sweeps", level=3)
    types = [k for k in table[0] if k not in ("method", "accuracy", "ci_low", "ci_high", "pairs")] if table else []
    rep.add_text("Accuracy T/(T+F) on simulated pairs with a known better frame (ties 0.5; 0.5 is chance), with its "
                 "bootstrap 95% interval" + (f"; the last columns: the accuracy on the pairs that differ in "
                                             f"{' or in '.join(types)}." if types else "."))
    rep.add_table([{"method": r["method"], "accuracy": r["accuracy"],
                    "95% interval": f"{r['ci_low']:.3f} – {r['ci_high']:.3f}", "pairs": r["pairs"],
                    **{f"{t} pairs": r.get(t, float("nan")) for t in types}} for r in table])

    rep.add_heading("Pictures")
    rep.add_note(SCORE_SCALE)
    rep.add_heading("Quality along each held-out sweep", level=3)
    pick_score = _pick_score_text(st)
    if pick_score:
        off = " ".join(flag for flag, w in (("--plane-match 0", st.plane_match),
                                            ("--plane-classifier 0", st.plane_classifier)) if w)
        rep.add_text(f"The curves show the pick score, not the model's score: {pick_score} (in standard deviations "
                     f"within the sweep, so 0 is the sweep's average frame). `{off}` picks on the model's score alone.")
    for p in picks:
        best = p["_picked"]
        scored = f"the pick score ({pick_score})" if pick_score else "CRL-UIQA score"
        what = (f"{scored} along the sweep, smoothed over ±{p['smooth']:g} frames (Gaussian, as select "
                f"--smooth does)" if p["smooth"] else f"{scored} along the sweep")
        fig = quality_curve(p["_smoothed"], best=best, title=f"{p['sweep']}: predicted quality "
                            f"(true best frame {p['true_best_frame']})", thumbnails={best: read_gray(p["_paths"][best])},
                            score_name="pick score" if pick_score else "score")
        if p["eligible_frames"] and not p["_eligible"].all():
            shade_ineligible(fig.axes[0], np.arange(len(p["_eligible"])), p["_eligible"])
            fig.axes[0].legend(loc="best", fontsize=8, framealpha=0.85)
        rep.add_figure(fig, caption=f"{p['sweep']}: {what}; the pick is marked. {_plane_check_text(p, st)}")
    order = np.argsort(-scores.scores)
    ranked = [int(order[i]) for i in np.linspace(0, len(order) - 1, 8).round().astype(int)]
    rank = {int(i): r for r, i in enumerate(order, start=1)}
    rep.add_heading("Frames ranked best to worst", level=3)
    rep.add_text(f"Eight of the {len(order)} held-out frames spread over the model's ranking, best first, with the "
                 "simulator's true quality of each.")
    rows = [truth[path_key(scores.paths[i])] for i in ranked]
    rep.add_thumbnails([read_gray(scores.paths[i]) for i in ranked],
                       [f"#{rank[i]} · score {scores.scores[i]:.3f}" for i in ranked],
                       [f"{r['sweep']} frame {r['frame']}\ntrue quality {float(r['true_quality']):.3f}" for r in rows])
    tq = [float(truth[path_key(p)]["true_quality"]) for p in scores.paths]
    rep.add_figure(score_scatter(tq, scores.scores, xlabel="simulator true quality", ylabel="CRL-UIQA score"),
                   caption="Predicted score against the simulator's ground truth on held-out frames.")
    rep.add_heading("Views (as the paper's Fig. 2)", level=3)
    src = read_gray(scores.paths[int(order[0])])
    fig, caption = model_views_figure(res.model, src, size)
    rep.add_figure(fig, caption="The best-scored held-out frame with its weak and strong views. " + caption)

    rep.add_heading("Next: your own images")
    rep.add_text(_next_steps_text(out))

    rep.add_heading("For developers")
    with rep.details("Settings, times, seed, terms, training curves and the files of this folder"):
        rep.add_text("Everything here was produced offline by `crl-uiqa demo`: simulated B-mode sweeps, quality "
                     "pseudo-labels from the distance to reference standard planes (paper Eq. 1-3), and a quality "
                     "model trained with score consistency and relativity co-learning (Eq. 4-7). Ground truth comes "
                     "from the simulator, so accuracies are measured, not assumed.")
        settings = {"embedding network P(·)": encoder, "training frames": n_train, "k": st.k,
                    "Yeo-Johnson λ": labels.lmbda, "head": head, "epochs": max(int(r["epoch"]) for r in res.history),
                    "kept epoch": res.kept_epoch, "image size": "x".join(map(str, size)),
                    "best frame": _pick_rule_text(st), "seed": f"{st.seed} (--seed: the simulation and the training)",
                    "time": _timings_text(timings)}
        if cpu:
            settings["CPU time"] = _timings_text(cpu)
        rep.add_key_values(settings)
        rep.add_text("Terms used in this report:\n\n"
                     "- **P(·)**: the pretrained ultrasound plane classifier whose features define how close a frame "
                     "is to a good standard plane (paper Eq. 1).\n"
                     "- **k**: how many of the nearest reference planes are averaged in that distance (Eq. 1).\n"
                     "- **Yeo-Johnson λ**: the exponent of the power transform, fitted by maximum likelihood, that "
                     "makes the distances closer to Gaussian before they are scaled to pseudo-labels in [0, 1] "
                     "(Eq. 2-3).\n"
                     "- **val_srcc**: Spearman rank correlation between the model's scores and the pseudo-labels on "
                     "the validation frames held out from training (1 = same order).\n"
                     "- **val_strong_accuracy**: how often a validation frame scores above its strongly corrupted "
                     "view.\n"
                     "- **Pairwise accuracy**: the share of pairs with a known better frame that the scores put in the "
                     "right order (ties count half; 0.5 is chance).")
        rep.add_heading("Training", level=3)
        rep.add_figure(training_curves(res.history), caption="Per-epoch losses and validation metrics.")
        rep.add_heading("Files in this folder", level=3)
        rep.add_text(_files_text(out))
    return rep.write(out / "report.html")


def _findings_text(table: list[dict], picks: list[dict]) -> str:
    """What the demo found, in words: each held-out sweep's pick against its truly best frame, and whether training
    beat the distance score the model started from (pairwise accuracy, with what the 95% intervals allow)."""
    lines = []
    for p in picks:
        if p["frame_error"] == 0:
            lines.append(f"- **{p['sweep']}**: picked frame {p['picked_frame']}, the truly best frame itself "
                         f"(true quality {p['best_true_quality']:.3f}).")
        else:
            lines.append(f"- **{p['sweep']}**: picked frame {p['picked_frame']}; the truly best is frame "
                         f"{p['true_best_frame']}, {p['frame_error']} frame{'s' * (p['frame_error'] != 1)} away "
                         f"(true quality {p['picked_true_quality']:.3f} against {p['best_true_quality']:.3f}).")
    text = ""
    if picks:
        errors = [p["frame_error"] for p in picks]
        text = (f"**Best frames.** In each of the {len(picks)} held-out sweeps the demo picked one frame by the "
                f"rule given with the table below: on average {np.mean(errors):.1f} frames from the truly best one, exactly on it in "
                f"{sum(e == 0 for e in errors)} of {len(picks)} sweeps, within 2 frames in "
                f"{sum(e <= 2 for e in errors)} of {len(picks)}.\n\n" + "\n".join(lines))
    by = {r["method"]: r for r in table}
    model, dist = by.get("CRL-UIQA"), by.get("distance score (no training)")
    if model and dist:
        diff = model["accuracy"] - dist["accuracy"]
        verdict = ("the trained model ranks better than the distance score it started from" if diff > 0 else
                   "the trained model ranks worse than the distance score it started from" if diff < 0 else
                   "the two rank these pairs equally well")
        overlap = model["ci_low"] <= dist["ci_high"] and dist["ci_low"] <= model["ci_high"]
        sure = (" The two 95% intervals overlap, so on this many pairs the difference is not certain."
                if overlap and diff else " The two 95% intervals do not overlap." if diff else "")
        others = [r for r in table if r is not model and r is not dist]
        rest = ""
        if others:
            top = max(others, key=lambda r: r["accuracy"])
            rest = (f" Of the other image-quality methods compared, the best ({top['method']}) reached "
                    f"{top['accuracy']:.3f}.")
        text += (f"\n\n**Ranking.** On {model['pairs']} pairs of held-out frames where the simulator knows which "
                 f"is better, the trained model put {model['accuracy']:.1%} in the right order (pairwise accuracy "
                 f"{model['accuracy']:.3f}; 0.5 is chance) and the distance score it was trained from, without "
                 f"training, {dist['accuracy']:.1%} ({dist['accuracy']:.3f}): {verdict}" + (
                     f", by {abs(diff) * 100:.1f} percentage points." if diff else ".") + sure + rest)
    return text


def _next_steps_text(out: Path) -> str:
    """The commands that do on the user's own images what the demo did (as in the README, "Use it on your data")."""
    import shlex

    o = shlex.quote(str(out))
    return (
        "What you need: a folder of frames (PNG, JPEG, BMP, TIFF; or videos and DICOM cine loops for `select`) and "
        "a few dozen reference standard planes that a sonographer considers good. No quality labels. The README "
        "(\"Use it on your data\") and `crl-uiqa COMMAND --help` say more.\n\n"
        "- **Train a model on your frames**, pseudo-labels and co-learning in one step: "
        "`crl-uiqa fit --images frames/ --references best_planes/ --out run/`\n"
        "- **Score images** (higher = better): `crl-uiqa score --model run/ --images new_frames/ --out scores.csv`\n"
        "- **See the scores in a page** (histogram, best and worst images; `--pairs` adds the accuracy on pairs "
        "you know): `crl-uiqa report --scores scores.csv --pairs pairs.csv --out report.html`\n"
        "- **Pick the best frames of scans** (video or DICOM), with a plane check: `crl-uiqa select --model run/ "
        "--input scan1.mp4 scan2.dcm --plane abdominal --top 3 --min-gap 2 --out picks/`\n\n"
        f"To try `report` first on what the demo scored: `crl-uiqa report --scores {shlex.quote(str(out / 'scores.csv'))} "
        f"--pairs {shlex.quote(str(out / 'data' / 'pairs.csv'))} --out {shlex.quote(str(out / 'scores-report.html'))}`. "
        f"The demo's model ({o}/model) was trained on simulated sweeps: train your own on your images.")


def _files_text(out: Path) -> str:
    """What each file the demo wrote holds (a bullet list for the report)."""
    files = [("data/", "the simulated sweeps (train/, test/, references/), manifest.csv with every frame's ground "
                       "truth, pairs.csv with the held-out pairs of known order, simulation.json")]
    if (out / "encoder").exists():
        files.append(("encoder/", "the plane classifier the demo trained on simulated planes (P(·) without "
                                  "SonoNet-16 weights; beside SonoNet-16, for the picks' plane classifier term)"))
    files += [("model/", "the trained model (model.safetensors, model.json, history.csv): what `--model` of score "
                         "and select takes"),
              ("labels.csv", "the pseudo-label of every training frame"),
              ("scores.csv", "the CRL-UIQA score of every held-out frame (path,score), as `crl-uiqa score` writes"),
              ("frames.csv", "every held-out frame: ground truth, probability of the abdominal plane, plane match, "
                             "the plane classifier's probability of it, every method's score"),
              ("results.json", "the tables of this report, the times and CPU seconds of each stage"),
              ("report.html", "this page")]
    return f"In {out}:\n\n" + "\n".join(f"- `{name}`: {what}" for name, what in files)


def _pick_score_text(st: DemoSettings, times: str = "×", detail: bool = False) -> str | None:
    """What the demo picks on when it is not the CRL-UIQA score alone, e.g. "the CRL-UIQA score plus 0.5 × the
    plane match, each standardised over the sweep" (``None``: the score alone); ``detail`` says what each term is.
    The one wording of the pick score for the report and the terminal summary."""
    terms = []
    if st.plane_match:
        terms.append(f"{st.plane_match:g} {times} the plane match"
                     + (" (template matching against the reference planes)" if detail else ""))
    if st.plane_classifier:
        terms.append(f"{st.plane_classifier:g} {times} the logit of the plane classifier's p(abdominal plane)"
                     + (" (a classifier trained on simulated planes, as the fallback encoder is)" if detail else ""))
    if not terms:
        return None
    return "the CRL-UIQA score plus " + " plus ".join(terms) + ", each standardised over the sweep"


def _pick_rule_text(st: DemoSettings) -> str:
    """How the demo picks the best frame of a sweep, in one line (the report's settings table)."""
    rule = f"top score smoothed over ±{st.smooth:g} frames" if st.smooth else "top raw score"
    pick_score = _pick_score_text(st, detail=True)
    if pick_score:
        rule = f"{rule} of {pick_score}"
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


def print_summary(table, picks, encoder, report, total, cpu_total=None, st: DemoSettings | None = None) -> None:
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
    plane_threshold = st.plane_threshold if st is not None else 0.0
    pick_score = _pick_score_text(st, times="x") if st is not None else None
    scored = pick_score or "the CRL-UIQA scores"
    if picks and picks[0]["smooth"]:
        print(f"(picked on {scored}, smoothed over +-{picks[0]['smooth']:g} frames; --smooth 0: the top raw score)")
    elif picks:
        print(f"(picked on {scored})")
    if picks and plane_threshold:
        print(f"(only frames with p(abdominal plane) >= {plane_threshold:g} could be picked: "
              + ", ".join(f"{p['eligible_frames']} of {len(p['_eligible'])}" for p in picks)
              + " per sweep, every frame where none did; --plane-threshold 0 turns the check off)")
    print()
    print(f"report: {report}")
    print(f"done in {total:.0f} s" + (f" ({cpu_total:.0f} CPU seconds)" if cpu_total is not None else ""))
